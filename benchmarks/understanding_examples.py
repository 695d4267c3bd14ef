"""Twenty mixed one-box queries over a small index of flickr8k-1k photos whose EXIF (capture date,
GPS of a few cities) this script writes: what the planner understood, the top 3, and what the
planner costs per query (p50 ms of SearchEngine.understand, the index's vocabulary already built).

    python benchmarks/understanding_examples.py [--photos 60] [--work DIR]

The text in photos is not read here (Indexer(read_text=False)): the table is about dates, places and
the visual part; tests/test_one_box.py covers words in photos."""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.facts_photos import FLICKR_IMAGES, Shot, exif_photo  # noqa: E402

TODAY = date(2026, 12, 7)
CITIES = {
    "Lisbon": (38.7110, -9.1366),
    "Tokyo": (35.6595, 139.7005),
    "Paris": (48.8584, 2.2945),
    "Nice": (43.6961, 7.2719),
    "New York": (40.7580, -73.9855),
}
DATES = ["2019:02:01", "2019:07:14", "2022:04:10", "2023:06:10", "2025:07:20", "2026:07:10", "2026:12:06"]
QUERIES = [
    "dog on the beach in Lisbon last summer",
    "a dog running in the snow",
    "children playing in Tokyo 2019",
    "去年夏天在东京的照片",
    "a nice view of the mountains",
    "sunset in Nice",
    "people in New York in winter 2019",
    "a man riding a bike between March and May 2022",
    "2 dogs playing",
    "kids at the park yesterday",
    "巴黎的狗",
    "a girl in a pink dress June 2023",
    "horses in Paris",
    "a climber on a rock face last year",
    "昨天的狗",
    '"dog on the beach in Lisbon" - "snow"',
    "Tokyo 2025",
    "a boat on the water since 2023",
    "2019年的海边",
    "a crowd on a street in Lisbon",
]


def build(work: Path, count: int) -> Path:
    from xmodal.indexer import Indexer

    photos = sorted(p.name for p in FLICKR_IMAGES.glob("*.jpg"))[:count]
    cities = list(CITIES)
    for n, _ in enumerate(photos):
        city = cities[n % len(cities)]
        taken = f"{DATES[(n // len(cities)) % len(DATES)]} 12:00:00"
        exif_photo(work / "photos" / f"p{n:03d}.jpg", Shot(taken=taken, where=CITIES[city]), n, (320, 240))
    Indexer(work / "index", read_text=False).add_paths([work / "photos"])
    return work / "index"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--work", type=Path, default=None)
    args = parser.parse_args()
    from xmodal.search import SearchEngine

    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        index = build(work, args.photos)
        with SearchEngine.open(index) as engine:
            engine.understand("warm up 2019 in Lisbon 东京", today=TODAY)  # vocabulary, dictionary, dateparser
            print("| query | understood | top 3 (file: city, date; matched) |\n|---|---|---|")
            costs = []
            for query in QUERIES:
                for _ in range(5):
                    started = time.perf_counter()
                    understood = engine.understand(query, today=TODAY)
                    costs.append((time.perf_counter() - started) * 1000)
                hits = engine.search(understood, k=3)
                top = []
                for hit in hits:
                    facts = engine.facts(hit.id)
                    where = getattr(facts, "city", None) or "?"
                    when = getattr(facts, "taken_at", None)
                    top.append(f"{Path(hit.path).name}: {where}, {when:%Y-%m-%d} ({'+'.join(hit.matched)})")
                print(f"| {query} | {understood.line()} | {'<br>'.join(top) or 'no hits'} |")
            print(
                f"\nplanner cost per query (understand, {len(costs)} calls): p50 {statistics.median(costs):.2f} ms, "
                f"p90 {statistics.quantiles(costs, n=10)[-1]:.2f} ms"
            )


if __name__ == "__main__":
    main()
