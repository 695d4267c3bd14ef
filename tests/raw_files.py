"""Camera RAW files for tests, made at run time from real photos: a DNG (written by pidng) holding the
Bayer mosaic (RGGB, 12 bits, linear light) of a photo, which LibRaw then demosaics; optionally with
an embedded JPEG preview (a second directory, as cameras' DNGs carry one) and an EXIF orientation.

The sensor data is the photo in linear sRGB; the colour matrix is XYZ (D65) → linear sRGB and the
camera's neutral is (1, 1, 1), so LibRaw's development gives back the photo (brighter: its auto-bright).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["FLICKR", "flickr_photo", "mosaic", "write_dng", "make_dng"]

FLICKR = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k"
if not FLICKR.is_dir():
    FLICKR = Path("/work/shared/datasets/flickr8k-1k")

_XYZ_TO_SRGB = [[3.2406, -1.5372, -0.4986], [-0.9689, 1.8758, 0.0415], [0.0557, -0.2040, 1.0570]]
_WHITE = 4095  # 12-bit sensor values


def flickr_photo(name: str) -> Image.Image:
    with Image.open(FLICKR / "images" / name) as im:
        return im.convert("RGB")


def mosaic(photo: Image.Image) -> np.ndarray:
    """The RGGB Bayer mosaic (uint16, 12 bits, linear light) a sensor would record of the photo."""
    srgb = np.asarray(photo.convert("RGB"), dtype=np.float64) / 255.0
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    h, w = (linear.shape[0] // 2) * 2, (linear.shape[1] // 2) * 2
    linear = linear[:h, :w]
    bayer = np.empty((h, w))
    bayer[0::2, 0::2] = linear[0::2, 0::2, 0]
    bayer[0::2, 1::2] = linear[0::2, 1::2, 1]
    bayer[1::2, 0::2] = linear[1::2, 0::2, 1]
    bayer[1::2, 1::2] = linear[1::2, 1::2, 2]
    return (bayer * _WHITE).round().astype(np.uint16)


def _tags(height: int, width: int, orientation: int, taken: str | None):  # noqa: ANN202 - pidng's DNGTags
    from pidng.core import DNGTags, Tag
    from pidng.defs import CalibrationIlluminant, CFAPattern, DNGVersion, PhotometricInterpretation

    t = DNGTags()
    t.set(Tag.ImageWidth, width)
    t.set(Tag.ImageLength, height)
    t.set(Tag.TileWidth, width)
    t.set(Tag.TileLength, height)
    t.set(Tag.Orientation, orientation)
    t.set(Tag.PhotometricInterpretation, PhotometricInterpretation.Color_Filter_Array)
    t.set(Tag.SamplesPerPixel, 1)
    t.set(Tag.BitsPerSample, 16)
    t.set(Tag.CFARepeatPatternDim, [2, 2])
    t.set(Tag.CFAPattern, CFAPattern.RGGB)
    t.set(Tag.BlackLevel, 0)
    t.set(Tag.WhiteLevel, _WHITE)
    t.set(Tag.ColorMatrix1, [[round(v * 10000), 10000] for row in _XYZ_TO_SRGB for v in row])
    t.set(Tag.CalibrationIlluminant1, CalibrationIlluminant.D65)
    t.set(Tag.AsShotNeutral, [[1, 1], [1, 1], [1, 1]])
    t.set(Tag.BaselineExposure, [[0, 1]])
    t.set(Tag.Make, "xmodal")
    t.set(Tag.Model, "test sensor")
    t.set(Tag.UniqueCameraModel, "xmodal test sensor")
    t.set(Tag.DNGVersion, DNGVersion.V1_4)
    t.set(Tag.DNGBackwardVersion, DNGVersion.V1_0)
    if taken is not None:
        t.set(Tag.DateTime, taken)
    return t


def write_dng(
    raw: np.ndarray, orientation: int = 1, preview: Image.Image | None = None, taken: str | None = None
) -> bytes:
    """A DNG of the mosaic `raw` (its first directory), with `preview` as a JPEG in a second one."""
    from pidng.core import Tag
    from pidng.dng import DNG, dngIFD, dngTag

    height, width = raw.shape
    dng = DNG()
    dng.ImageDataStrips.append(raw.tobytes())
    main = dngIFD()
    tile_offsets = dngTag(Tag.TileOffsets, [0])
    main.tags += [
        tile_offsets,
        dngTag(Tag.NewSubfileType, [0]),
        dngTag(Tag.TileByteCounts, [raw.nbytes]),
        dngTag(Tag.Compression, [1]),
    ]
    main.tags += _tags(height, width, orientation, taken).list()
    dng.IFDs.append(main)
    strip_offsets = None
    if preview is not None:
        out = io.BytesIO()
        preview.convert("RGB").save(out, "JPEG", quality=90)
        jpeg = out.getvalue()
        dng.ImageDataStrips.append(jpeg)
        second = dngIFD()
        strip_offsets = dngTag(Tag.StripOffsets, [0])
        second.tags += [
            dngTag(Tag.NewSubfileType, [1]),
            dngTag(Tag.ImageWidth, [preview.width]),
            dngTag(Tag.ImageLength, [preview.height]),
            dngTag(Tag.BitsPerSample, [8, 8, 8]),
            dngTag(Tag.Compression, [7]),
            dngTag(Tag.PhotometricInterpretation, [6]),
            dngTag(Tag.SamplesPerPixel, [3]),
            dngTag(Tag.RowsPerStrip, [preview.height]),
            strip_offsets,
            dngTag(Tag.StripByteCounts, [len(jpeg)]),
        ]
        dng.IFDs.append(second)
    buffer = bytearray(dng.dataLen())
    tile_offsets.setValue([dng.StripOffsets[0]])
    if strip_offsets is not None:
        strip_offsets.setValue([dng.StripOffsets[1]])
    dng.setBuffer(buffer)
    if preview is not None:
        main.NextIFDOffset = dng.IFDs[1].offset
    dng.write()
    return bytes(buffer)


def make_dng(
    path: Path,
    photo: Image.Image,
    orientation: int = 1,
    preview: bool | tuple[int, int] = False,
    taken: str | None = None,
) -> Path:
    """A DNG at path of `photo` as it would be shot: for orientation 6 (or 8) the sensor held it turned
    a quarter (the file says to turn it back); `preview`: embed the photo as stored on the sensor,
    at its size (True) or reduced to fit a (width, height) box."""
    stored = {
        6: photo.transpose(Image.Transpose.ROTATE_90),
        8: photo.transpose(Image.Transpose.ROTATE_270),
        3: photo.transpose(Image.Transpose.ROTATE_180),
    }.get(orientation, photo)
    shown = None
    if preview:
        shown = stored.copy()
        if isinstance(preview, tuple):
            shown.thumbnail(preview)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(write_dng(mosaic(stored), orientation, shown, taken))
    return path
