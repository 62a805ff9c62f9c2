"""The facade apps use: one :class:`Engine` per index folder.

```python
import vlmsearch

with vlmsearch.Engine.open(index_dir="photos-index", model="fake") as eng:
    report = eng.index(["~/Pictures"], progress=print)
    for hit in eng.search(text="a cat chasing a dog", k=5):
        print(hit.rank, hit.score, hit.path)
```

The engine is thin: opening, creating and re-indexing live in :mod:`vlmsearch.store.opening`,
index runs in :mod:`vlmsearch.indexing`, queries in :mod:`vlmsearch.search`. It is the only
thing the CLI and the web layer talk to. It never prints or exits.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from . import native_output
from .config import DEFAULT_MODEL, Settings, index_dir_for
from .duplicates import DuplicateGroup, DuplicateRule, find_groups
from .encoders.base import Encoder
from .encoders.loaded import LoadedModel
from .encoders.registry import load_encoder
from .errors import ModelMismatchError, ModelUnavailableError, UsageError
from .formats import extension_set
from .indexing import Indexer, IndexReport, Progress, ProgressCallback, no_progress
from .indexing.executor import Executor, LocalExecutor
from .ocr import OcrUnavailable, TextReader
from .search import Searcher, SearchRequest, SearchResults
from .search.filters import Filter
from .search.request import ImageInput, Target
from .sources import absolute
from .store.layout import IndexLayout
from .store.opening import IndexHandle, create_index, open_index, switch_model
from .store.records import FileRecord, ModelRecord

if TYPE_CHECKING:
    from .distributed.options import RayOptions
    from .watch import Watcher, WatchOptions

log = logging.getLogger("vlmsearch")
WARM_UP_TEXTS = ("a photo", "照片")
"""Encoded by :meth:`Engine.warm_up`: one Latin-script and one Chinese query, so a model with
a text path per script has each loaded."""

TEXT_BATCH = 256
ENGINES = ("local", "ray")


@dataclass(frozen=True)
class IndexInfo:
    """What ``vlmsearch info`` shows. ``pending``: files waiting to be re-embedded after a
    ``--reindex`` (the next ``index`` run of their folder does it); ``unavailable``: indexed
    files kept while the place holding them could not be reached; ``recall_at_10``: measured
    recall of the approximate search index (None for exact search); ``with_date``,
    ``with_position``, ``with_camera``: images whose own metadata gives a date taken, a GPS
    position, a camera; ``ocr``: whether index runs read the text in pictures; ``with_text``:
    images in which text was read; ``ocr_failed``: contents whose text could not be read;
    ``formats``: indexed images by format (:func:`vlmsearch.formats.format_name`: the
    format's name, or the extension of one added with ``--ext``), most first."""

    path: str
    images: int
    texts: int
    failed: int
    pending: int
    unavailable: int
    with_date: int
    with_position: int
    with_camera: int
    ocr: bool
    with_text: int
    ocr_failed: int
    model: str
    model_id: str
    dim: int
    index_type: str
    recall_at_10: float | None
    bytes: int
    created: str
    updated: str
    formats: dict[str, int]

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
        self, handle: IndexHandle, *, settings: Settings, encoder: Encoder | None = None
    ) -> None:
        self._handle = handle
        self.settings = settings
        manifest = handle.manifest
        self._model = LoadedModel(manifest.model_spec, manifest.model_id,
                                  device=settings.device, encoder=encoder)
        self._searcher = Searcher(handle, lambda: self._model, self._follow_model,
                                  max_pixels=settings.max_pixels)
        self._ocr_reader: _Reader | None = None

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
        existing index it must be the model the index was built with (then it changes
        nothing), unless ``reindex``. Without ``model`` an existing index uses its own, and a
        new one :data:`~vlmsearch.config.DEFAULT_MODEL`.

        ``reindex``: re-embed the index with ``model`` (or afresh with its own): the added
        texts are re-embedded now, every file is marked to be re-embedded by the next
        :meth:`index` run of its folder, and until then it is left out of image results
        (:attr:`IndexInfo.pending` counts them). Crash-safe: the switch is one transaction.

        ``create``: make the index if it does not exist (else :class:`IndexNotFoundError`).

        ``db``: a SQLAlchemy URL (``postgresql+psycopg://USER@HOST:PORT/DBNAME``) to keep a new
        index's metadata in that (empty) database instead of the folder's meta.sqlite. The
        folder records the URL without its password; later opens use it unchanged, with the
        password from ``PGPASSWORD`` or ``~/.pgpass`` (or from ``db`` given again).
        """
        settings = settings or Settings()
        root = index_dir_for(name, index_dir)
        limit = settings.exact_search_limit
        if not IndexLayout(root).exists():
            if not create:
                open_index(root, exact_limit=limit)  # raises IndexNotFoundError
            chosen = _make_encoder(model or DEFAULT_MODEL, settings)
            dim = chosen.dim  # loads the model: fail before creating anything on disk
            check = getattr(chosen, "check_available", None)
            if check is not None:
                check()
            handle = create_index(root, ModelRecord(chosen.spec, chosen.model_id, dim),
                                  db=db, exact_limit=limit)
            return cls(handle, settings=settings, encoder=chosen)
        handle = open_index(root, db=db, exact_limit=limit)
        try:
            encoder = _matching_encoder(handle, model, settings, reindex=reindex)
            if reindex:
                new = encoder or _make_encoder(handle.manifest.model_spec, settings)
                switch_model(handle, ModelRecord(new.spec, new.model_id, new.dim),
                             lambda texts: _embed_texts(new, texts))
                encoder = new
        except BaseException:
            handle.close()
            raise
        return cls(handle, settings=settings, encoder=encoder)

    @property
    def path(self) -> Path:
        """The index folder."""
        return self._handle.layout.root

    @property
    def model(self) -> str:
        """The spec of the index's model."""
        return self._handle.manifest.model_spec

    def warm_up(self) -> None:
        """Load the model now rather than on the first query (a server's start-up): the full
        encoder, and its text side through every path a query may take (a bundle loads its
        text towers on first use, and routes Latin-script and other queries differently; the
        first query after start-up took 5.7 s with only the encoder loaded)."""
        self._model.full.encode_texts(list(WARM_UP_TEXTS))

    def close(self) -> None:
        self._handle.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _follow_model(self, recorded: ModelRecord) -> None:
        """Another process switched the index to ``recorded`` (``index --reindex``): reload,
        so new vectors are never ranked with an old model's query vectors."""
        log.info("the index at %s now uses %s; reloading", self.path, recorded.spec)
        self._handle.reopen()
        self._model = LoadedModel(recorded.spec, recorded.model_id, device=self.settings.device)

    # --- writing ---------------------------------------------------------------------------
    def index(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        progress: ProgressCallback | None = None,
        engine: Literal["local", "ray"] | None = None,
        ray: RayOptions | None = None,
        ocr: bool | None = None,
        add_extensions: Iterable[str] = (),
        only_extensions: Iterable[str] | None = None,
    ) -> IndexReport:
        """Add new and changed images under ``paths``, drop deleted ones (see
        :mod:`vlmsearch.indexing.plan` for the rules). Holds the index's write lock throughout.

        ``engine="ray"`` (the default when ``ray`` options are given) decodes and embeds on a
        Ray cluster (``ray``: its :class:`~vlmsearch.distributed.RayOptions`), with the same
        rules and report; this process stays the only writer (see
        :mod:`vlmsearch.distributed`). ``engine="local"`` with ``ray`` options is an error.

        ``ocr=True`` turns on reading the text in pictures for this index (remembered, like its
        model; ``False`` turns it off; None keeps the index's setting): each content is read
        once, beside the embedding, and what is read becomes searchable (see
        :mod:`vlmsearch.ocr`). Turning it on for an existing index reads its pictures on this
        run, without re-embedding them.

        ``add_extensions`` (``--ext``) adds file name extensions to the indexed ones (the
        settings' ``extensions``, by default every format in :mod:`vlmsearch.formats`);
        ``only_extensions`` (``--only-ext``) indexes these instead. Values such as ``.xyz``
        or ``xyz``, in any case; anything else is a :class:`UsageError`. Indexed files of other
        types are left as they are by this run.
        """
        roots = [absolute(p) for p in paths]
        if not roots:
            raise UsageError("give at least one file or folder to index")
        settings = self.settings
        if only_extensions is not None or add_extensions:
            settings = replace(settings, extensions=extension_set(
                settings.extensions, add=add_extensions, only=only_extensions))
        progress = progress or no_progress
        handle = self._handle
        with handle.layout.write_lock():
            with handle.store.read() as conn:
                state = handle.store.state(conn)
                self._searcher.follow_switch(state)  # another process re-indexed meanwhile
                handle.vectors.current("image", conn, writable=True, reload=True, state=state)
            encoder = self._model.full
            executor = self._executor(engine, ray, encoder, settings)
            reader = self._text_reader(ocr)
            with executor.session(), native_output.capturing():
                indexer = Indexer(handle.store, encoder, settings, executor=executor,
                                  on_commit=lambda seq: handle.vectors.maybe_save(
                                      "image", executor.rebuilder), text_reader=reader)
                report = indexer.run(roots, exclude=exclude, include_hidden=include_hidden,
                                     progress=progress)
                progress(Progress("saving", 0, None))
                handle.vectors.save("image", executor.rebuilder,
                                    progress=lambda d, t: progress(Progress("saving", d, t)))
        self._export_fast_text(progress)
        return report

    def watch(
        self,
        paths: Iterable[str | os.PathLike[str]],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        progress: ProgressCallback | None = None,
        engine: Literal["local", "ray"] | None = None,
        ray: RayOptions | None = None,
        ocr: bool | None = None,
        add_extensions: Iterable[str] = (),
        only_extensions: Iterable[str] | None = None,
        options: WatchOptions | None = None,
    ) -> Watcher:
        """A :class:`~vlmsearch.watch.Watcher` keeping this index in step with the folders
        ``paths`` as files change: iterate its ``rounds()`` (the first is an ordinary
        :meth:`index` run of ``paths``, with these options; then one round per settled batch
        of file system events), ``stop()`` it from any thread. ``options``: polling,
        debounce and settle times (:class:`~vlmsearch.watch.WatchOptions`); the extension
        options as for :meth:`index`."""
        from .watch import Watcher

        return Watcher(self, paths, exclude=exclude, include_hidden=include_hidden,
                       index_engine=engine, ray=ray, ocr=ocr, add_extensions=add_extensions,
                       only_extensions=only_extensions, options=options, progress=progress)

    def _executor(
        self, engine: str | None, ray: RayOptions | None, encoder: Encoder,
        settings: Settings | None = None,
    ) -> Executor:
        settings = settings or self.settings
        engine = engine or ("ray" if ray is not None else "local")
        if engine not in ENGINES:
            raise UsageError(f"unknown indexing engine {engine!r}: use local or ray")
        if engine == "local":
            if ray is not None:
                raise UsageError("Ray options (cluster address, workers, GPUs per worker) need "
                                 "--engine ray (engine='ray')")
            return LocalExecutor(encoder, settings)
        from .distributed.executor import RayExecutor

        return RayExecutor(self._handle.store, encoder, settings, options=ray)

    def _text_reader(self, ocr: bool | None) -> TextReader | None:
        """The OCR reader when the index reads text in pictures (``ocr`` changes that first,
        remembered in the index), checked to load before the run starts."""
        store = self._handle.store
        if ocr is not None and ocr != store.ocr_enabled():
            if ocr:
                self._reader().check_or_raise()
            store.set_ocr_enabled(ocr)
        if not store.ocr_enabled():
            return None
        reader = self._reader()
        reader.check_or_raise()
        return reader.reader

    def _reader(self) -> _Reader:
        if self._ocr_reader is None:
            self._ocr_reader = _Reader()
        return self._ocr_reader

    def _export_fast_text(self, progress: ProgressCallback = no_progress) -> None:
        """Export the text side for fast cold queries while the model is loaded anyway (once
        per model and machine; it takes seconds to a minute)."""
        encoder = self._model.full if self._model.loaded else None
        if encoder is None or getattr(encoder, "device", "none") == "none":
            return
        from .encoders.onnx_text import cache_folder, export_cached

        try:
            cached = (cache_folder(encoder.model_id) / "meta.json").is_file()
        except OSError:  # an unreadable cache folder: export_cached logs and gives up
            cached = False
        if not cached:
            progress(Progress("exporting", 0, None))
            export_cached(encoder)

    def remove(self, paths: Iterable[str | os.PathLike[str]]) -> int:
        """Drop files, and everything under folders, from the index. Returns how many files."""
        targets = [absolute(p) for p in paths]
        handle = self._handle
        with handle.layout.write_lock():
            removed = handle.store.remove_paths(targets)
            if removed:
                handle.vectors.save("image")
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
        start = time.perf_counter()
        progress = progress or no_progress
        unique: dict[str, str] = {}
        for text in texts:
            text = text.strip()
            if text:
                unique.setdefault(_text_digest(text), text)
        handle = self._handle
        with handle.layout.write_lock():
            existing = handle.store.text_digests(list(unique))
            todo = [(d, t) for d, t in unique.items() if d not in existing]
            added = 0
            progress(Progress("indexing", 0, len(todo)))
            step = TEXT_BATCH * 8
            for start_at in range(0, len(todo), step):
                chunk = todo[start_at:start_at + step]
                vecs = _embed_texts(self._model.texts(), [t for _, t in chunk])
                added += handle.store.add_texts([t for _, t in chunk], [d for d, _ in chunk],
                                                vecs, source)
                progress(Progress("indexing", start_at + len(chunk), len(todo)))
            if added:
                handle.vectors.save("text")
        return TextsReport(added, len(unique) - added, time.perf_counter() - start)

    def clear_texts(self) -> int:
        """Remove every text; returns how many."""
        handle = self._handle
        with handle.layout.write_lock():
            n = handle.store.clear_texts()
            handle.vectors.save("text")
        return n

    # --- reading ---------------------------------------------------------------------------
    def search(
        self,
        text: str | None = None,
        image: ImageInput | None = None,
        *,
        like: int | None = None,
        negative: Sequence[str] = (),
        k: int = 10,
        target: Target = "images",
        where: Filter | None = None,
        sort: str | None = None,
        min_score: float | None = None,
        match: str = "both",
    ) -> SearchResults[Any]:
        """Search the index. Returns :class:`~vlmsearch.Hit` (``target="images"``) or
        :class:`~vlmsearch.TextHit` (``target="texts"``) objects, best first, in a list with
        ``warnings`` for the person asking (see :mod:`vlmsearch.search`).

        ``text``: words; ``image``: a file's path or its bytes; ``like``: the id of an indexed
        image ("more like this"); any mix of the three (not ``image`` with ``like``).
        ``negative`` texts push results away. A query image that is itself indexed, and the
        ``like`` image, are left out of image results.

        ``where``: only images matching this :class:`~vlmsearch.Filter` (date, folder, camera,
        place, position, type); the results are the true top ``k`` among the matches. A
        filter alone (no text, image or ``like``) lists its matches by date. ``sort``:
        ``score`` (default with a query), ``date`` (oldest first) or ``-date``; ``min_score``
        drops embedding results below that cosine similarity.

        ``match``: ``both`` (default) also finds the images whose text (read with ``--ocr``) or
        file and folder names contain every word of ``text``, ranked together with the
        embedding's results (:mod:`vlmsearch.search.fusion`); ``semantic``: the embedding
        only; ``text``: the words only. Hits say how they were found (``matched``) and show
        the matching ``ocr`` text."""
        return self._searcher.search(SearchRequest(text, image, like, tuple(negative), k,
                                                   target, where, sort, min_score, match))

    def search_vector(
        self, query: np.ndarray, *, k: int = 10, target: Target = "images",
        exclude_ids: Iterable[int] = (), where: Filter | None = None,
    ) -> SearchResults[Any]:
        """Search with a ready query vector (unit length, the index's dim), optionally among
        the images matching ``where``."""
        return self._searcher.search_vector(query, k=k, target=target,
                                            exclude_ids=set(exclude_ids), where=where)

    def record(self, ident: int) -> FileRecord:
        """The indexed image with id ``ident`` (as search results give it), or
        :class:`~vlmsearch.NotInIndexError`."""
        return self._searcher.record(ident)

    def image_vector(self, ident: int) -> np.ndarray | None:
        """The stored vector of an indexed image (None when it has none)."""
        store = self._handle.store
        with store.read() as conn:
            return store.image_vectors([ident], conn).get(ident)

    def info(self) -> IndexInfo:
        handle = self._handle
        counts = handle.store.counts()
        manifest = handle.current_manifest()
        state = manifest.vectors.get("image")
        return IndexInfo(
            path=str(self.path),
            images=counts["images"],
            texts=counts["texts"],
            failed=counts["failed"],
            pending=counts["pending"],
            unavailable=counts["unavailable"],
            with_date=counts["with_date"],
            with_position=counts["with_position"],
            with_camera=counts["with_camera"],
            ocr=handle.store.ocr_enabled(),
            with_text=counts["with_text"],
            ocr_failed=counts["ocr_failed"],
            model=manifest.model_spec,
            model_id=manifest.model_id,
            dim=manifest.dim,
            index_type=state.index_type if state else "Flat",
            recall_at_10=state.recall_at_10 if state else None,
            bytes=handle.layout.size_on_disk(),
            created=manifest.created,
            updated=manifest.updated,
            formats=handle.store.format_counts(),
        )

    def duplicates(
        self,
        *,
        similar: bool = False,
        min_score: float | None = None,
        rule: DuplicateRule | None = None,
    ) -> list[DuplicateGroup]:
        """Groups of indexed files that hold the same picture: ``exact`` copies (same
        content), ``near`` duplicates (resized, recompressed, slightly cropped or rotated,
        re-exported, colour-tweaked: close vectors *and* close perceptual hashes) and, with
        ``similar``, ``similar`` pictures (burst shots, mirrored copies: close vectors).
        ``min_score``: near links also need at least this cosine (with ``similar``: the
        similar threshold); ``rule`` sets every threshold
        (:class:`~vlmsearch.duplicates.DuplicateRule`, defaults documented there and in the
        README). Found from the stored vectors and hashes; no file is read."""
        chosen = (rule or DuplicateRule()).with_min_score(min_score, similar=similar)
        store = self._handle.store
        with store.read() as conn:
            table = store.contents(conn)
        return find_groups(table, chosen, similar=similar)

    def failed(self) -> list[FileRecord]:
        """Files that could not be indexed, with the reason."""
        return self._handle.store.failed_files()

    def unavailable(self) -> list[FileRecord]:
        """Indexed files kept while the place holding them could not be reached."""
        return self._handle.store.unavailable_files()


class _Reader:
    """The engine's OCR reader, loaded once, with its loading errors as library errors."""

    def __init__(self) -> None:
        self.reader = TextReader()

    def check_or_raise(self) -> None:
        try:
            self.reader.check()
        except OcrUnavailable as exc:
            raise ModelUnavailableError(str(exc)) from exc


def _make_encoder(model: str | Encoder, settings: Settings) -> Encoder:
    if isinstance(model, str):
        return load_encoder(model, device=settings.device)
    return model


def _matching_encoder(
    handle: IndexHandle, model: str | Encoder | None, settings: Settings, *, reindex: bool
) -> Encoder | None:
    """The encoder ``model`` names for the existing index ``handle``: None when that is
    simply the index's own model (nothing to load yet); a :class:`ModelMismatchError` when it
    is another one and this is no ``reindex``."""
    manifest = handle.manifest
    if model is None or (isinstance(model, str) and model.strip() == manifest.model_spec
                         and not reindex):
        return None
    encoder = _make_encoder(model, settings)
    if encoder.model_id != manifest.model_id and not reindex:
        raise ModelMismatchError(
            f"the index at {handle.layout.root} was built with model {manifest.model_spec!r}, "
            f"not {encoder.spec!r}. Leave out --model to use the index's own model, use "
            "another --index, or re-embed every file with the new model: "
            f"`vlmsearch index --reindex --model {encoder.spec} PATH`"
        )
    return encoder


def _embed_texts(encoder: Any, texts: Sequence[str]) -> np.ndarray:
    """Vectors of ``texts``, ``TEXT_BATCH`` at a time."""
    if not texts:
        return np.zeros((0, 0), dtype=np.float32)
    return np.concatenate([encoder.encode_texts(list(texts[i:i + TEXT_BATCH]))
                           for i in range(0, len(texts), TEXT_BATCH)])


def _text_digest(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
