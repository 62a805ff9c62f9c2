"""What goes in and out of the metadata store: plain records, no SQL."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


@dataclass(frozen=True, slots=True)
class FailedFile:
    path: str
    size: int
    mtime_ns: int
    error: str


@dataclass(frozen=True)
class FileRecord:
    """One file of the index, as the library shows it (see :meth:`vlmsearch.Engine.record`)."""

    id: int
    path: str
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    digest: str | None
    status: str
    error: str | None


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
