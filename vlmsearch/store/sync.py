"""Keeping the derived FAISS files in step with the metadata store.

The manifest records, for each FAISS file, the store's change number (``seq``) it reflects and
how many vectors it holds. Opening loads the file and applies what changed after that number;
the application is idempotent (every changed id is removed before it is added again), so a crash
between writing a FAISS file and the manifest, or a reader that sees a newer file than the
manifest says, still ends with exactly the store's content. A file that does not match the
manifest, or (for writers, which check every id) the store, is rebuilt from the store and the
repair is logged.
"""

from __future__ import annotations

import logging
from typing import Protocol

import numpy as np
from sqlalchemy.engine import Connection

from .layout import IndexLayout, Manifest, VectorFileState
from .metadata import Kind, MetadataStore
from .vectors import EXACT_LIMIT, SearchTuning, VectorIndex

log = logging.getLogger("vlmsearch.store")


def load_synced(
    layout: IndexLayout, manifest: Manifest, store: MetadataStore, kind: Kind, conn: Connection,
    *, writable: bool, exact_limit: int = EXACT_LIMIT,
) -> tuple[VectorIndex, int]:
    """The FAISS index of ``kind`` matching the store snapshot ``conn``, and that snapshot's
    seq. Writable indexes are loaded in memory and checked id by id against the store; read-only
    ones are memory-mapped and checked by count against the manifest."""
    path = layout.vector_path(kind)
    index: VectorIndex | None = None
    state = manifest.vectors.get(kind, VectorFileState())
    # Two tries: a writer may replace the file between our reading the manifest and the file.
    for attempt in range(2):
        state = manifest.vectors.get(kind, VectorFileState())
        if not (path.is_file() and state.seq > 0):
            break
        try:
            index = VectorIndex.load(path, manifest.dim, writable=writable,
                                     kind=state.index_type,
                                     tuning=SearchTuning(state.nprobe, state.recall_at_10))
        except Exception as exc:  # a damaged file is rebuilt from the store
            log.warning("%s is unreadable (%s); rebuilding it from the metadata store", path, exc)
            break
        if index.base_count == state.count:
            break
        index = None
        if attempt == 0:
            manifest = layout.read_manifest()
        else:
            log.warning("%s does not match the manifest; rebuilding it from the metadata store",
                        path.name)
    if index is None:
        return rebuild(store, kind, manifest.dim, conn, exact_limit=exact_limit)
    delta = store.changes_since(kind, state.seq, conn)
    index.remove(delta.removed)
    index.add(delta.added_ids, delta.added_vectors)
    if writable:
        expected = np.sort(store.live_ids(kind, conn))
        if not np.array_equal(np.sort(index.ids()), expected):
            log.warning("%s held %d vectors that do not match the store's %d; rebuilt it from "
                        "the store", path.name, index.count, len(expected))
            return rebuild(store, kind, manifest.dim, conn, exact_limit=exact_limit)
    return index, delta.seq


class Rebuilder(Protocol):
    """Builds a new index of every vector in a store snapshot (:func:`rebuild`, or the Ray
    engine's sharded build)."""

    def __call__(
        self, store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int
    ) -> tuple[VectorIndex, int]: ...


def rebuild(
    store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int
) -> tuple[VectorIndex, int]:
    """A new writable index of every vector in the store snapshot ``conn``."""
    everything = store.all_vectors(kind, conn)
    index = VectorIndex.build(dim, everything.added_ids, everything.added_vectors,
                              exact_limit=exact_limit)
    return index, everything.seq


def save_synced(
    layout: IndexLayout, manifest: Manifest, kind: Kind, index: VectorIndex, seq: int
) -> None:
    """Write the FAISS file, then record in the manifest which store state it reflects."""
    index.save(layout.vector_path(kind))
    manifest.vectors[kind] = VectorFileState(
        seq=seq, count=index.count, index_type=index.kind, nprobe=index.tuning.nprobe,
        recall_at_10=index.tuning.recall_at_10,
    )
    layout.write_manifest(manifest)
