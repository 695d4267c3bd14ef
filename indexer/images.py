"""Decoding photos for embedding: formats, EXIF orientation, pixel cap, draft-mode decode.

Library manners: nothing here changes Pillow's process-wide state. The pixel cap is
`Limits.max_pixels`, checked from the header before any pixel is decoded (Pillow's own
`MAX_IMAGE_PIXELS` is left as it is: it refuses above twice its value, ~179 MP, whatever our cap).
HEIC/HEIF is opened through pillow-heif's `open_heif` when Pillow does not recognise a file and its
content says HEIF: no opener is registered with Pillow, so importing xmodal changes nobody's Pillow
(registering lazily would still change it for the whole process once the first HEIC is met).
Camera RAW (told by content: indexer.kinds.is_camera_raw) is read by LibRaw (indexer.raw): its
embedded preview when large enough, else a half-size demosaic.
"""

from __future__ import annotations

import os
import stat
import warnings
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, cast

from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.kinds import HEADER_BYTES, RAW_EXTENSIONS, is_camera_raw, kind_of_header, unread_reason
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits
from xmodal.indexer.paths import OPEN_NONBLOCK

__all__ = [
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "NO_SUCH_FILE",
    "DecodedImage",
    "TooManyPixelsError",
    "decode_image",
    "open_picture",
    "to_rgb",
]

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".jpe", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)

# Kept for callers that read the cap from here; the setting itself is Limits.max_pixels.
MAX_PIXELS = DEFAULT_LIMITS.max_pixels
NO_SUCH_FILE = "no such file"  # the reason for a path that is not there (callers that saw it may say "vanished")

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306


class TooManyPixelsError(ImageReadError):
    """A picture whose header says it is over the pixel cap: refused before decoding."""


@dataclass(frozen=True)
class DecodedImage:
    """An RGB picture reduced for the model, with facts about the original file."""

    image: Image.Image
    width: int
    height: int
    taken_at: datetime | None


def _taken_at(im: Image.Image) -> datetime | None:
    try:
        exif = im.getexif()
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if not raw:
            return None
        return datetime.strptime(str(raw).strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except Exception:
        return None  # a malformed EXIF date is not a reason to skip the photo


def to_rgb(im: Image.Image) -> Image.Image:
    """Convert any mode (P, LA, RGBA, CMYK, 16-bit, float) to RGB; transparency goes on white."""
    if im.mode == "RGB":
        return im
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        # 16/32-bit greyscale: scale to 8 bits instead of clipping to white.
        im = im.convert("I")
        lo, hi = cast(tuple[float, float], im.getextrema())  # one band: (min, max)
        scale = 255.0 / max(1, hi - lo)
        im = im.point(lambda v: (v - lo) * scale).convert("L")
    elif im.mode == "F":
        lo, hi = cast(tuple[float, float], im.getextrema())
        scale = 255.0 / max(1e-12, hi - lo)
        im = im.point(lambda v: (v - lo) * scale).convert("L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "RGBa", "La", "PA"):
        im = im.convert("RGBA")
        background = Image.new("RGBA", im.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, im).convert("RGB")
    return im.convert("RGB")


def _open_regular(path: Path):  # noqa: ANN202
    """Open without blocking (a FIFO swapped in after the scan would block open()); regular files only."""
    fd = os.open(path, os.O_RDONLY | OPEN_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        st = os.fstat(fd)
        if stat.S_ISDIR(st.st_mode):
            raise IsADirectoryError(path)
        if not stat.S_ISREG(st.st_mode):
            raise ImageReadError("not a regular file (FIFO, socket or device)")
        if st.st_size == 0:
            raise ImageReadError("empty file (0 bytes)")
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


def open_picture(
    fp: IO[bytes],
    max_pixels: int = DEFAULT_LIMITS.max_pixels,
    suffix: str = "",
    *,
    raw_size: int | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> Image.Image:
    """The picture in fp, its decoder chosen by content: Pillow's formats (opened lazily: only the
    header is read), else HEIF through pillow-heif (decoded, after its header passed max_pixels).
    A camera RAW is read (indexer.raw: upright RGB, short side at least raw_size) when raw_size is
    given, else refused with ImageReadError, as video is (suffix: for that reason); anything else
    unknown raises PIL's UnidentifiedImageError."""
    if is_camera_raw(fp):
        if raw_size is None:
            raise ImageReadError("camera RAW is not read here; use a JPEG, PNG or TIFF of it")
        from xmodal.indexer.raw import decode_raw, read_raw_bytes

        return decode_raw(read_raw_bytes(fp, limits), raw_size, limits, max_pixels).image
    start = fp.tell()
    if kind_of_header(fp.read(HEADER_BYTES)) == "video":  # before Pillow: failing one loads all its plugins
        raise ImageReadError(unread_reason("video", suffix))
    fp.seek(start)
    try:
        return Image.open(fp)
    except UnidentifiedImageError:
        fp.seek(0)
        kind = kind_of_header(fp.read(HEADER_BYTES))
        if kind == "heif":
            return _open_heif(fp, max_pixels)
        if kind == "video":
            raise ImageReadError(unread_reason("video", suffix)) from None
        raise


def _open_heif(fp: IO[bytes], max_pixels: int) -> Image.Image:
    try:
        import pillow_heif
    except ImportError:
        raise ImageReadError("HEIC/HEIF needs the pillow-heif package (pip install pillow-heif)") from None
    fp.seek(0)
    heif = pillow_heif.open_heif(fp, convert_hdr_to_8bit=True)
    width, height = heif.size
    if width * height > max_pixels:  # before decoding: the header is all that was read
        raise TooManyPixelsError(f"image too large: {width}x{height} pixels exceeds the cap of {max_pixels}")
    return heif.to_pillow()


def _reduced(im: Image.Image, target_size: int, max_pixels: int) -> tuple[Image.Image, int, int, datetime | None]:
    """(picture upright, RGB, short side near target_size; original width, height; capture time)."""
    width, height = im.size
    if width * height > max_pixels:
        raise TooManyPixelsError(f"image too large: {width}x{height} pixels exceeds the cap of {max_pixels}")
    taken_at = _taken_at(im)
    orientation = im.getexif().get(0x0112, 1)
    if getattr(im, "n_frames", 1) > 1:
        im.seek(0)  # animations: the first frame stands for the file
    if im.format == "JPEG":
        im.draft("RGB", (target_size, target_size))
    im.load()
    reduced = ImageOps.exif_transpose(im) if orientation != 1 else im
    reduced = to_rgb(reduced)
    if orientation in (5, 6, 7, 8):
        width, height = height, width
    short = min(reduced.size)
    if short > 2 * target_size:  # e.g. a large PNG: shrink now, the model resizes exactly
        scale = target_size / short
        size = (max(1, round(reduced.width * scale)), max(1, round(reduced.height * scale)))
        reduced = reduced.resize(size, Image.Resampling.BICUBIC, reducing_gap=2.0)
    elif reduced is im:
        reduced = reduced.copy()
    return reduced, width, height, taken_at


def _decoded_raw(fp: IO[bytes], target_size: int, max_pixels: int, limits: Limits) -> DecodedImage:
    from xmodal.indexer.raw import decode_raw, read_raw_bytes

    raw = decode_raw(read_raw_bytes(fp, limits), target_size, limits, max_pixels)
    return DecodedImage(raw.image, raw.width, raw.height, raw.taken_at)


def decode_image(
    source: Path | str,
    target_size: int = 256,
    max_pixels: int = DEFAULT_LIMITS.max_pixels,
    *,
    limits: Limits = DEFAULT_LIMITS,
) -> DecodedImage:
    """Open a photo, apply its EXIF orientation and reduce it so its short side is near target_size.

    JPEGs use draft mode, so a 12-MP photo is decoded directly at 1/2, 1/4 or 1/8 scale. A picture
    of more than max_pixels (Limits.max_pixels) is refused from its header, before decoding. A
    camera RAW is read by indexer.raw (its preview when at least target_size, else a half-size
    demosaic) within `limits` (file bytes, decode time).
    Raises ImageReadError with a one-line reason for anything that is not a readable image.
    """
    path = Path(source)
    try:
        with warnings.catch_warnings():
            # Pillow warns above its own (lower) limit; ours is checked below, from the header
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with _open_regular(path) as fp:
                if is_camera_raw(fp):
                    return _decoded_raw(fp, target_size, max_pixels, limits)
                try:
                    opened = open_picture(fp, max_pixels, path.suffix.lower())
                except UnidentifiedImageError:
                    if path.suffix.lower() not in RAW_EXTENSIONS:
                        raise
                    # named RAW, no magic anything knows: LibRaw tells some formats by their size alone
                    fp.seek(0)
                    return _decoded_raw(fp, target_size, max_pixels, limits)
                with opened as im:
                    reduced, width, height, taken_at = _reduced(im, target_size, max_pixels)
    except ImageReadError:
        raise
    except FileNotFoundError:
        raise ImageReadError(NO_SUCH_FILE) from None
    except PermissionError:
        raise ImageReadError("permission denied") from None
    except IsADirectoryError:
        raise ImageReadError("is a directory") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageReadError(f"image too large: {e}") from None
    except UnidentifiedImageError:
        raise ImageReadError("not a recognised image format") from None
    except OSError as e:
        if e.errno:  # the file system refused (ELOOP, EIO, ...), not the decoder
            raise ImageReadError(f"cannot read: {e.strerror or e}") from None
        raise ImageReadError(f"corrupt or truncated image: {e}") from None
    except (SyntaxError, ValueError, EOFError, MemoryError, RuntimeError) as e:
        raise ImageReadError(f"corrupt or truncated image: {e}") from None
    return DecodedImage(reduced, width, height, taken_at)
