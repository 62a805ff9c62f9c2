"""What goes in and out of the metadata store: plain records, no SQL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..photo_meta import NO_META, PhotoMeta
from ..places import NOWHERE, Place

META_VERSION = 1
"""Version of what is read from photos' metadata; rows with a lower ``meta_version`` are read
again from their headers by the next index run."""


@dataclass(frozen=True, slots=True)
class FileState:
    """What the store knows of one path, for incremental decisions."""

    id: int
    path: str
    size: int
    mtime_ns: int
    digest: str | None
    status: str
    unavailable: bool = False
    meta_version: int = META_VERSION


@dataclass(frozen=True, slots=True)
class IndexedFile:
    path: str
    size: int
    mtime_ns: int
    digest: str
    width: int
    height: int
    vector: np.ndarray | None
    """None when the digest already has a vector in the store (moved or duplicate file)."""
    meta: PhotoMeta = NO_META
    place: Place = NOWHERE
    phash: int | None = None
    """The perceptual hash made with ``vector`` (:mod:`vlmsearch.phash`)."""


def photo_row(meta: PhotoMeta, place: Place) -> dict[str, Any]:
    """The ``files`` columns for what a photo says about itself."""
    return {"taken": meta.taken, "taken_ts": meta.taken_ts, "camera_make": meta.camera_make,
            "camera_model": meta.camera_model, "lens": meta.lens, "lat": meta.lat,
            "lon": meta.lon, "place_city": place.city, "place_metro": place.metro,
            "place_county": place.county, "place_region": place.region,
            "place_country": place.country, "place_cc": place.country_code,
            "meta_version": META_VERSION}


@dataclass(frozen=True, slots=True)
class FailedFile:
    path: str
    size: int
    mtime_ns: int
    error: str


@dataclass(frozen=True)
class FileRecord:
    """One file of the index, as the library shows it (see :meth:`vlmsearch.Engine.record`),
    with what the photo says about itself."""

    id: int
    path: str
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    digest: str | None
    status: str
    error: str | None
    meta: PhotoMeta = NO_META
    place: Place = NOWHERE


@dataclass(frozen=True)
class Delta:
    """What changed after a sequence number: ids to drop, then (ids, vectors) to add."""

    removed: np.ndarray
    added_ids: np.ndarray
    added_vectors: np.ndarray
    seq: int


@dataclass(frozen=True)
class ModelRecord:
    """The model an index's vectors were made with, as its database records it."""

    spec: str
    model_id: str
    dim: int


@dataclass(frozen=True)
class StoreState:
    """A snapshot's change number, model and how far tombstones were pruned, read at once (a
    search checks them on every query)."""

    seq: int
    model: ModelRecord | None
    pruned: dict[str, int]


@dataclass(frozen=True)
class ContentTable:
    """Indexed files and the distinct contents they hold (:meth:`MetadataStore.contents`).

    File ``i`` has id ``file_ids[i]``, path ``file_paths[i]`` and content
    ``file_content[i]``, a row of ``vectors`` (unit float32), ``hashes`` (perceptual, signed
    64-bit) and ``has_hash`` (False for vectors stored before hashes were made)."""

    file_ids: np.ndarray
    file_paths: list[str]
    file_content: np.ndarray
    vectors: np.ndarray
    hashes: np.ndarray
    has_hash: np.ndarray
