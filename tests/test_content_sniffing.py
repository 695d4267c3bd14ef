"""Files are decided by content, not by name (indexer.kinds), and images.py keeps its manners: no
Pillow globals changed, the pixel cap from `Limits.max_pixels` checked from the header, HEIF read
without registering an opener, "no such file" for a path that never existed."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from PIL import Image, TiffImagePlugin

from tests.conftest import make_image
from tests.fakes import COLOURS, fake_model
from xmodal.indexer import Indexer
from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import decode_image
from xmodal.indexer.kinds import kind_of_header
from xmodal.indexer.scanning import FoundFile, SkippedFile, scan_paths
from xmodal.indexer.store.index_store import IndexStore


def _scan(root: Path) -> dict[str, FoundFile | SkippedFile]:
    return {item.path.name: item for item in scan_paths([root])}


def _raw_like_tiff(path: Path) -> Path:
    """A TIFF whose first directory is a thumbnail (NewSubfileType 1), as in a NEF or an ARW."""
    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[254] = 1
    Image.new("RGB", (40, 30), COLOURS["red"]).save(path, format="TIFF", tiffinfo=tags)
    return path


def _mp4_header(path: Path) -> Path:
    path.write_bytes(b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom" + b"\x00" * 200)
    return path


def test_kinds_by_their_first_bytes(tmp_path: Path) -> None:
    jpeg = make_image(tmp_path / "a.jpg", COLOURS["red"]).read_bytes()[:64]
    assert kind_of_header(jpeg) == "picture"
    assert kind_of_header(b"II*\x00\x08\x00\x00\x00CR\x02\x00") == "raw"  # Canon CR2
    assert kind_of_header(b"\x00\x00\x00\x1cftypheic") == "heif"
    assert kind_of_header(b"\x00\x00\x00\x18ftypcrx ") == "raw"  # Canon CR3
    assert kind_of_header(b"\x00\x00\x00\x18ftypqt  ") == "video"
    assert kind_of_header(b"\x1a\x45\xdf\xa3\x01") == "video"  # Matroska / WebM
    assert kind_of_header(b"hello, world") is None
    assert kind_of_header(b"BMW service notes, 2024") is None
    bmp = make_image(tmp_path / "a.bmp", COLOURS["red"]).read_bytes()[:64]
    assert kind_of_header(bmp) == "picture"


def test_the_scan_decides_by_content_where_the_name_lies(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "tiff-inside.NEF", COLOURS["green"], fmt="TIFF")  # a TIFF named like a RAW
    _raw_like_tiff(root / "real.nef")
    make_image(root / "no-extension", COLOURS["blue"], fmt="JPEG")
    make_image(root / "odd.data", COLOURS["yellow"], fmt="PNG")
    _mp4_header(root / "clip.dat")
    _mp4_header(root / "clip.mp4")
    make_image(root / "notes.txt", COLOURS["red"], fmt="JPEG")  # plainly not media by name: never opened
    (root / "readme").write_text("just text")
    found = _scan(root)
    photos = {n for n, i in found.items() if isinstance(i, FoundFile) and i.media == "photo"}
    assert photos == {"tiff-inside.NEF", "real.nef", "no-extension", "odd.data"}  # RAW is read (issue 25)
    videos = {n for n, i in found.items() if isinstance(i, FoundFile) and i.media == "video"}
    assert videos == {"clip.dat", "clip.mp4"}  # found as videos by content; the run decides if it reads them
    assert not any(isinstance(i, SkippedFile) for i in found.values())


def test_an_index_run_reads_pictures_by_content_and_reports_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    make_image(root / "tiff-inside.NEF", COLOURS["green"], fmt="TIFF")
    make_image(root / "IMG_0001", COLOURS["blue"], fmt="JPEG")
    (root / "fake.jpg").write_bytes(b"this is no picture at all")
    _mp4_header(root / "video-named.jpg")  # a .jpg that is a video is a video (this one's decoder says why not)
    _raw_like_tiff(root / "raw-named.jpg")
    summary = Indexer(tmp_path / "idx", model=fake_model(), workers=1).add_paths([root])
    assert summary.new == 2
    reasons = dict(summary.failures)
    assert reasons.pop(str(root / "video-named.jpg")).startswith("not a video the decoder reads: ")
    assert reasons == {  # a RAW by content goes to LibRaw, which finds no sensor data in this one
        str(root / "fake.jpg"): "not a recognised image format",
        str(root / "raw-named.jpg"): "not a camera RAW LibRaw reads (Unsupported file format or not RAW file)",
    }
    assert summary.skipped == {}
    store = IndexStore.open(tmp_path / "idx")
    try:
        recorded = {Path(f.path).name: f.reason for f in store.metadata.failures()}
    finally:
        store.close()
    assert "video" in recorded["video-named.jpg"] and "camera RAW" in recorded["raw-named.jpg"]


def _png_header_only(path: Path, width: int, height: int) -> Path:
    """A PNG that announces width x height and holds (almost) nothing: a decompression bomb's header."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")
    )
    return path


def test_the_pixel_cap_is_checked_from_the_header(tmp_path: Path) -> None:
    # 132 MP: over the default cap of 120 MP, under what Pillow itself refuses (~179 MP)
    with pytest.raises(ImageReadError, match="too large: 12000x11000"):
        decode_image(_png_header_only(tmp_path / "bomb.png", 12_000, 11_000))
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(_png_header_only(tmp_path / "huge.png", 100_000, 100_000))
    small = make_image(tmp_path / "small.png", COLOURS["red"], size=(64, 48))
    with pytest.raises(ImageReadError, match="exceeds the cap of 1000"):
        decode_image(small, max_pixels=1000)  # Limits.max_pixels, passed down
    assert decode_image(small).width == 64


def test_a_path_that_never_existed_is_no_such_file(tmp_path: Path) -> None:
    with pytest.raises(ImageReadError, match="^no such file$"):
        decode_image(tmp_path / "never.jpg")


def test_heic_is_read_without_registering_an_opener(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    path = tmp_path / "photo.heic"
    pillow_heif.from_pillow(Image.new("RGB", (64, 48), COLOURS["green"])).save(path, quality=90)
    decoded = decode_image(path)
    assert (decoded.width, decoded.height) == (64, 48)
    assert "HEIF" not in Image.OPEN


def test_importing_the_decoders_changes_no_pillow_globals() -> None:
    code = (
        "from PIL import Image, ImageFile\n"
        "before = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, sorted(Image.OPEN))\n"
        "import xmodal.indexer.images, xmodal.indexer.indexing, xmodal.indexer.scanning\n"
        "after = (Image.MAX_IMAGE_PIXELS, ImageFile.LOAD_TRUNCATED_IMAGES, sorted(Image.OPEN))\n"
        "assert before == after, (before, after)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
