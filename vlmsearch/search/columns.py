"""The per-image columns filters test, held in memory as NumPy arrays.

A filtered search must find the true top-k among the matching images, which needs the set of
matching ids at once: with a million images, asking SQL for 100,000 ids per query costs more
than the whole search budget, while testing NumPy columns costs a millisecond or two. The
columns are loaded on the first filtered search (nothing is loaded for unfiltered ones) and
then kept in step with the store snapshot each search reads, like the FAISS copy: rows changed
after the snapshot the columns reflect are read again, deleted ids dropped, and a full reload
follows a ``--reindex`` or a tombstone pruning past them.

Strings (folder, extension, camera, place names) are stored once each, as codes into small
lists; a filter resolves its text against those lists and then tests the codes.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..places import fold, haversine_km
from ..sources import is_under
from ..store.metadata import MetadataStore
from ..store.records import StoreState
from ..store.schema import FILES, TOMBSTONES
from .filters import CheckedFilter

_COLS = (FILES.c.id, sa.type_coerce(FILES.c.path, sa.LargeBinary).label("raw_path"),
         FILES.c.status, FILES.c.taken_ts, FILES.c.lat, FILES.c.lon, FILES.c.camera_make,
         FILES.c.camera_model, FILES.c.place_city, FILES.c.place_metro, FILES.c.place_county,
         FILES.c.place_region, FILES.c.place_country, FILES.c.place_cc)
_SEP = os.fsencode(os.sep)
_ARRAYS = ("live", "taken", "lat", "lon", "folder", "ext", "camera", "place")
class _Codes:
    """Distinct values of one string column, numbered in order of appearance."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._index: dict[Any, int] = {}

    def codes(self, values: Iterable[Any]) -> list[int]:
        """The code of each value (-1 for None), numbering new values as they come."""
        index, known, out = self._index, self.values, []
        for value in values:
            found = index.get(value)
            if found is None:
                if value is None:
                    out.append(-1)
                    continue
                found = index[value] = len(known)
                known.append(value)
            out.append(found)
        return out

    def matching(self, test: Any) -> np.ndarray:
        return np.array([n for n, v in enumerate(self.values) if test(v)], dtype=np.int32)


class PhotoColumns:
    """See the module docstring. Not thread-safe (the engine is used from one thread)."""

    def __init__(self) -> None:
        self._reset()

    def _reset(self) -> None:
        self.seq = -1
        self.ids = np.zeros(0, dtype=np.int64)
        self._grow(0)
        self.folders, self.exts, self.cameras, self.places = _Codes(), _Codes(), _Codes(), _Codes()

    def _grow(self, n: int) -> None:
        self._by_date: np.ndarray | None = None
        self._sorted_taken = np.zeros(0)
        self._ids_by_date = np.zeros(0, dtype=np.int64)
        self._live_count: int | None = None
        self.live = np.zeros(n, dtype=bool)
        self.taken = np.full(n, np.nan)
        self.lat = np.full(n, np.nan, dtype=np.float32)
        self.lon = np.full(n, np.nan, dtype=np.float32)
        self.folder = np.full(n, -1, dtype=np.int32)
        self.ext = np.full(n, -1, dtype=np.int32)
        self.camera = np.full(n, -1, dtype=np.int32)
        self.place = np.full(n, -1, dtype=np.int32)

    # --- keeping in step ---------------------------------------------------------------------
    def refresh(self, store: MetadataStore, conn: Connection, state: StoreState) -> None:
        """Bring the columns up to the snapshot ``conn`` (whose state is ``state``)."""
        if self.seq == state.seq:
            return
        if self.seq < 0 or self.seq < state.pruned.get("image", 0):
            self._reset()
            self._put(conn.execute(sa.select(*_COLS)).all())
        else:
            dead = conn.execute(sa.select(TOMBSTONES.c.item_id).where(
                TOMBSTONES.c.kind == "image", TOMBSTONES.c.seq > self.seq)).scalars().all()
            self._drop(np.array(dead, dtype=np.int64))
            self._put(conn.execute(sa.select(*_COLS).where(FILES.c.seq > self.seq))
                      .all())
        self.seq = state.seq

    def _drop(self, ids: np.ndarray) -> None:
        if not len(ids) or not len(self.ids):
            return
        pos = np.searchsorted(self.ids, ids)
        inside = pos < len(self.ids)
        pos, ids = pos[inside], ids[inside]
        self.live[pos[self.ids[pos] == ids]] = False  # the date order still holds
        self._live_count = None

    def _put(self, rows: Sequence[Any]) -> None:
        """Take ``rows`` (new or changed files) into the columns. Per row only tuples and
        dictionary lookups happen here; text is decoded and folded once per distinct value,
        when a filter asks (:meth:`matches`)."""
        if not rows:
            return
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        new = np.setdiff1d(ids, self.ids)
        if len(new):
            old = len(self.ids)
            keep = {name: getattr(self, name) for name in _ARRAYS}
            self._grow(old + len(new))
            for name, values in keep.items():
                getattr(self, name)[:old] = values
            merged = np.concatenate([self.ids, new])
            order = np.argsort(merged, kind="stable")  # ids grow, so this is usually a no-op
            self.ids = merged[order]
            for name in _ARRAYS:
                setattr(self, name, getattr(self, name)[order])
        pos = np.searchsorted(self.ids, ids)
        self._by_date = None  # dates may have changed
        self._live_count = None
        nan = math.nan
        split = [bytes(r[1]).rpartition(_SEP) for r in rows]
        self.folder[pos] = self.folders.codes(parent for parent, _, _ in split)
        self.ext[pos] = self.exts.codes(
            name[name.rfind(b"."):].lower() if name.rfind(b".") > 0 else b""
            for _, _, name in split)
        self.camera[pos] = self.cameras.codes(
            (r[6], r[7]) if r[6] or r[7] else None for r in rows)
        self.place[pos] = self.places.codes(r[8:14] if any(r[8:14]) else None for r in rows)
        self.live[pos] = [r[2] == "ok" for r in rows]
        self.taken[pos] = [nan if r[3] is None else r[3] for r in rows]
        self.lat[pos] = [nan if r[4] is None else r[4] for r in rows]
        self.lon[pos] = [nan if r[5] is None else r[5] for r in rows]

    # --- matching ----------------------------------------------------------------------------
    def matches(self, where: CheckedFilter) -> np.ndarray:
        """The ids of live images matching ``where``, in no particular order. A date window
        holding under half of the images is found in the date order (cost: its size);
        otherwise every row is tested (about a millisecond per test for a million)."""
        rows_slice = self._date_window(where)  # sorts the dates when it needs them
        rows = (None if rows_slice is None or self._by_date is None
                else self._by_date[rows_slice])
        if rows is None:
            mask = self.live.copy()
            if where.after_ts is not None:
                mask &= self.taken >= where.after_ts  # NaN (no date) compares False
            if where.before_ts is not None:
                mask &= self.taken <= where.before_ts
        else:
            mask = self.live[rows]

        def column(values: np.ndarray) -> np.ndarray:
            return values if rows is None else values[rows]

        ids = self.ids if rows is None else self._ids_by_date[rows_slice]

        if where.folders:
            tops = where.folders
            mask &= np.isin(column(self.folder), self.folders.matching(
                lambda f: any(is_under(os.fsdecode(f or _SEP), top) for top in tops)))
        if where.types:
            mask &= np.isin(column(self.ext), self.exts.matching(
                lambda e: os.fsdecode(e) in where.types))
        if where.camera:
            wanted = where.camera
            mask &= np.isin(column(self.camera), self.cameras.matching(
                lambda c: wanted in (_camera(*c) or "").casefold()))
        if where.place:
            parts = where.place
            mask &= np.isin(column(self.place), self.places.matching(
                lambda names: all(part in {fold(n) for n in names if n} for part in parts)))
        if where.near is not None:
            lat, lon, km = where.near
            with np.errstate(invalid="ignore"):
                mask &= haversine_km(column(self.lat), column(self.lon), lat, lon) <= km
        return ids[mask]

    def _date_window(self, where: CheckedFilter) -> slice | None:
        """Where the rows taken inside ``where``'s dates lie in the date order (sorted on
        first use after a change), when they are under half of all rows; else None."""
        if where.after_ts is None and where.before_ts is None:
            return None
        if self._by_date is None:
            order = np.argsort(self.taken, kind="stable")  # NaN (no date) last
            dated = int(np.count_nonzero(~np.isnan(self.taken)))
            self._by_date, self._sorted_taken = order[:dated], self.taken[order[:dated]]
            self._ids_by_date = self.ids[self._by_date]
        taken = self._sorted_taken
        lo = (0 if where.after_ts is None
              else int(np.searchsorted(taken, where.after_ts, side="left")))
        hi = (len(taken) if where.before_ts is None
              else int(np.searchsorted(taken, where.before_ts, side="right")))
        if hi - lo > len(self.taken) // 2:
            return None
        return slice(lo, max(lo, hi))

    def by_date(self, ids: np.ndarray, *, newest_first: bool) -> np.ndarray:
        """``ids`` ordered by date taken (undated last), ties by id."""
        taken = self.taken[np.searchsorted(self.ids, ids)]
        key = -taken if newest_first else taken
        key = np.where(np.isnan(key), np.inf, key)
        return ids[np.lexsort((ids, key))]

    def live_count(self) -> int:
        if self._live_count is None:
            self._live_count = int(self.live.sum())
        return self._live_count


def _camera(make: str | None, model: str | None) -> str | None:
    from ..photo_meta import PhotoMeta

    return PhotoMeta(camera_make=make, camera_model=model).camera

