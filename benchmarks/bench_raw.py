"""Reading camera RAW for indexing (issue 25): seconds per file of `decode_image` on 24-MP DNGs made
from a flickr photo (tests/raw_files.py: 6000x4000 Bayer mosaic, 12 bits, uncompressed, 48 MB),
with a full-size embedded JPEG preview (the common case: CR2, NEF, DNG from cameras) and without
one (a half-size demosaic by LibRaw), against the JPEG itself at 6000x4000.

    python benchmarks/bench_raw.py [--repeat 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from PIL import Image

from tests.raw_files import flickr_photo, make_dng
from xmodal.indexer.images import decode_image
from xmodal.indexer.raw import decode_raw

PHOTO = "172097783_292c5413d8.jpg"
SIZE = (6000, 4000)


def _time(fn, repeat: int) -> float:  # noqa: ANN001
    fn()  # warm: imports, caches
    times = []
    for _ in range(repeat):
        clock = time.perf_counter()
        fn()
        times.append(time.perf_counter() - clock)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    photo = flickr_photo(PHOTO).resize(SIZE, Image.Resampling.BICUBIC)
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        jpeg = root / "IMG.jpg"
        photo.save(jpeg, "JPEG", quality=92)
        with_preview = make_dng(root / "preview.dng", photo, preview=True)
        bare = make_dng(root / "bare.dng", photo)
        assert decode_raw(with_preview.read_bytes(), 224).source == "preview"
        assert decode_raw(bare.read_bytes(), 224).source == "demosaic"
        print(f"24 MP ({SIZE[0]}x{SIZE[1]}), model input 224 px, median of {args.repeat}, one process:")
        for label, path in (("JPEG (draft decode)", jpeg), ("DNG + preview", with_preview), ("DNG, demosaic", bare)):
            seconds = _time(lambda p=path: decode_image(p, 224), args.repeat)
            size_mb = path.stat().st_size / 2**20
            print(f"  {label:22s} {size_mb:6.1f} MB  {seconds * 1000:8.1f} ms/file")


if __name__ == "__main__":
    main()
