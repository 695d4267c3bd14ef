"""What deciding files by content costs the scan: a folder of photos, and one of files that are
not photos (plainly non-media names, never opened; extensionless files, sniffed by their first
bytes). Prints the best of five scans of each, in milliseconds.

    python benchmarks/bench_scan.py [PHOTO_FOLDER]
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from xmodal.indexer.scanning import scan_paths


def _best_ms(root: Path, repeats: int = 5) -> tuple[float, int]:
    best, items = float("inf"), 0
    for _ in range(repeats):
        clock = time.perf_counter()
        items = sum(1 for _ in scan_paths([root]))
        best = min(best, time.perf_counter() - clock)
    return best * 1000, items


def main() -> None:
    photos = (
        Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[2] / "shared/datasets/flickr8k-1k"
    )
    with tempfile.TemporaryDirectory() as tmp:
        other = Path(tmp)
        for i in range(2000):
            (other / f"notes{i}.txt").write_text("x" * 100)  # by name: never opened
            (other / f"side{i}.xmp").write_text("<x/>")
            (other / f"blob{i}").write_bytes(os.urandom(600))  # no extension: sniffed
        for name, root in (("photos", photos), ("6000 non-photos (2000 sniffed)", other)):
            if root.is_dir():
                ms, items = _best_ms(root)
                print(f"{name}: {items} items found, scan {ms:.1f} ms (best of 5)")


if __name__ == "__main__":
    main()
