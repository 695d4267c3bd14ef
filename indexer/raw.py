"""Camera RAW photos (DNG, CR2, CR3, NEF, ARW, RAF, ORF, RW2, PEF, SRW, …) through LibRaw (rawpy).

A RAW is read for what a viewer shows, not developed with care:
- the camera's embedded preview (a JPEG, sometimes a bitmap) when its short side is at least the
  size the caller needs (the model's input size when indexing: 224 px for the default model; the
  rendition's size for the server's thumbnails and display copies), oriented by the preview's own
  EXIF Orientation, else by the RAW's (LibRaw's `flip`);
- else a half-size demosaic (each 2x2 Bayer block one pixel: no interpolation, about 4x cheaper than
  a full one; a full one for a RAW whose half would be smaller than the size asked), with the
  camera's white balance, which LibRaw orients itself.
The photo's facts are the RAW's: its developed size (upright) and its capture time (EXIF
DateTimeOriginal of TIFF-based RAWs, else the preview's EXIF, else LibRaw's timestamp when it
unpacked the sensor data anyway).

Bounds (`Limits`): the file is read whole (LibRaw reads from memory) up to `max_raw_bytes`; the
sensor size is checked against `max_pixels` from LibRaw's parse of the header, before anything is
unpacked (LibRaw allocates about 4 bytes per sensor pixel for a half-size demosaic); the time spent
is checked against `decode_seconds` between stages. A LibRaw call itself cannot be interrupted: the
pixel and byte caps bound what one call can cost.
"""

from __future__ import annotations

import io
import time
import warnings
from dataclasses import dataclass
from datetime import datetime
from typing import IO, TYPE_CHECKING, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.limits import DEFAULT_LIMITS, Limits

if TYPE_CHECKING:
    import rawpy

__all__ = ["RawPicture", "decode_raw", "read_raw_bytes", "single_threaded_libraw"]

_EXIF_IFD = 0x8769
_DATETIME_ORIGINAL = 36867
_DATETIME = 306
_ORIENTATION = 0x0112
# LibRaw's `flip` (bit 4: transpose, 2: upside down, 1: mirrored) as the EXIF Orientation it came from.
_FLIP_TO_ORIENTATION = {0: 1, 1: 2, 3: 3, 2: 4, 4: 5, 6: 6, 7: 7, 5: 8}
_TIFF_MAGICS = (b"II*\x00", b"MM\x00*", b"IIRO", b"IIRS", b"MMOR", b"IIU\x00")


@dataclass(frozen=True)
class RawPicture:
    """A RAW photo read for viewing: an upright RGB picture whose short side is at least the size
    asked for (when the RAW has that many pixels), and the facts of the RAW itself."""

    image: Image.Image
    width: int  # the developed photo's size, upright
    height: int
    taken_at: datetime | None
    source: Literal["preview", "demosaic"]


def read_raw_bytes(fp: IO[bytes], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """The whole file (LibRaw reads RAWs from memory), refused beyond `limits.max_raw_bytes`."""
    data = fp.read(limits.max_raw_bytes + 1)
    if len(data) > limits.max_raw_bytes:
        mb = limits.max_raw_bytes / 2**20
        raise ImageReadError(f"camera RAW file too large: more than the cap of {mb:g} MB")
    return data


def single_threaded_libraw() -> None:
    """Make LibRaw's OpenMP run on one thread in this process. For decode worker processes only:
    GNU OpenMP deadlocks in a process forked from one that had used it (a server that made RAW
    thumbnails, then forks an indexing run's workers), unless the child stays on one thread; and one
    thread per worker is what the pool wants anyway (the workers are the parallelism)."""
    try:
        import rawpy  # noqa: F401 - loads LibRaw's OpenMP runtime, so that the limit reaches it
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="openmp")


def decode_raw(data: bytes, size: int, limits: Limits = DEFAULT_LIMITS, max_pixels: int | None = None) -> RawPicture:
    """Read a camera RAW (its bytes) for a picture whose short side is at least `size`.

    Raises ImageReadError (TooManyPixelsError beyond the pixel cap) with a one-line reason."""
    import rawpy

    from xmodal.indexer.images import TooManyPixelsError

    cap = limits.max_pixels if max_pixels is None else max_pixels
    clock = time.monotonic()
    raw = rawpy.RawPy()
    try:
        try:
            raw.open_buffer(_Whole(data))  # type: ignore[arg-type]  # a BytesIO.read() would copy it again
        except rawpy.LibRawError as e:  # its header did not parse: unsupported, or too damaged to tell
            raise ImageReadError(f"not a camera RAW LibRaw reads ({_message(e)})") from None
        sizes = raw.sizes
        sensor = int(sizes.raw_width) * int(sizes.raw_height)
        developed = int(sizes.width) * int(sizes.height)
        if max(sensor, developed) > cap:
            w, h = (sizes.raw_width, sizes.raw_height) if sensor >= developed else (sizes.width, sizes.height)
            raise TooManyPixelsError(f"image too large: {w}x{h} pixels exceeds the cap of {cap}")
        if developed == 0:
            raise ImageReadError("camera RAW without an image (0x0 pixels)")
        flip = int(sizes.flip)
        width, height = (int(sizes.height), int(sizes.width)) if flip & 4 else (int(sizes.width), int(sizes.height))
        taken_at = _tiff_taken_at(data)
        preview = _preview(raw, size, cap, flip)
        if preview is not None:
            image, preview_taken = preview
            return RawPicture(image, width, height, taken_at or preview_taken, "preview")
        _check_time(clock, limits, "reading its header and preview")
        raw.unpack()
        _check_time(clock, limits, "unpacking its sensor data")
        half = min(width, height) >= 2 * size  # a RAW too small to halve (a test's, an old camera's) in full
        pixels = raw.postprocess(half_size=half, use_camera_wb=True, output_bps=8)  # oriented by LibRaw
        if taken_at is None:
            taken_at = _libraw_taken_at(raw)
        image = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]))
        return RawPicture(_shrink(image, size), width, height, taken_at, "demosaic")
    except ImageReadError:
        raise
    except rawpy.LibRawTooBigError:
        raise TooManyPixelsError("image too large for LibRaw") from None
    except (rawpy.LibRawUnsufficientMemoryError, rawpy.LibRawMemPoolOverflowError, MemoryError):
        raise ImageReadError("camera RAW too large to decode in memory") from None
    except rawpy.LibRawError as e:
        raise ImageReadError(f"corrupt or truncated camera RAW: {_message(e)}") from None
    finally:
        raw.close()


class _Whole:
    """The file's bytes as the file object rawpy's open_buffer reads once, whole."""

    def __init__(self, data: bytes) -> None:
        self._data = data

    def read(self, size: int = -1) -> bytes:
        return self._data


def _message(error: Exception) -> str:
    text = str(error.args[0] if error.args else error)
    if text.startswith(("b'", 'b"')):  # rawpy passes LibRaw's message as bytes
        text = text[2:-1]
    return text or type(error).__name__


def _check_time(clock: float, limits: Limits, stage: str) -> None:
    spent = time.monotonic() - clock
    if spent > limits.decode_seconds:
        raise ImageReadError(f"camera RAW took {spent:.0f} s {stage}, over the limit of {limits.decode_seconds:g} s")


def _shrink(image: Image.Image, size: int) -> Image.Image:
    """Reduced (never enlarged) while its short side stays at least `size`."""
    short = min(image.size)
    if short > 2 * size:
        scale = size / short
        target = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
        return image.resize(target, Image.Resampling.BICUBIC, reducing_gap=2.0)
    return image


def _oriented(image: Image.Image, orientation: int) -> Image.Image:
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return image.transpose(method) if method is not None else image


def _preview(raw: rawpy.RawPy, size: int, max_pixels: int, flip: int) -> tuple[Image.Image, datetime | None] | None:
    """The embedded preview, upright and reduced, when it is large enough; None otherwise."""
    import rawpy

    try:
        thumb = raw.extract_thumb()
    except rawpy.LibRawError:  # none, an unsupported kind, or a damaged one: the sensor data decides
        return None
    orientation = _FLIP_TO_ORIENTATION.get(flip, 1)
    taken_at = None
    try:
        if thumb.format == rawpy.ThumbFormat.JPEG:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                with Image.open(io.BytesIO(bytes(thumb.data))) as jpeg:
                    if jpeg.format != "JPEG" or jpeg.width * jpeg.height > max_pixels or min(jpeg.size) < size:
                        return None
                    exif = jpeg.getexif()
                    orientation = int(exif.get(_ORIENTATION) or orientation)
                    taken_at = _exif_taken_at(exif)
                    jpeg.draft("RGB", (size, size))
                    image = jpeg.convert("RGB")
                    image.info.clear()  # upright below: no EXIF orientation may be applied again
        else:
            pixels = np.asarray(thumb.data)
            if pixels.ndim != 3 or min(pixels.shape[:2]) < size:
                return None
            if pixels.dtype != np.uint8:
                pixels = (pixels >> 8).astype(np.uint8) if pixels.dtype == np.uint16 else pixels.astype(np.uint8)
            image = Image.fromarray(np.ascontiguousarray(pixels[:, :, :3]))
    except (OSError, SyntaxError, ValueError, EOFError, UnidentifiedImageError, Image.DecompressionBombError):
        return None  # a damaged preview: the sensor data decides
    return _shrink(_oriented(image, orientation), size), taken_at


def _exif_taken_at(exif: Image.Exif) -> datetime | None:
    try:
        raw = exif.get_ifd(_EXIF_IFD).get(_DATETIME_ORIGINAL) or exif.get(_DATETIME)
        if not raw:
            return None
        taken = datetime.strptime(str(raw).strip("\x00 ").strip(), "%Y:%m:%d %H:%M:%S")
    except Exception:  # noqa: BLE001 - a malformed date is no reason to skip the photo
        return None
    # LibRaw gives a preview without EXIF its own, dated 1970-01-01 when the RAW has no date
    return taken if taken.year > 1970 else None


def _tiff_taken_at(data: bytes) -> datetime | None:
    """EXIF DateTimeOriginal of a TIFF-structured RAW (CR2, NEF, DNG, ARW, PEF, ORF, RW2, …): only its
    first directory and EXIF directory are read. None for other RAWs (CR3, RAF, …)."""
    if data[:4] not in _TIFF_MAGICS:
        return None
    header = (b"II*\x00" if data[:2] == b"II" else b"MM\x00*") + data[4:8]  # ORF/RW2: a maker's own magic
    try:
        exif = Image.Exif()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow warns of damaged EXIF: then there is no date
            exif.load(header + data[8:])
        return _exif_taken_at(exif)
    except Exception:  # noqa: BLE001 - unreadable EXIF: no date
        return None


def _libraw_taken_at(raw: rawpy.RawPy) -> datetime | None:
    try:
        stamp = raw.other.timestamp  # LibRaw's local time, already unpacked here
    except Exception:  # noqa: BLE001
        return None
    return None if stamp is None or stamp.timestamp() <= 0 else stamp
