"""Decoding: formats, EXIF orientation and date, odd modes, animations, pixel cap, broken files."""

from __future__ import annotations

import struct
import zlib
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import MAX_PIXELS, decode_image


def _exif_jpeg(path: Path, orientation: int, taken: str | None = "2021:07:14 09:30:00") -> Path:
    im = Image.new("RGB", (60, 20), (200, 0, 0))
    im.paste((0, 0, 200), (0, 0, 10, 20))  # a blue stripe on the left edge
    exif = Image.Exif()
    exif[0x0112] = orientation
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    im.save(path, exif=exif.tobytes(), quality=95)
    return path


def test_exif_orientation_is_applied_and_date_read(tmp_path: Path) -> None:
    decoded = decode_image(_exif_jpeg(tmp_path / "rot.jpg", orientation=6))
    assert decoded.image.size == (20, 60)  # rotated 90°: portrait
    assert (decoded.width, decoded.height) == (20, 60)
    top = np.asarray(decoded.image)[2, 10]
    assert top[2] > 150 and top[0] < 80  # the left-edge stripe is now on top
    assert decoded.taken_at == datetime(2021, 7, 14, 9, 30)


def test_no_exif_date_is_none(tmp_path: Path) -> None:
    assert decode_image(_exif_jpeg(tmp_path / "a.jpg", 1, taken=None)).taken_at is None


@pytest.mark.parametrize(
    "mode,fmt",
    [
        ("CMYK", "JPEG"),
        ("I;16", "PNG"),
        ("P", "PNG"),
        ("LA", "PNG"),
        ("RGBA", "PNG"),
        ("L", "TIFF"),
        ("RGB", "BMP"),
        ("RGB", "WEBP"),
    ],
)
def test_odd_modes_become_rgb(tmp_path: Path, mode: str, fmt: str) -> None:
    im = (
        Image.new("RGB", (30, 30), (10, 120, 200)).convert(mode)
        if mode != "I;16"
        else Image.fromarray(np.full((30, 30), 40000, dtype=np.uint16))
    )
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, format=fmt)
    decoded = decode_image(path)
    assert decoded.image.mode == "RGB" and decoded.image.size == (30, 30)


def test_animation_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (20, 20), c) for c in [(250, 0, 0), (0, 0, 250)]]
    path = tmp_path / "anim.gif"
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    pixel = np.asarray(decode_image(path).image)[10, 10]
    assert pixel[0] > 200 and pixel[2] < 60


def test_heif_is_decoded(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")  # a core dependency: under CI=true its absence fails
    path = tmp_path / "x.heic"
    pillow_heif.from_pillow(Image.new("RGB", (32, 32), (0, 200, 0))).save(str(path))  # no Pillow plugin needed
    assert decode_image(path).image.size == (32, 32)


def test_large_photos_are_reduced_but_not_below_the_model_size(tmp_path: Path) -> None:
    jpeg = tmp_path / "big.jpg"
    Image.new("RGB", (4000, 3000), (9, 9, 9)).save(jpeg)
    decoded = decode_image(jpeg, target_size=256)
    assert decoded.image.size == (500, 375)  # JPEG draft mode: decoded at 1/8 scale
    assert (decoded.width, decoded.height) == (4000, 3000)
    png = tmp_path / "big.png"
    Image.new("RGB", (3000, 2000), (9, 9, 9)).save(png)
    assert decode_image(png, target_size=256).image.size == (384, 256)


def _png_header_only(path: Path, width: int, height: int) -> None:
    """A PNG that claims a huge size: the pixel cap must refuse it before decoding."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b"")
    )


@pytest.mark.parametrize(
    "name,content,reason",
    [
        ("empty.jpg", b"", "empty file"),
        ("random.jpg", bytes(range(256)) * 10, "not a recognised image"),
        ("text.png", b"hello, I am text", "not a recognised image"),
    ],
)
def test_unreadable_files_raise_a_reason(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ImageReadError, match=reason):
        decode_image(path)


def test_truncated_jpeg_and_bomb(tmp_path: Path) -> None:
    good = tmp_path / "good.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(ImageReadError, match="truncated"):
        decode_image(truncated)
    bomb = tmp_path / "bomb.png"
    _png_header_only(bomb, 40000, 40000)
    assert 40000 * 40000 > MAX_PIXELS
    with pytest.raises(ImageReadError, match="too large"):
        decode_image(bomb)
