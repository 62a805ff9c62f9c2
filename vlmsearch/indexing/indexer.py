"""The one indexing loop: sources → plan → an executor's per-file results → the store.

The indexer takes its store, encoder and executor as constructor arguments (tests pass fakes).
It never prints: it reports through a progress callback and returns an :class:`IndexReport`,
made here for every executor, so a local run and a Ray run report the same way.

Work is committed to the store every ``checkpoint_images`` files or ``checkpoint_seconds``
seconds in one transaction, so a crash loses at most one checkpoint of work, and Ctrl-C keeps
everything that finished (see :mod:`vlmsearch.indexing.plan` for which files are read).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..config import Settings
from ..decode import DecodeError, decode_file
from ..encoders.base import Encoder
from ..errors import VlmsearchError
from ..ocr import OcrResult, TextReader
from ..phash import phash
from ..photo_meta import PhotoMeta, read_file_meta
from ..places import Place, place_for
from ..sources import FileRef
from ..store.metadata import MetadataStore
from ..store.records import FailedFile, FileState, IndexedFile
from .executor import Executor, FileResult, LocalExecutor
from .ocr_stage import OcrStage
from .plan import Plan, make_plan
from .report import IndexReport, Progress, ProgressCallback, no_progress

log = logging.getLogger("vlmsearch.indexing")

BACKFILL_CHUNK = 500


def place_of(meta: PhotoMeta) -> Place:
    """The place names of a photo's GPS position (none without one)."""
    if meta.lat is None or meta.lon is None:
        return Place()
    return place_for(meta.lat, meta.lon)


@dataclass
class _Pending:
    """One checkpoint's worth of results, not yet committed."""

    indexed: list[IndexedFile] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    ocr: list[tuple[str, OcrResult]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.indexed) + len(self.failed) + len(self.ocr)


class Indexer:
    """Brings the store up to date with the files under some roots."""

    def __init__(
        self,
        store: MetadataStore,
        encoder: Encoder,
        settings: Settings,
        *,
        executor: Executor | None = None,
        on_commit: Callable[[int], None] | None = None,
        text_reader: TextReader | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.executor: Executor = executor or LocalExecutor(encoder, settings)
        self.on_commit = on_commit or (lambda seq: None)
        self.text_reader = text_reader
        """Reads text in pictures when the index has ``--ocr`` on (None: it has not)."""

    def run(
        self,
        roots: Sequence[str],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        progress: ProgressCallback = no_progress,
    ) -> IndexReport:
        start = time.perf_counter()
        plan = make_plan(self.store, roots, self.settings, exclude=exclude,
                         include_hidden=include_hidden, progress=progress)
        report = IndexReport(unchanged=plan.unchanged, unavailable=len(plan.kept_ids),
                             walk_problems=plan.walk_problems,
                             unavailable_places=plan.unavailable_places,
                             missing_roots=plan.missing_roots)
        ocr = None
        if self.text_reader is not None:
            ocr = OcrStage(self.text_reader, self.store, max_pixels=self.settings.max_pixels)
            key = self.store.keys.key
            rereading = {key(ref.path) for ref, _ in plan.todo}
            ocr.want([(d, p) for d, p in self.store.missing_ocr(roots)
                      if key(p) not in rereading], known=True)
        try:
            if plan.backfill:
                self._backfill(plan.backfill, report, progress)
            _Run(self, plan, report, progress, ocr).execute()
        finally:
            if ocr is not None:
                ocr.close()
            report.seconds = time.perf_counter() - start
        return report

    def _backfill(self, files: list[tuple[int, str]], report: IndexReport,
                  progress: ProgressCallback) -> None:
        """Read the photo metadata of already indexed files from their headers (threads: it
        is I/O), committing in chunks so an interrupted backfill resumes where it stopped."""
        start = time.perf_counter()
        total = len(files)
        progress(Progress("metadata", 0, total))
        workers = self.settings.decode_workers or max(1, (os.cpu_count() or 1))
        with ThreadPoolExecutor(max_workers=workers,
                                thread_name_prefix="vlmsearch-meta") as pool:
            for begin in range(0, total, BACKFILL_CHUNK):
                chunk = files[begin:begin + BACKFILL_CHUNK]
                metas = list(pool.map(read_file_meta, [path for _, path in chunk]))
                self.store.update_photo_meta(
                    [(ident, meta, place_of(meta)) for (ident, _), meta in zip(chunk, metas,
                                                                               strict=True)])
                report.metadata_read += len(chunk)
                progress(Progress("metadata", report.metadata_read, total))
        report.metadata_seconds = time.perf_counter() - start
        log.info("read the photo metadata of %d indexed files in %.1f s", total,
                 report.metadata_seconds)


class _Run:
    """The state of one run between its plan and its report."""

    def __init__(self, indexer: Indexer, plan: Plan, report: IndexReport,
                 progress: ProgressCallback, ocr: OcrStage | None = None) -> None:
        self.indexer = indexer
        self.ocr = ocr
        self.store = indexer.store
        self.plan = plan
        self.report = report
        self.progress = progress
        self.pending = _Pending()
        self.removed_ids = list(plan.removed_ids)
        self.encoded_digests: set[str] = set()  # got a vector from the model in this run
        self.done: set[int] = set()
        self.last_commit = time.monotonic()

    def execute(self) -> None:
        todo = self.plan.todo
        prepare = getattr(self.indexer.encoder, "prepare", None)  # one-time work: own phase
        if todo and prepare is not None:
            prepare(lambda phase: self.progress(Progress(phase, 0, None)), len(todo))
        self.progress(Progress("indexing", 0, len(todo)))
        try:
            if todo:
                paths = [ref.path for ref, _ in todo]
                for results in self.indexer.executor.results(paths, self._known):
                    for result in results:
                        if result.item not in self.done:  # a retried block comes twice
                            self.done.add(result.item)
                            self._record(*todo[result.item], result)
                    if self.ocr is not None:
                        self.ocr.want((r.digest, todo[r.item][0].path) for r in results
                                      if r.error is None)
                        self._take_ocr(self.ocr.finished())
                    self.progress(Progress("indexing", len(self.done), len(todo)))
                    self._maybe_commit()
            if self.ocr is not None and self.ocr.outstanding:
                self._read_remaining_text()
            self.report.removed = len(self.removed_ids)
            self._commit(final=True)
        except KeyboardInterrupt:
            if self.ocr is not None:
                self._take_ocr(self.ocr.finished())
            self._commit()  # keep every finished image: committing is one short transaction
            raise
        except VlmsearchError:
            self._commit()
            raise
        except Exception as exc:
            self._commit()  # keep what finished, then explain what failed
            explained = self.indexer.executor.explain(exc)
            if explained is exc:
                raise
            raise explained from exc

    def _maybe_commit(self) -> None:
        settings = self.indexer.settings
        if (len(self.pending) >= settings.checkpoint_images
                or time.monotonic() - self.last_commit >= settings.checkpoint_seconds):
            self._commit()

    def _take_ocr(self, results: list[tuple[str, OcrResult]]) -> None:
        report = self.report
        for digest, result in results:
            self.pending.ocr.append((digest, result))
            report.ocr_read += 1
            report.ocr_seconds += result.seconds
            if not result.ok:
                report.ocr_failed += 1
            elif result.text:
                report.ocr_with_text += 1

    def _read_remaining_text(self) -> None:
        """The text still being read once every image is embedded, with its own progress."""
        assert self.ocr is not None
        total = self.report.ocr_read + self.ocr.outstanding
        self.progress(Progress("reading text", self.report.ocr_read, total))
        for item in self.ocr.remaining():
            self._take_ocr([item])
            self.progress(Progress("reading text", self.report.ocr_read, total))
            self._maybe_commit()

    def _known(self, digests: Sequence[str]) -> set[str]:
        return self.store.known_digests(digests) | (set(digests) & set(self.pending.vectors))

    def _record(self, ref: FileRef, state: FileState | None, result: FileResult) -> None:
        report, pending = self.report, self.pending
        if result.error is not None:
            if not result.vanished:
                report.skipped += 1
                report.skipped_files.append((ref.path, result.error))
                pending.failed.append(FailedFile(ref.path, ref.size, ref.mtime_ns, result.error))
            elif state is not None:
                self.removed_ids.append(state.id)
            return
        digest = result.digest
        vector: np.ndarray | None = None
        if result.vector is not None and digest not in pending.vectors:
            vector = np.asarray(result.vector, dtype=np.float32)
            pending.vectors[digest] = vector
        if result.vector is not None and digest not in self.encoded_digests:
            self.encoded_digests.add(digest)
            report.encoded += 1
        else:  # a stored vector, or a copy of a content encoded earlier in the run
            report.reused += 1
        pending.indexed.append(IndexedFile(ref.path, ref.size, ref.mtime_ns, digest,
                                           result.width, result.height, vector, result.meta,
                                           place_of(result.meta),
                                           result.phash if vector is not None else None))
        if state is not None and state.status == "ok":
            report.updated += 1
        else:
            report.added += 1

    def _commit(self, final: bool = False) -> None:
        plan = self.plan
        if not self.pending and not (final and (self.removed_ids or plan.kept_ids
                                                or plan.back_ids)):
            return
        self._fill_missing_vectors()
        pending = self.pending
        seq = self.store.apply(
            pending.indexed, pending.failed, self.removed_ids if final else (),
            unavailable_ids=plan.kept_ids if final else (),
            available_ids=plan.back_ids if final else (), ocr=pending.ocr)
        self.pending = _Pending()
        self.last_commit = time.monotonic()
        self.indexer.on_commit(seq)

    def _fill_missing_vectors(self) -> None:
        """Embed here the few reused contents whose stored vector is gone by now (the last
        file that had it changed earlier in this run, or a worker skipped a content by a
        table older than the run's own commits), so a checkpoint never refers to a missing
        vector."""
        pending = self.pending
        wanted = {f.digest for f in pending.indexed if f.vector is None} - set(pending.vectors)
        missing = wanted - self.store.known_digests(wanted) if wanted else set()
        if not missing:
            return
        encoder, settings = self.indexer.encoder, self.indexer.settings
        fixed: dict[str, np.ndarray] = {}
        for n, f in enumerate(pending.indexed):
            if f.digest not in missing or f.digest in fixed:
                continue
            try:
                decoded = decode_file(f.path, encoder.image_spec, max_pixels=settings.max_pixels)
            except DecodeError:
                continue  # changed again meanwhile: left for the next run
            if decoded.digest != f.digest:
                continue
            fixed[f.digest] = encoder.encode_images(decoded.pixels[None])[0]
            pending.indexed[n] = IndexedFile(f.path, f.size, f.mtime_ns, f.digest, f.width,
                                             f.height, fixed[f.digest], f.meta, f.place,
                                             phash(decoded.pixels))
        # files whose content could not be re-read are left for the next run
        pending.indexed = [f for f in pending.indexed if f.digest not in missing - set(fixed)]
        pending.vectors.update(fixed)
        log.info("embedded %d contents whose stored vector was dropped earlier in this run",
                 len(fixed))
