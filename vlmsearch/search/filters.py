"""Search by when, where and which: :class:`Filter`, checked once.

Every field is optional; a photo matches when it matches every field given:

* ``after`` / ``before``: taken on or after / on or before this day, month or year (both ends
  inclusive: ``after="2023-07", before="2023-08"`` is July and August 2023), or an exact
  moment (``2023-07-14T18:00``). Dates are the photo's own local time (see
  :mod:`vlmsearch.photo_meta`); photos without a date never match a date filter;
* ``folders``: files under any of these folders;
* ``camera``: a substring of the camera's make and model, in any case ("fuji", "EOS R5");
* ``place``: a city, metro, county, region or country name, or a country code, in any case and
  with accents ignored ("Paris", "lisboa", "Île-de-France", "PT"); "Paris, France" needs both;
* ``near``: (latitude, longitude, km): within that distance of a point;
* ``types``: file extensions (``jpg`` also matches ``.jpeg``, ``tif`` ``.tiff``, ``heic``
  ``.heif``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from ..errors import UsageError
from ..places import fold
from ..sources import absolute

DEFAULT_NEAR_KM = 10.0
_ALIASES = [{".jpg", ".jpeg", ".jpe", ".jfif"}, {".tif", ".tiff"}, {".heic", ".heif"}]
_DATE = re.compile(r"^\s*(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?\s*$")
SORTS = ("score", "date", "-date")


@dataclass(frozen=True)
class Filter:
    """See the module docstring. Strings are accepted where the command line and the HTTP API
    give them (``near="48.85,2.29,5"``); :meth:`checked` turns everything into the forms the
    searcher uses and raises :class:`UsageError` for values that cannot work."""

    after: date | datetime | str | None = None
    before: date | datetime | str | None = None
    folders: Sequence[str | os.PathLike[str]] = ()
    camera: str | None = None
    place: str | None = None
    near: tuple[float, float] | tuple[float, float, float] | str | None = None
    types: Sequence[str] = ()

    def checked(self) -> CheckedFilter:
        lo = _bound(self.after, "--after", end=False)
        hi = _bound(self.before, "--before", end=True)
        if lo is not None and hi is not None and lo > hi:
            raise UsageError(f"--after {self.after} is later than --before {self.before}; "
                             "swap them")
        camera = (self.camera or "").strip().casefold() or None
        place = tuple(part for part in (fold(p) for p in (self.place or "").split(",")) if part)
        return CheckedFilter(
            after_ts=lo, before_ts=hi, folders=tuple(absolute(f) for f in self.folders),
            camera=camera, place=place, near=_near(self.near), types=_types(self.types))

    @property
    def empty(self) -> bool:
        return not (self.after or self.before or self.folders or self.camera or self.place
                    or self.near or self.types)


@dataclass(frozen=True)
class CheckedFilter:
    """A :class:`Filter` in the searcher's terms: time bounds as photo-local seconds (see
    :mod:`vlmsearch.photo_meta`), absolute folders, folded place names, extension sets."""

    after_ts: float | None = None
    before_ts: float | None = None
    folders: tuple[str, ...] = ()
    camera: str | None = None
    place: tuple[str, ...] = ()
    near: tuple[float, float, float] | None = None
    types: frozenset[str] = field(default_factory=frozenset)

    @property
    def empty(self) -> bool:
        return (self.after_ts is None and self.before_ts is None and not self.folders
                and not self.camera and not self.place and self.near is None
                and not self.types)


def _seconds(moment: datetime) -> float:
    return (moment.replace(tzinfo=None) - datetime(1970, 1, 1)).total_seconds()


def _bound(value: date | datetime | str | None, option: str, *, end: bool) -> float | None:
    """The first (``end=False``) or last moment of a day, month or year, or a moment."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, datetime):
        return _seconds(value)
    if isinstance(value, date):
        start = datetime(value.year, value.month, value.day)
        return _seconds(start + timedelta(days=1)) - 1e-6 if end else _seconds(start)
    text = str(value)
    found = _DATE.match(text)
    try:
        if found:
            year, month, day = (int(g) if g else None for g in found.groups())
            assert year is not None
            if day is not None and month is not None:
                start = datetime(year, month, day)
                nxt = start + timedelta(days=1)
            elif month is not None:
                start = datetime(year, month, 1)
                nxt = datetime(year + month // 12, month % 12 + 1, 1)
            else:
                start, nxt = datetime(year, 1, 1), datetime(year + 1, 1, 1)
            return _seconds(nxt) - 1e-6 if end else _seconds(start)
        return _seconds(datetime.fromisoformat(text.strip()))
    except ValueError:
        pass
    raise UsageError(f"{option} {text}: not a date; use YYYY-MM-DD, YYYY-MM or YYYY "
                     "(e.g. 2023-07-14, 2023-07, 2023)")


def _near(value: tuple[float, ...] | str | None) -> tuple[float, float, float] | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    shown = value if isinstance(value, str) else ",".join(str(v) for v in value)
    try:
        parts = ([float(p) for p in value.split(",")] if isinstance(value, str)
                 else [float(v) for v in value])
    except ValueError:
        parts = []
    if len(parts) not in (2, 3):
        raise UsageError(f"--near {shown}: use LAT,LON or LAT,LON,KM (e.g. 48.858,2.294,5)")
    lat, lon = parts[0], parts[1]
    km = parts[2] if len(parts) == 3 else DEFAULT_NEAR_KM
    if not -90 <= lat <= 90:
        raise UsageError(f"--near {shown}: latitude {lat:g} is not between -90 and 90")
    if not -180 <= lon <= 180:
        raise UsageError(f"--near {shown}: longitude {lon:g} is not between -180 and 180")
    if not km > 0:
        raise UsageError(f"--near {shown}: the distance must be more than 0 km")
    return lat, lon, km


def _types(values: Iterable[str]) -> frozenset[str]:
    out: set[str] = set()
    for value in values:
        ext = "." + value.strip().lower().lstrip(".")
        if ext == ".":
            raise UsageError("--type needs an extension, e.g. --type jpg")
        out.update(next((group for group in _ALIASES if ext in group), {ext}))
    return frozenset(out)


def check_sort(sort: str) -> str:
    if sort not in SORTS:
        raise UsageError(f"unknown --sort {sort!r}: use score, date (oldest first) or -date "
                         "(newest first)")
    return sort
