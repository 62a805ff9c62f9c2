"""Keeping the derived FAISS files in step with the metadata store.

The manifest records, for each FAISS file, the store's change number (``seq``) it reflects and
how many vectors it holds. Opening loads the file and applies what changed after that number;
the application is idempotent (every changed id is removed before it is added again), so a crash
between writing a FAISS file and the manifest, or a reader that sees a newer file than the
manifest says, still ends with exactly the store's content. A file that does not match the
manifest, or (for writers, which check every id) the store, is rebuilt from the store and the
repair is logged.

Tombstones (deleted ids) are pruned once the FAISS file of their kind reflects them; the store
then records how far it pruned, and a copy older than that mark (a long-running reader's) is
reloaded from the file instead of patched. Rebuilds stream the vectors out of the store in
chunks, so their memory stays near the size of the finished index.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import numpy as np
from sqlalchemy.engine import Connection

from .layout import IndexLayout, Manifest, VectorFileState
from .metadata import MetadataStore
from .records import StoreState
from .schema import Kind
from .vectors import (
    EXACT_LIMIT,
    SearchTuning,
    ShardFiller,
    VectorIndex,
    training_sample_size,
)

if TYPE_CHECKING:
    from .opening import IndexHandle

log = logging.getLogger("vlmsearch.store")

SaveProgress = Callable[[int, int], None]

SAVE_EVERY_CHANGES = 20_000
"""During long runs, FAISS files are rewritten once this many rows (or a tenth of the
collection) changed, so readers never spend long catching up from the store."""


class Rebuilder(Protocol):
    """Builds a new index of every vector in a store snapshot (:func:`rebuild`, or the Ray
    engine's sharded build)."""

    def __call__(
        self, store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int,
        progress: SaveProgress | None = None,
    ) -> tuple[VectorIndex, int]: ...


def rebuild(
    store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int,
    progress: SaveProgress | None = None, fill: ShardFiller | None = None, seed: int = 0,
) -> tuple[VectorIndex, int]:
    """A new writable index of every vector in the store snapshot ``conn``, streamed out of
    the store in chunks (see :meth:`VectorIndex.build_streaming`)."""
    n = store.live_count(kind, conn)
    seq = store.seq(conn)

    def sample() -> tuple[np.ndarray, np.ndarray]:
        ids = store.live_ids(kind, conn)
        rng = np.random.default_rng(seed)
        size = training_sample_size(len(ids), dim)
        chosen = np.sort(rng.choice(ids, size=size, replace=False))
        parts = list(store.iter_vectors(kind, conn, ids=chosen))
        return (np.concatenate([p[0] for p in parts]),
                np.concatenate([p[1] for p in parts]).reshape(-1, dim))

    index = VectorIndex.build_streaming(
        dim, n, lambda: store.iter_vectors(kind, conn), sample, exact_limit=exact_limit,
        seed=seed, fill=fill, progress=progress)
    return index, seq


def load_synced(
    layout: IndexLayout, manifest: Manifest, store: MetadataStore, kind: Kind, conn: Connection,
    *, writable: bool, exact_limit: int = EXACT_LIMIT, state: StoreState | None = None,
) -> tuple[VectorIndex, int]:
    """The FAISS index of ``kind`` matching the store snapshot ``conn``, and that snapshot's
    seq. Writable indexes are loaded in memory and checked id by id against the store; read-only
    ones are memory-mapped and checked by count against the manifest."""
    pruned = (state or store.state(conn)).pruned.get(kind, 0)
    index: VectorIndex | None = None
    file_state = manifest.vectors.get(kind, VectorFileState())
    # Two tries: a writer may save a new file (and delete the one our manifest names) between
    # our reading the manifest and the file.
    for attempt in range(2):
        file_state = manifest.vectors.get(kind, VectorFileState())
        path = layout.vector_path(kind, file_state.file)
        if file_state.seq <= 0:
            break  # no file yet
        if file_state.seq < pruned or not path.is_file():  # the manifest we hold is stale
            if attempt == 0:
                manifest = layout.read_manifest()
                continue
            break
        try:
            index = VectorIndex.load(path, manifest.dim, writable=writable,
                                     kind=file_state.index_type,
                                     tuning=SearchTuning(file_state.nprobe,
                                                         file_state.recall_at_10))
        except Exception as exc:  # a damaged file is rebuilt from the store
            if attempt == 0 and not path.is_file():  # deleted while we opened it
                manifest = layout.read_manifest()
                continue
            log.warning("%s is unreadable (%s); rebuilding it from the metadata store", path, exc)
            break
        if index.base_count == file_state.count:
            break
        index = None
        if attempt == 0:
            manifest = layout.read_manifest()
        else:
            log.warning("%s does not match the manifest; rebuilding it from the metadata store",
                        path.name)
    if index is None:
        return rebuild(store, kind, manifest.dim, conn, exact_limit=exact_limit)
    delta = store.changes_since(kind, file_state.seq, conn)
    index.remove(delta.removed)
    index.add(delta.added_ids, delta.added_vectors)
    if writable:
        expected = np.sort(store.live_ids(kind, conn))
        if not np.array_equal(np.sort(index.ids()), expected):
            log.warning("%s held %d vectors that do not match the store's %d; rebuilt it from "
                        "the store", layout.vector_path(kind, file_state.file).name,
                        index.count, len(expected))
            return rebuild(store, kind, manifest.dim, conn, exact_limit=exact_limit)
    return index, delta.seq


def save_synced(
    layout: IndexLayout, manifest: Manifest, kind: Kind, index: VectorIndex, seq: int
) -> None:
    """Write the FAISS file under a new name, record in the manifest which file and store
    state it is, then delete the files it replaces (those another process still has
    memory-mapped, on Windows, stay until a later save: see :mod:`vlmsearch.store.layout`)."""
    path = layout.new_vector_path(kind, seq)
    index.save(path)
    manifest.vectors[kind] = VectorFileState(
        seq=seq, count=index.count, index_type=index.kind, nprobe=index.tuning.nprobe,
        recall_at_10=index.tuning.recall_at_10, file=path.name,
    )
    try:
        layout.write_manifest(manifest)
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    left = layout.remove_old_vector_files(kind, keep=path.name)
    if left:
        log.info("kept %s: in use by another process; deleted at a later save",
                 ", ".join(p.name for p in left))


class VectorFiles:
    """The FAISS indexes of one open index, each brought up to date with the store snapshot
    it is asked for. Searches use memory-mapped read-only copies; writers load them in
    memory and write them back (:meth:`save`)."""

    def __init__(self, handle: IndexHandle) -> None:
        self.handle = handle
        self._cached: dict[str, tuple[VectorIndex, int]] = {}

    def forget(self) -> None:
        """Drop every loaded index (the model changed, or the engine closes)."""
        self._cached.clear()

    def current(
        self, kind: Kind, conn: Connection, *, writable: bool = False, reload: bool = False,
        state: StoreState | None = None,
    ) -> tuple[VectorIndex, int]:
        """The FAISS index of ``kind`` brought up to the store snapshot ``conn``, and that
        snapshot's seq. ``reload`` checks every id against the store first (writers, before a
        run)."""
        handle = self.handle
        state = state or handle.store.state(conn)
        cached = self._cached.get(kind)
        stale = cached is not None and cached[1] < state.pruned.get(kind, 0)
        if cached is None or reload or stale or (writable and not cached[0].writable):
            self._cached.pop(kind, None)  # never hold two copies of a big index
            handle.manifest = handle.current_manifest()
            cached = load_synced(handle.layout, handle.manifest, handle.store, kind, conn,
                                 writable=writable, exact_limit=handle.exact_limit, state=state)
        elif state.seq != cached[1]:
            index, seq = cached
            delta = handle.store.changes_since(kind, seq, conn)
            index.remove(delta.removed)
            index.add(delta.added_ids, delta.added_vectors)
            cached = (index, delta.seq)
        self._cached[kind] = cached
        return cached

    def save(
        self, kind: Kind, rebuilder: Rebuilder = rebuild, progress: SaveProgress | None = None,
    ) -> None:
        """Write the FAISS file of ``kind`` (rebuilt as another type, by ``rebuilder``, when
        the collection has outgrown its current one), then prune the tombstones it reflects.
        Writers only."""
        handle = self.handle
        with handle.store.read() as conn:
            index, seq = self.current(kind, conn, writable=True)
            if index.needs_rebuild(handle.exact_limit):
                del index
                self._cached.pop(kind, None)
                index, seq = rebuilder(handle.store, kind, handle.manifest.dim, conn,
                                       exact_limit=handle.exact_limit, progress=progress)
                self._cached[kind] = (index, seq)
        save_synced(handle.layout, handle.manifest, kind, index, seq)
        pruned = handle.store.prune_tombstones(kind, seq)
        if pruned:
            log.info("pruned %d %s tombstones reflected by %s", pruned, kind,
                     handle.manifest.vectors[kind].file)

    def maybe_save(self, kind: Kind, rebuilder: Rebuilder = rebuild) -> None:
        """During long runs, rewrite the FAISS file once enough has changed that readers
        would spend noticeable time catching up from the store."""
        handle = self.handle
        state = handle.manifest.vectors.get(kind)
        saved_seq, saved_count = (state.seq, state.count) if state else (0, 0)
        with handle.store.read() as conn:
            changed = handle.store.count_changed_since(kind, saved_seq, conn)
        if changed >= max(SAVE_EVERY_CHANGES, saved_count // 10):
            self.save(kind, rebuilder)
