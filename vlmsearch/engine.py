"""The facade apps use: one :class:`Engine` per index folder.

```python
import vlmsearch

with vlmsearch.Engine.open(index_dir="photos-index", model="fake") as eng:
    report = eng.index(["~/Pictures"], progress=print)
    for hit in eng.search(text="a cat chasing a dog", k=5):
        print(hit.rank, hit.score, hit.path)
```

The engine wires the pieces (layout, metadata store, FAISS files, encoder, indexer, searcher)
and is the only thing the CLI and the web layer talk to. It never prints or exits.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from .config import DEFAULT_MODEL, Settings, index_dir_for
from .decode import DecodeError, decode_bytes
from .encoders.base import Encoder
from .encoders.registry import load_encoder
from .errors import (
    ImageError,
    IndexNotFoundError,
    ModelMismatchError,
    UsageError,
)
from .indexer import Indexer, IndexReport, Progress, ProgressCallback, _no_progress
from .searcher import Hit, TextHit, combine
from .sources import absolute
from .store.layout import IndexLayout, Manifest
from .store.metadata import FileRecord, Kind, MetadataStore, public_url, sqlite_url
from .store.sync import Rebuilder, load_synced, rebuild, save_synced
from .store.vectors import VectorIndex

if TYPE_CHECKING:
    from .distributed.options import RayOptions

log = logging.getLogger("vlmsearch")

ImageInput = str | os.PathLike[str] | bytes
TEXT_BATCH = 256


@dataclass(frozen=True)
class IndexInfo:
    path: str
    images: int
    texts: int
    failed: int
    model: str
    model_id: str
    dim: int
    index_type: str
    bytes: int
    created: str
    updated: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class TextsReport:
    added: int
    existing: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"added": self.added, "existing": self.existing, "seconds": round(self.seconds, 3)}


class Engine:
    """One open index. Use :meth:`open`; close it (or use ``with``) when done."""

    def __init__(
        self,
        layout: IndexLayout,
        manifest: Manifest,
        store: MetadataStore,
        *,
        settings: Settings,
        encoder: Encoder | None = None,
    ) -> None:
        self.layout = layout
        self.manifest = manifest
        self.store = store
        self.settings = settings
        self._encoder = encoder
        self._fast_text: Any = None
        self._vectors: dict[str, tuple[VectorIndex, int]] = {}

    # --- opening ---------------------------------------------------------------------------
    @classmethod
    def open(
        cls,
        index_dir: str | os.PathLike[str] | None = None,
        *,
        name: str | None = None,
        model: str | Encoder | None = None,
        settings: Settings | None = None,
        create: bool = True,
        reindex: bool = False,
        db: str | None = None,
    ) -> Engine:
        """Open the index in ``index_dir`` (or the named index in the index home).

        ``model``: a model spec (see ``vlmsearch models``) or an :class:`Encoder`. For an
        existing index it must match the model the index was built with, unless ``reindex``,
        which forgets every vector so the next :meth:`index` run re-embeds all files with the
        new model. Without ``model`` an existing index uses its own model, and a new one
        :data:`~vlmsearch.config.DEFAULT_MODEL`.

        ``create``: make the index if it does not exist (else :class:`IndexNotFoundError`).

        ``db``: a SQLAlchemy URL (``postgresql+psycopg://USER@HOST:PORT/DBNAME``) to keep a new
        index's metadata in that (empty) database instead of the folder's meta.sqlite. The
        folder records the URL without its password; later opens use it unchanged, with the
        password from ``PGPASSWORD`` or ``~/.pgpass`` (or from ``db`` given again).
        """
        settings = settings or Settings()
        layout = IndexLayout(index_dir_for(name, index_dir))
        encoder = cls._make_encoder(model, settings) if model is not None else None
        if layout.exists():
            manifest = layout.read_manifest()
            database = _database_for(layout, manifest, db)
            if encoder is not None and encoder.model_id != manifest.model_id:
                if not reindex:
                    raise ModelMismatchError(
                        f"the index at {layout.root} was built with model "
                        f"{manifest.model_spec!r}, not {encoder.spec!r}. Leave out --model to use "
                        "the index's own model, use another --index, or add --reindex to "
                        "re-embed every file with the new model"
                    )
                store = _store(layout, manifest.dim, database)
                with layout.write_lock():
                    store.clear_vectors()
                    manifest = Manifest(encoder.spec, encoder.model_id, encoder.dim,
                                        created=manifest.created, database=manifest.database)
                    layout.write_manifest(manifest)
                    for kind in ("image", "text"):
                        layout.vector_path(kind).unlink(missing_ok=True)
                store.dim = manifest.dim
                log.info("forgot all vectors of %s for the new model %s", layout.root, encoder.spec)
            else:
                store = _store(layout, manifest.dim, database)
            return cls(layout, manifest, store, settings=settings, encoder=encoder)
        if not create:
            raise IndexNotFoundError(
                f"no index at {layout.root}; build one with `vlmsearch index PATH` "
                "(or pick another with --index NAME / --index-dir DIR)"
            )
        encoder = encoder or cls._make_encoder(DEFAULT_MODEL, settings)
        dim = encoder.dim  # loads the model: fail before creating anything on disk
        check = getattr(encoder, "check_available", None)
        if check is not None:
            check()
        with layout.write_lock():
            if not layout.exists():
                manifest = Manifest(encoder.spec, encoder.model_id, dim,
                                    database=public_url(db) if db else None)
                store = _store(layout, dim, db)
                if db:
                    _check_empty(store)
                layout.write_manifest(manifest)
            else:  # created by another process meanwhile
                manifest = layout.read_manifest()
                store = _store(layout, manifest.dim, _database_for(layout, manifest, db))
        return cls(layout, manifest, store, settings=settings, encoder=encoder)

    @staticmethod
    def _make_encoder(model: str | Encoder, settings: Settings) -> Encoder:
        if isinstance(model, str):
            return load_encoder(model, device=settings.device)
        return model

    @property
    def encoder(self) -> Encoder:
        """The index's model (loaded on first use)."""
        if self._encoder is None:
            self._encoder = load_encoder(self.manifest.model_spec, device=self.settings.device)
            if self._encoder.model_id != self.manifest.model_id:
                raise ModelMismatchError(
                    f"the model {self.manifest.model_spec!r} now loads different weights than "
                    f"the index was built with ({self._encoder.model_id} vs "
                    f"{self.manifest.model_id}); rebuild with `vlmsearch index --reindex "
                    f"--model {self.manifest.model_spec} PATH`"
                )
        return self._encoder

    @property
    def path(self) -> Path:
        return self.layout.root

    def close(self) -> None:
        self._vectors.clear()
        self.store.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- writing ---------------------------------------------------------------------------
    def index(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        progress: ProgressCallback | None = None,
        engine: Literal["local", "ray"] = "local",
        ray: RayOptions | None = None,
    ) -> IndexReport:
        """Add new and changed images under ``paths``, drop deleted ones (see
        :mod:`vlmsearch.indexer` for the rules). Holds the index's write lock throughout.

        ``engine="ray"`` (or ``ray`` options) decodes and embeds on a Ray cluster, with the same
        rules and report; this process stays the only writer (see :mod:`vlmsearch.distributed`).
        """
        roots = [absolute(p) for p in paths]
        if not roots:
            raise UsageError("give at least one file or folder to index")
        if engine not in ("local", "ray"):
            raise UsageError(f"unknown indexing engine {engine!r}: use local or ray")
        progress = progress or _no_progress
        with self.layout.write_lock():
            with self.store.read() as conn:  # reconcile FAISS with the store before writing
                self._refresh("image", conn, writable=True, reload=True)
            rebuilder: Rebuilder = rebuild
            session: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            indexer: Indexer
            if engine == "ray" or ray is not None:
                from .distributed.indexer import RayIndexer

                indexer = RayIndexer(self.store, self.encoder, self.settings, options=ray,
                                     on_commit=lambda seq: self._maybe_save("image", rebuilder))
                rebuilder, session = indexer.rebuild, indexer.session()
            else:
                indexer = Indexer(self.store, self.encoder, self.settings,
                                  on_commit=lambda seq: self._maybe_save("image"))
            with session:
                report = indexer.run(roots, exclude=exclude, include_hidden=include_hidden,
                                     progress=progress)
                progress(Progress("saving", report.added + report.updated, None))
                self._save("image", rebuilder)
        self._export_fast_text(progress)
        return report

    def _export_fast_text(self, progress: ProgressCallback = _no_progress) -> None:
        """Export the text side for fast cold queries while the model is loaded anyway (once
        per model and machine; it takes seconds to a minute)."""
        if self._encoder is None or getattr(self._encoder, "device", "none") == "none":
            return
        from .encoders.onnx_text import cache_folder, export_cached

        try:
            cached = (cache_folder(self._encoder.model_id) / "meta.json").is_file()
        except OSError:  # an unreadable cache folder: export_cached logs and gives up
            cached = False
        if not cached:
            progress(Progress("exporting", 0, None))
            export_cached(self._encoder)

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Drop files, and everything under folders, from the index. Returns how many files."""
        targets = [absolute(p) for p in paths]
        with self.layout.write_lock():
            removed = self.store.remove_paths(targets)
            if removed:
                self._save("image")
        return removed

    def add_texts(
        self,
        texts: Iterable[str],
        *,
        source: str | None = None,
        progress: ProgressCallback | None = None,
    ) -> TextsReport:
        """Add texts (captions, labels, ...) for image→text search. Exact duplicates of texts
        already in the index are skipped; empty texts are ignored."""
        import time

        from .indexer import Progress

        start = time.perf_counter()
        progress = progress or _no_progress
        unique: dict[str, str] = {}
        for text in texts:
            text = text.strip()
            if text:
                unique.setdefault(_text_digest(text), text)
        with self.layout.write_lock():
            existing = self.store.text_digests(list(unique))
            todo = [(d, t) for d, t in unique.items() if d not in existing]
            added = 0
            progress(Progress("indexing", 0, len(todo)))
            for start_at in range(0, len(todo), TEXT_BATCH * 8):
                chunk = todo[start_at:start_at + TEXT_BATCH * 8]
                vecs = np.concatenate([
                    self.encoder.encode_texts([t for _, t in chunk[i:i + TEXT_BATCH]])
                    for i in range(0, len(chunk), TEXT_BATCH)
                ])
                added += self.store.add_texts([t for _, t in chunk], [d for d, _ in chunk],
                                              vecs, source)
                progress(Progress("indexing", start_at + len(chunk), len(todo)))
            if added:
                self._save("text")
        return TextsReport(added, len(unique) - added, time.perf_counter() - start)

    def clear_texts(self) -> int:
        """Remove every text; returns how many."""
        with self.layout.write_lock():
            n = self.store.clear_texts()
            self._save("text")
        return n

    # --- reading ---------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        negative: Sequence[str] = (),
        k: int = 10,
        target: Literal["images", "texts"] = "images",
    ) -> list[Any]:
        """Search the index. Returns :class:`Hit` (``target="images"``) or :class:`TextHit`
        (``target="texts"``) objects, best first. See :mod:`vlmsearch.searcher` for how text,
        image and ``negative`` terms combine and what the score means. A query image that is
        itself in the index is left out of image results."""
        if k < 1:
            raise UsageError(f"the number of results must be at least 1 (got {k})")
        if target not in ("images", "texts"):
            raise UsageError(f"unknown search target {target!r}: use images or texts")
        if text is not None and not text.strip():
            raise UsageError("the query text is empty; type some words to search for")
        negative = [n for n in negative if n.strip()]
        positives: list[np.ndarray] = []
        exclude_path: str | None = None
        texts = self._text_encoder(need_images=image is not None)
        if text is not None:
            positives.append(texts.encode_texts([text])[0])
        if image is not None:
            vec, exclude_path = self._image_query(image)
            positives.append(vec)
        negatives = list(texts.encode_texts(negative)) if negative else []
        query = combine(positives, negatives)
        return self.search_vector(query, k=k, target=target, exclude_path=exclude_path)

    def _text_encoder(self, *, need_images: bool = False) -> Any:
        """What encodes query texts: the full model when it is loaded (or images need it
        anyway), else the exported ONNX text side when one is cached (no torch import)."""
        if self._encoder is not None or need_images or os.environ.get("VLMSEARCH_NO_FAST_TEXT"):
            return self.encoder
        if self._fast_text is None:
            from .encoders.onnx_text import load_cached

            self._fast_text = load_cached(self.manifest.model_id) or False
        return self._fast_text or self.encoder

    def search_vector(
        self,
        query: np.ndarray,
        *,
        k: int = 10,
        target: Literal["images", "texts"] = "images",
        exclude_path: str | None = None,
    ) -> list[Any]:
        """Search with a ready query vector (unit length, the index's dim)."""
        kind: Kind = "image" if target == "images" else "text"
        with self.store.read() as conn:
            index, _ = self._refresh(kind, conn)
            exclude_ids: set[int] = set()
            if exclude_path is not None and kind == "image":
                rec = self.store.record_for_path(exclude_path, conn)
                if rec is not None:
                    exclude_ids.add(rec.id)
            if index.count == 0:
                return []
            # over-fetch a little: ids a concurrent writer just removed are dropped below
            scores, ids = index.search(query.reshape(1, -1), k + len(exclude_ids) + 8)
            pairs = [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True)
                     if i >= 0 and int(i) not in exclude_ids]
            if kind == "image":
                recs = self.store.records([i for _, i in pairs], conn)
                live = [(s, recs[i]) for s, i in pairs if i in recs][:k]
                return [Hit(n + 1, s, r.path, r.id, r.width, r.height)
                        for n, (s, r) in enumerate(live)]
            texts = self.store.texts([i for _, i in pairs], conn)
            found = [(s, i) for s, i in pairs if i in texts][:k]
            return [TextHit(n + 1, s, texts[i][0], i, texts[i][1])
                    for n, (s, i) in enumerate(found)]

    def _image_query(self, image: ImageInput) -> tuple[np.ndarray, str | None]:
        spec = self.encoder.image_spec
        path: str | None = None
        if isinstance(image, bytes):
            data = image
        else:
            path = absolute(image)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ImageError(
                    f"cannot read the query image {path}: {exc.strerror or exc}"
                ) from exc
        try:
            decoded = decode_bytes(data, spec, max_pixels=self.settings.max_pixels)
        except DecodeError as exc:
            where = f" {path}" if path else ""
            raise ImageError(f"the query image{where} cannot be used: {exc.reason}") from exc
        return self.encoder.encode_images(decoded.pixels[None])[0], path

    def text_truncation(self, text: str) -> int | None:
        """The model's text length limit in tokens when ``text`` exceeds it (and was therefore
        cut), else None."""
        texts = self._text_encoder()
        limit = getattr(texts, "text_token_limit", None)
        count = getattr(texts, "count_text_tokens", None)
        if limit is None or count is None:
            return None
        return int(limit) if count(text) > limit else None

    def info(self) -> IndexInfo:
        counts = self.store.counts()
        state = self.manifest.vectors.get("image")
        return IndexInfo(
            path=str(self.layout.root),
            images=counts["images"],
            texts=counts["texts"],
            failed=counts["failed"],
            model=self.manifest.model_spec,
            model_id=self.manifest.model_id,
            dim=self.manifest.dim,
            index_type=state.index_type if state else "Flat",
            bytes=self.layout.size_on_disk(),
            created=self.manifest.created,
            updated=self.manifest.updated,
        )

    def failed(self) -> list[FileRecord]:
        """Files that could not be indexed, with the reason."""
        return self.store.failed_files()

    def image_vector(self, ident: int) -> np.ndarray | None:
        """The stored vector of an indexed image (for "more like this")."""
        with self.store.read() as conn:
            return self.store.image_vectors([ident], conn).get(ident)

    # --- FAISS files -----------------------------------------------------------------------
    def _refresh(
        self, kind: Kind, conn: Any, *, writable: bool = False, reload: bool = False
    ) -> tuple[VectorIndex, int]:
        """The FAISS index of ``kind``, brought up to the store snapshot ``conn``. Searches use
        a memory-mapped read-only copy; writers (``writable``) load it in memory, and a
        ``reload`` checks every id against the store first."""
        cached = self._vectors.get(kind)
        if cached is None or reload or (writable and not cached[0].writable):
            self.manifest = self._current_manifest()
            cached = load_synced(self.layout, self.manifest, self.store, kind, conn,
                                 writable=writable,
                                 exact_limit=self.settings.exact_search_limit)
        else:
            index, seq = cached
            current = self.store.seq(conn)
            if current != seq:
                delta = self.store.changes_since(kind, seq, conn)
                index.remove(delta.removed)
                index.add(delta.added_ids, delta.added_vectors)
                cached = (index, delta.seq)
        self._vectors[kind] = cached
        return cached

    def _current_manifest(self) -> Manifest:
        try:
            return self.layout.read_manifest()
        except IndexNotFoundError:
            return self.manifest

    def _save(self, kind: Kind, rebuilder: Rebuilder = rebuild) -> None:
        """Write the FAISS file of ``kind`` (rebuilt as another type, by ``rebuilder``, when
        the collection has outgrown its current one). Writers only."""
        with self.store.read() as conn:
            index, seq = self._refresh(kind, conn, writable=True)
            if index.needs_rebuild(self.settings.exact_search_limit):
                index, seq = rebuilder(self.store, kind, self.manifest.dim, conn,
                                       exact_limit=self.settings.exact_search_limit)
                self._vectors[kind] = (index, seq)
        save_synced(self.layout, self.manifest, kind, index, seq)

    def _maybe_save(self, kind: Kind, rebuilder: Rebuilder = rebuild) -> None:
        """During long runs, rewrite the FAISS file once enough has changed that readers
        would spend noticeable time catching up from the store."""
        state = self.manifest.vectors.get(kind)
        saved_seq, saved_count = (state.seq, state.count) if state else (0, 0)
        with self.store.read() as conn:
            changed = self.store.count_changed_since(kind, saved_seq, conn)
            if changed < max(20_000, saved_count // 10):
                return
        self._save(kind, rebuilder)


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


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()

