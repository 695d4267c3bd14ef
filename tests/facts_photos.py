"""Photos with EXIF facts, made at run time: a real photo's content (flickr8k-1k, or a flat colour
where the data set is absent) saved by Pillow with a capture date, its UTC offset, GPS and camera."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from PIL import Image

__all__ = ["CITIES", "FLICKR_IMAGES", "Shot", "exif_photo"]

FLICKR_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "flickr8k-1k" / "images"
if not FLICKR_IMAGES.is_dir():
    FLICKR_IMAGES = Path("/work/shared/datasets/flickr8k-1k/images")

# Real places (latitude, longitude) and the names the gazetteer gives them.
CITIES = {
    "Lisbon": ((38.7110, -9.1366), "Lisbon", "Portugal"),
    "Tokyo": ((35.6595, 139.7005), "Tokyo", "Japan"),
    "Paris": ((48.8584, 2.2945), "Île-de-France", "France"),
    "Sydney": ((-33.8568, 151.2153), "New South Wales", "Australia"),
    "Porto": ((41.1496, -8.6109), "Porto", "Portugal"),
}


@dataclass(frozen=True)
class Shot:
    taken: str | None = None  # EXIF "YYYY:MM:DD HH:MM:SS"
    offset: str | None = None  # "+01:00"
    where: tuple[float, float] | None = None
    make: str | None = None
    model: str | None = None


def _rational(value: float) -> tuple[Fraction, Fraction, Fraction]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = (value - degrees - minutes / 60) * 3600
    return Fraction(degrees), Fraction(minutes), Fraction(seconds).limit_denominator(10_000)


def exif_photo(path: Path, shot: Shot, source: int = 0, size: tuple[int, int] = (96, 72)) -> Path:
    """Save a JPEG at `path` with the shot's EXIF; its pixels from the `source`-th flickr photo."""
    photos = sorted(FLICKR_IMAGES.glob("*.jpg")) if FLICKR_IMAGES.is_dir() else []
    if photos:
        with Image.open(photos[source % len(photos)]) as im:
            picture = im.convert("RGB")
            picture.thumbnail(size)
    else:
        picture = Image.new("RGB", size, ((source * 53) % 256, (source * 97) % 256, (source * 31) % 256))
    exif = Image.Exif()
    if shot.make:
        exif[271] = shot.make
    if shot.model:
        exif[272] = shot.model
    sub: dict[int, object] = {}
    if shot.taken:
        sub[36867] = shot.taken
    if shot.offset:
        sub[36881] = shot.offset
    if sub:
        exif[0x8769] = sub
    if shot.where:
        lat, lon = shot.where
        exif[0x8825] = {
            1: "N" if lat >= 0 else "S",
            2: _rational(lat),
            3: "E" if lon >= 0 else "W",
            4: _rational(lon),
        }
    path.parent.mkdir(parents=True, exist_ok=True)
    picture.save(path, format="JPEG", exif=exif, quality=85)
    return path
