"""Facts benchmark: what reading a photo's facts costs, and what the library's browsing reads cost.

    python3 -m benchmarks.bench_facts [--photos 200] [--rows 100000] [--json]   (from the repo: uses tests/)

1. `--photos` JPEGs made from flickr8k-1k photos (their full size) with EXIF dates, offsets, a camera
   and GPS near one of 12 cities (half of them without GPS), in a temporary folder: the first
   gazetteer load, then `read_facts` per photo (p50/p95 ms, with and without GPS; the header only).
2. A SQLite index with `--rows` synthetic facts rows (dates over ten years, 60% placed in 12 cities):
   `known_places` (uncached), the first `timeline` page (6 months × 8 ids) and the place filter's
   `allowed_ids` (p50 ms of 20 calls each).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from tests.facts_photos import Shot, exif_photo
from xmodal.indexer.facts import FACTS_VERSION, read_facts
from xmodal.indexer.places import gazetteer
from xmodal.indexer.store.schema import FactsRow, ImageRow, MetadataStore
from xmodal.search.filters import SearchFilter
from xmodal.search.library import known_places, timeline

CITIES = [
    ((38.7110, -9.1366), "Lisbon", "Lisbon", "Portugal"),
    ((35.6595, 139.7005), "Tokyo", "Tokyo", "Japan"),
    ((48.8584, 2.2945), "Paris", "Île-de-France", "France"),
    ((-33.8568, 151.2153), "Sydney", "New South Wales", "Australia"),
    ((41.1496, -8.6109), "Porto", "Porto", "Portugal"),
    ((40.7580, -73.9855), "New York City", "New York", "United States"),
    ((51.5007, -0.1246), "London", "England", "United Kingdom"),
    ((52.5200, 13.4050), "Berlin", "State of Berlin", "Germany"),
    ((41.8902, 12.4922), "Rome", "Lazio", "Italy"),
    ((37.5665, 126.9780), "Seoul", "Seoul", "Korea, Republic of"),
    ((39.9042, 116.4074), "Beijing", "Beijing", "China"),
    ((-22.9068, -43.1729), "Rio de Janeiro", "Rio de Janeiro", "Brazil"),
]


def _ms(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {
        "p50_ms": round(statistics.median(ordered) * 1000, 3),
        "p95_ms": round(ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))] * 1000, 3),
    }


def bench_reading(photos: int, folder: Path) -> dict[str, object]:
    rng = random.Random(7)
    paths = []
    for i in range(photos):
        (lat, lon), *_ = CITIES[i % len(CITIES)]
        where = (lat + rng.uniform(-0.02, 0.02), lon + rng.uniform(-0.02, 0.02)) if i % 2 == 0 else None
        shot = Shot(f"20{10 + i % 15}:0{1 + i % 9}:1{i % 10} 12:00:00", "+01:00", where, "Canon", "Canon EOS R6")
        paths.append((exif_photo(folder / f"p{i:04d}.jpg", shot, source=i, size=(640, 640)), where is not None))
    clock = time.perf_counter()
    gazetteer()
    load = time.perf_counter() - clock
    with_gps, without = [], []
    for path, placed in paths:
        clock = time.perf_counter()
        facts = read_facts(path)
        (with_gps if placed else without).append(time.perf_counter() - clock)
        assert (facts.city is not None) == placed and facts.taken_source == "exif"
    return {"gazetteer_load_s": round(load, 3), "with_gps": _ms(with_gps), "without_gps": _ms(without)}


def bench_browsing(rows: int, folder: Path) -> dict[str, object]:
    store = MetadataStore.connect(f"sqlite:///{folder / 'facts.db'}")
    rng = random.Random(11)
    start = datetime(2016, 1, 1)
    with store.session() as s, s.begin():
        batch = []
        for i in range(1, rows + 1):
            placed = CITIES[rng.randrange(len(CITIES))] if rng.random() < 0.6 else None
            batch.append(
                {
                    "image_id": i,
                    "version": FACTS_VERSION,
                    "taken_at": start + timedelta(seconds=rng.randrange(10 * 365 * 86400)),
                    "taken_offset": 60,
                    "taken_source": "exif",
                    "city": placed[1] if placed else None,
                    "region": placed[2] if placed else None,
                    "country": placed[3] if placed else None,
                    "words": f"folder{i % 50} img {i}",
                }
            )
        s.execute(insert(FactsRow), batch)
        s.execute(
            insert(ImageRow),
            [
                dict(path=f"/synthetic/{i}.jpg", size=1, mtime_ns=1, content_hash="", width=1, height=1, model="-")
                | dict(indexed_at=start, vector=b"")
                for i in range(1, rows + 1)
            ],
        )
    timings: dict[str, list[float]] = {"known_places": [], "timeline_first_page": [], "place_filter": []}
    for _ in range(20):
        with store.session() as s:
            clock = time.perf_counter()
            known_places(s)
            timings["known_places"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            timeline(s, None, 6, 8)
            timings["timeline_first_page"].append(time.perf_counter() - clock)
            clock = time.perf_counter()
            ids = SearchFilter(place="portugal").allowed_ids(s, "image")
            timings["place_filter"].append(time.perf_counter() - clock)
    store.close()
    return {"rows": rows, "place_filter_ids": int(len(ids)), **{k: _ms(v) for k, v in timings.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=200)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = {
            "reading": bench_reading(args.photos, Path(tmp) / "photos"),
            "browsing": bench_browsing(args.rows, Path(tmp)),
        }
    print(json.dumps(result, indent=None if args.json else 2))


if __name__ == "__main__":
    main()
