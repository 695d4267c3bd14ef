"""Pictures the server decodes (uploads, thumbnails, display renditions): few at a time, downscaled
while decoding, and refused from their header before a pixel is decoded when they are too large.

A 372 KB PNG can hold 120 MP, which costs hundreds of MB decoded; a request may carry 32 of them. So:
- every decode runs in one of `Limits.concurrent_decodes` threads kept for decoding (a request waiting
  for one holds only its compressed bytes). Threads of their own, not a semaphore in the request
  threads: the C allocator keeps what a thread freed for that thread's next use, so full-size
  pictures decoded by 40 request threads in turn would leave 40 decodes' worth of memory held;
- one picture over `Limits.max_pixels` is refused from its header (413, quoting our cap);
- the pixels a request will decode, all its pictures together, are added up from the headers first
  and the request is refused (413) when they exceed `Limits.max_pixels_per_request`;
- JPEGs decode at 1/2 … 1/8 scale (draft mode); other formats are reduced by an integer factor in
  their own mode right after decoding, before any conversion or rotation copies them.
Pillow's own pixel limit (a process-wide setting) is neither set nor relied on.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import io
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import IO, TypeVar

from fastapi import HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.indexer.errors import ImageReadError
from xmodal.indexer.images import TooManyPixelsError, open_picture, to_rgb
from xmodal.indexer.limits import Limits

__all__ = ["QUERY_SIZE", "Decoder", "Upload", "read_uploads", "reduced_picture", "header_pixels"]

QUERY_SIZE = 448  # a query picture is decoded with its short side at least this (the towers read 224-448)
_FORMATS = "JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF"
T = TypeVar("T")


def _megapixels(pixels: int) -> str:
    return f"{pixels / 1e6:g} MP"


def _glibc_trim() -> Callable[[], object] | None:
    """glibc's malloc_trim: hands the pages a decode freed back to the system (glibc keeps them in
    the thread's arena otherwise: 8 uploads of 120 MP left +537 MB held). None on other C libraries."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        trim = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6").malloc_trim
    except (OSError, AttributeError):  # musl and others have no malloc_trim
        return None
    trim.argtypes = [ctypes.c_size_t]
    return lambda: trim(0)


class Decoder:
    """The server's decoding threads: at most `limit` pictures decoded at once, uploads and
    thumbnails alike; a caller waits for a free thread."""

    def __init__(self, limit: int) -> None:
        self._pool = ThreadPoolExecutor(max(1, limit), thread_name_prefix="xmodal-decode")
        self._trim = _glibc_trim()

    def run(self, function: Callable[..., T], *args: object) -> T:
        """function(*args) in a decoding thread, once one is free; its result or its exception."""
        return self._pool.submit(self._decode, function, *args).result()

    def _decode(self, function: Callable[..., T], *args: object) -> T:
        try:
            return function(*args)
        finally:
            if self._trim is not None:
                self._trim()  # ~1 ms; a decode takes tens to hundreds

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


@dataclass(frozen=True)
class Upload:
    """An uploaded file's bytes and the form field it came in (for error messages)."""

    field: str
    data: bytes


@contextmanager
def _opened(source: IO[bytes], field: str, limits: Limits, raw_size: int | None = None) -> Iterator[Image.Image]:
    """The picture opened (header read, nothing decoded), refused when over the pixel cap; a camera
    RAW is read (its preview, or a half-size demosaic) when raw_size is given, refused otherwise.
    Pillow's errors become HTTP errors: 415 not a picture, 413 too large, 422 corrupt."""
    try:
        with warnings.catch_warnings():
            # Our cap is checked below; Pillow's warning threshold (a process-wide setting) is not ours.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # by content: Pillow's formats, HEIF, and camera RAW for renditions of indexed photos
            with open_picture(source, limits.max_pixels, raw_size=raw_size, limits=limits) as im:
                width, height = im.size
                if width * height > limits.max_pixels:
                    raise HTTPException(
                        413,
                        f"{field}: {width}x{height} pixels exceeds the cap of {_megapixels(limits.max_pixels)}",
                    )
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)  # animations: the first frame stands for the file
                yield im
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise HTTPException(415, f"{field}: not an image ({_FORMATS} are read)") from None
    except TooManyPixelsError:
        raise HTTPException(
            413, f"{field}: the picture has more pixels than the cap of {_megapixels(limits.max_pixels)}"
        ) from None
    except ImageReadError as e:  # a RAW upload, a video, a RAW LibRaw cannot read
        raise HTTPException(415, f"{field}: {e}") from None
    except Image.DecompressionBombError:
        # Pillow refuses even to open it: far beyond our own cap.
        raise HTTPException(
            413, f"{field}: the picture has more pixels than the cap of {_megapixels(limits.max_pixels)}"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise HTTPException(422, f"{field}: corrupt or truncated image: {e}") from None


def _decoded_size(im: Image.Image, size: int) -> tuple[int, int]:
    """What decoding will produce: JPEGs at the draft scale that keeps the short side >= size."""
    if im.format == "JPEG":
        im.draft("RGB", (size, size))  # configures the decoder only; nothing is decoded yet
    return im.size


def header_pixels(upload: Upload, limits: Limits, size: int) -> int:
    """Pixels decoding this upload will produce, read from its header (413/415/422 as `reduced_picture`)."""
    if not upload.data:
        raise HTTPException(422, f"{upload.field}: the uploaded file is empty")
    with _opened(io.BytesIO(upload.data), upload.field, limits) as im:
        width, height = _decoded_size(im, size)
    return width * height


def reduced_picture(source: IO[bytes], field: str, limits: Limits, size: int) -> Image.Image:
    """An RGB picture, EXIF orientation applied, whose short side is near `size` (at least `size`
    when the original is larger; never upscaled). Run it through the server's `Decoder`. A camera
    RAW is read here (indexed photos' renditions); uploads are refused before, by `header_pixels`."""
    with _opened(source, field, limits, raw_size=size) as im:
        try:
            _decoded_size(im, size)
            im.load()
            picture: Image.Image = im
            factor = min(im.size) // size
            if factor >= 2:
                try:  # in the file's own mode, before conversion and rotation copy it
                    picture = im.reduce(factor)
                except ValueError:  # a mode reduce() does not take (palette, 1-bit, 16-bit): converted first
                    picture = to_rgb(im).reduce(factor)
            picture = to_rgb(ImageOps.exif_transpose(picture) or picture)
            return picture.copy() if picture is im else picture
        except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
            raise HTTPException(422, f"{field}: corrupt or truncated image: {e}") from None


def read_uploads(uploads: Sequence[Upload], limits: Limits, decoder: Decoder, size: int) -> list[Image.Image]:
    """The uploaded pictures decoded for the model, or an HTTP error before any is decoded when one
    is not a picture or too large, or when together they would decode to more than the request's
    pixel budget."""
    total = 0
    for upload in uploads:
        total += header_pixels(upload, limits, size)
        if total > limits.max_pixels_per_request:
            raise HTTPException(
                413,
                f"{upload.field}: the pictures of this request decode to more than "
                f"{_megapixels(limits.max_pixels_per_request)} together; send fewer or smaller ones",
            )
    return [decoder.run(reduced_picture, io.BytesIO(u.data), u.field, limits, size) for u in uploads]
