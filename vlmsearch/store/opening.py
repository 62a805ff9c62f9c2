"""Opening an index folder, creating one, and switching an index to another model.

The metadata database is the source of truth, the model included: it records which model its
vectors were made with, in the same transactions that change them. The manifest repeats it for
people and older versions; when the two disagree (a model switch was cut short between its
database commit and the manifest), the database wins and the manifest is repaired, and a
truncated or unreadable manifest is rebuilt from the database. So a kill at any moment of a
``--reindex`` leaves either the old index or the new one, never vectors of one model searched
with the other.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from ..errors import IndexFormatError, IndexLockedError, IndexNotFoundError, UsageError
from .database import public_url, sqlite_url
from .layout import IndexLayout, Manifest
from .metadata import MetadataStore
from .records import ModelRecord
from .sync import VectorFiles

log = logging.getLogger("vlmsearch.store")

TextEmbedder = Callable[[Sequence[str]], np.ndarray]


class IndexHandle:
    """One open index folder: its layout, manifest, metadata store and FAISS files."""

    def __init__(
        self, layout: IndexLayout, manifest: Manifest, store: MetadataStore, *, exact_limit: int
    ) -> None:
        self.layout = layout
        self.manifest = manifest
        self.store = store
        self.exact_limit = exact_limit
        self.vectors = VectorFiles(self)

    @property
    def model(self) -> ModelRecord:
        return ModelRecord(self.manifest.model_spec, self.manifest.model_id, self.manifest.dim)

    def current_manifest(self) -> Manifest:
        """The manifest as it is on disk now (a writer may have changed it), or the one in
        memory when the file cannot be read at the moment."""
        try:
            manifest = self.layout.read_manifest()
        except (IndexNotFoundError, IndexFormatError):
            return self.manifest
        if manifest.model_id != self.manifest.model_id:
            return self.manifest  # a model switch in progress: the engine reopens
        return manifest

    def reopen(self) -> None:
        """Follow a model switch made by another process: the database's model, afresh."""
        recorded = self.store.model()
        if recorded is None:
            return
        self.manifest = _manifest_for(recorded, self.current_manifest())
        self.store.dim = recorded.dim
        self.vectors.forget()

    def close(self) -> None:
        self.vectors.forget()
        self.store.close()


def open_index(
    root: str | os.PathLike[str], *, db: str | None = None, exact_limit: int
) -> IndexHandle:
    """Open the existing index in ``root`` (:class:`IndexNotFoundError` when there is none)."""
    layout = IndexLayout(root)
    if not layout.exists():
        raise IndexNotFoundError(
            f"no index at {layout.root}; build one with `vlmsearch index PATH` "
            "(or pick another with --index NAME / --index-dir DIR)"
        )
    try:
        manifest = layout.read_manifest()
    except IndexFormatError as damaged:
        return _recover(layout, db, damaged, exact_limit)
    store = _store(layout, manifest.dim, _database_for(layout, manifest, db))
    handle = IndexHandle(layout, manifest, store, exact_limit=exact_limit)
    recorded = store.model()
    if recorded is None:  # made before the database recorded its model
        if not store.read_only:
            store.record_model(handle.model)
    elif recorded != handle.model:
        log.warning("the manifest of %s names model %s but its database holds vectors of %s "
                    "(a model switch was interrupted); following the database", layout.root,
                    manifest.model_spec, recorded.spec)
        handle.manifest = _manifest_for(recorded, manifest)
        store.dim = recorded.dim
        _try_write_manifest(handle)
    return handle


def create_index(
    root: str | os.PathLike[str], model: ModelRecord, *, db: str | None = None,
    exact_limit: int,
) -> IndexHandle:
    """Make a new index in ``root`` for ``model`` (or open the one another process made
    meanwhile)."""
    layout = IndexLayout(root)
    recorded_url = public_url(db) if db else None  # a malformed URL fails before anything
    with layout.write_lock():
        if layout.exists():
            return open_index(root, db=db, exact_limit=exact_limit)
        store = _store(layout, model.dim, db)
        try:
            if db:
                _check_empty(store)
            store.record_model(model)
            manifest = Manifest(model.spec, model.model_id, model.dim, database=recorded_url)
            layout.write_manifest(manifest)
        except BaseException:
            store.close()
            raise
    return IndexHandle(layout, manifest, store, exact_limit=exact_limit)


def switch_model(handle: IndexHandle, model: ModelRecord, embed_texts: TextEmbedder) -> None:
    """Re-index ``handle`` with ``model`` (or afresh with the same one), under the write lock:
    the added texts are re-embedded with it first (nothing on disk changes until then), then
    one transaction drops every image vector, marks every file to be re-embedded and stores
    the texts' new vectors (:meth:`MetadataStore.switch_model`); the manifest and the FAISS
    files follow. The next index runs re-embed the files under their folders."""
    with handle.layout.write_lock():
        texts = handle.store.texts_for_reembedding()
        vectors = embed_texts([t for _, t in texts]) if texts else np.zeros((0, model.dim))
        handle.store.switch_model(model, {i: v for (i, _), v in zip(texts, vectors,
                                                                     strict=True)})
        handle.manifest = _manifest_for(model, handle.manifest)
        handle.vectors.forget()
        handle.layout.write_manifest(handle.manifest)
        for kind in ("image", "text"):
            handle.layout.remove_old_vector_files(kind, keep=None)
    log.info("switched %s to model %s: %d texts re-embedded, files to re-embed on the next run",
             handle.layout.root, model.spec, len(texts))


def _manifest_for(model: ModelRecord, old: Manifest) -> Manifest:
    """A manifest for ``model`` with no FAISS files yet, keeping ``old``'s creation time and
    database."""
    return Manifest(model.spec, model.model_id, model.dim, created=old.created,
                    database=old.database)


def _try_write_manifest(handle: IndexHandle) -> None:
    """Repair the manifest on disk when this process may (readers of a read-only folder, or
    while another process holds the write lock, keep the repaired copy in memory)."""
    if handle.store.read_only:
        return
    try:
        with handle.layout.write_lock():
            handle.layout.write_manifest(handle.manifest)
    except (IndexLockedError, OSError) as exc:
        log.info("left the manifest of %s for later repair (%s)", handle.layout.root, exc)
    except Exception as exc:  # a StorageError: the folder is not writable after all
        log.info("could not repair the manifest of %s (%s)", handle.layout.root, exc)


def _recover(
    layout: IndexLayout, db: str | None, damaged: IndexFormatError, exact_limit: int
) -> IndexHandle:
    """Rebuild an unreadable manifest from the database (which records the model)."""
    database = db or (None if layout.database_path.is_file() else "")
    if database == "":
        raise IndexFormatError(
            f"{damaged}. If this index keeps its metadata in PostgreSQL, open it once with "
            "--db URL to repair the manifest; otherwise delete the folder and index again"
        ) from damaged
    store = _store(layout, 0, database)
    recorded = store.model()
    if recorded is None:
        store.close()
        raise IndexFormatError(
            f"{damaged}, and its database does not record the model (an index from before "
            "vlmsearch 0.2); delete the folder and index again"
        ) from damaged
    store.dim = recorded.dim
    manifest = Manifest(recorded.spec, recorded.model_id, recorded.dim,
                        database=public_url(db) if db else None)
    log.warning("%s was unreadable; rebuilt it from the metadata database", layout.manifest_path)
    handle = IndexHandle(layout, manifest, store, exact_limit=exact_limit)
    _try_write_manifest(handle)
    return handle


def _store(layout: IndexLayout, dim: int, database: str | None = None) -> MetadataStore:
    """The index's metadata store: ``database`` when given, else the folder's meta.sqlite
    (read-only when this process cannot write to the folder)."""
    if database:
        return MetadataStore(database, dim=dim)
    writable = os.access(layout.root, os.W_OK) or not layout.database_path.exists()
    return MetadataStore(sqlite_url(layout.database_path, read_only=not writable), dim=dim)


def _database_for(layout: IndexLayout, manifest: Manifest, db: str | None) -> str | None:
    """The database URL to open an existing index with: the one it records (``db`` may repeat
    it, with a password), never another one."""
    if db is None or (manifest.database and public_url(db) == manifest.database):
        return db or manifest.database
    recorded = manifest.database or f"SQLite ({layout.database_path})"
    raise UsageError(
        f"the index at {layout.root} keeps its metadata in {recorded}, not {public_url(db)}; "
        "leave out --db to use the index's own database, or use another --index-dir"
    )


def _check_empty(store: MetadataStore) -> None:
    """A new index needs a database of its own: two index folders sharing one would undo each
    other's work."""
    with store.read() as conn:
        used = store.seq(conn) > 0 or store.live_count("image", conn) > 0
    if used:
        raise UsageError(
            f"the database {public_url(store.url)} already holds a vlmsearch index; give each "
            "index its own empty database (createdb NAME), or open the existing index's folder"
        )

