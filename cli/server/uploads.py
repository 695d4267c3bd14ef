"""Pictures sent by clients: sniffed by Pillow, pixel-capped from the header, EXIF-oriented."""

from __future__ import annotations

import io
import warnings

from fastapi import HTTPException
from PIL import Image, ImageOps, UnidentifiedImageError

from xmodal.indexer.images import MAX_PIXELS, to_rgb

__all__ = ["read_upload"]

_MODEL_SIZE = 448  # JPEG draft decoding stops at the first scale at least this large


def read_upload(data: bytes, field: str = "image") -> Image.Image:
    """An RGB picture from uploaded bytes; 415 when Pillow does not recognise them as an image
    (whatever the file name or Content-Type say), 413 over the indexing pixel cap, 422 when corrupt."""
    if not data:
        raise HTTPException(422, f"{field}: the uploaded file is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                width, height = im.size  # from the header: nothing is decoded yet
                if width * height > MAX_PIXELS:
                    raise HTTPException(413, f"{field}: {width}x{height} pixels exceeds the cap of {MAX_PIXELS} pixels")
                if getattr(im, "n_frames", 1) > 1:
                    im.seek(0)
                if im.format == "JPEG":
                    im.draft("RGB", (_MODEL_SIZE, _MODEL_SIZE))
                im.load()
                picture = to_rgb(ImageOps.exif_transpose(im) or im)
                return picture.copy() if picture is im else picture
    except HTTPException:
        raise
    except UnidentifiedImageError:
        raise HTTPException(
            415, f"{field}: not an image (JPEG, PNG, WebP, GIF, BMP, TIFF, HEIC, AVIF are read)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise HTTPException(413, f"{field}: image too large: {e}") from None
    except (OSError, SyntaxError, ValueError, EOFError, MemoryError) as e:
        raise HTTPException(422, f"{field}: corrupt or truncated image: {e}") from None
