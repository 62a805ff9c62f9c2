"""Keeping the derived FAISS files in step with the metadata store.

The manifest records, for each FAISS file, the store's change number (``seq``) it reflects.
Opening loads the file and applies what changed after that number; the application is
idempotent (every changed id is removed before it is added again), so a crash between writing a
FAISS file and the manifest, or a reader that sees a newer file than the manifest says, still
ends with exactly the store's content. If the counts disagree anyway (a damaged or foreign file),
the index is rebuilt from the store and the repair is logged.
"""

from __future__ import annotations

import logging

import numpy as np
from sqlalchemy.engine import Connection

from .layout import IndexLayout, Manifest, VectorFileState
from .metadata import Kind, MetadataStore
from .vectors import VectorIndex

log = logging.getLogger("vlmsearch.store")


def load_synced(
    layout: IndexLayout, manifest: Manifest, store: MetadataStore, kind: Kind, conn: Connection,
    *, verify_ids: bool = False,
) -> tuple[VectorIndex, int]:
    """The FAISS index of ``kind`` matching the store snapshot ``conn``, and that snapshot's
    seq. Counts are always checked; ``verify_ids`` also compares every id (writers do)."""
    state = manifest.vectors.get(kind, VectorFileState())
    path = layout.vector_path(kind)
    index: VectorIndex | None = None
    base_seq = 0
    if path.is_file() and state.seq > 0:
        try:
            index = VectorIndex.load(path, manifest.dim)
            base_seq = state.seq
        except Exception as exc:  # a damaged file is rebuilt from the store
            log.warning("%s is unreadable (%s); rebuilding it from the metadata store", path, exc)
    if index is None:
        index = VectorIndex(manifest.dim)
        base_seq = 0
    delta = store.changes_since(kind, base_seq, conn) if base_seq else store.all_vectors(kind, conn)
    index.remove(delta.removed)
    index.add(delta.added_ids, delta.added_vectors)
    if verify_ids:
        expected = np.sort(store.live_ids(kind, conn))
        consistent = np.array_equal(np.sort(index.ids()), expected)
        expected_count = len(expected)
    else:
        expected_count = store.live_count(kind, conn)
        consistent = index.count == expected_count
    if not consistent:
        log.warning(
            "%s held %d vectors that do not match the store's %d; rebuilt it from the store",
            path.name, index.count, expected_count,
        )
        index = VectorIndex(manifest.dim)
        full = store.all_vectors(kind, conn)
        index.add(full.added_ids, full.added_vectors)
    return index, delta.seq


def save_synced(
    layout: IndexLayout, manifest: Manifest, kind: Kind, index: VectorIndex, seq: int
) -> None:
    """Write the FAISS file, then record in the manifest which store state it reflects."""
    index.save(layout.vector_path(kind))
    manifest.vectors[kind] = VectorFileState(seq=seq, count=index.count, index_type=index.kind)
    layout.write_manifest(manifest)
