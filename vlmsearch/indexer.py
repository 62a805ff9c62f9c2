"""Sources → decode → encode → store, incrementally.

The indexer takes its store and encoder as constructor arguments (tests pass fakes). It never
prints: it reports through a progress callback and returns an :class:`IndexReport`.

Incremental rules, per file under the roots:

* same size and mtime as stored and indexed before → *unchanged* (not read at all);
* new, changed, or failed before → read, hashed and decoded; if its content digest already has a
  vector (a moved, renamed or duplicate file) that vector is reused instead of encoding again;
* stored but not found any more (or now excluded) → *removed*.

Work is committed to the store every ``checkpoint_images`` images or ``checkpoint_seconds``
seconds in one transaction, so a crash or Ctrl-C loses at most one checkpoint of work.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .config import Settings
from .decode import DecodedImage, DecodeError
from .encoders.base import Encoder
from .pipeline import decode_parallel
from .sources import FileRef, walk
from .store.metadata import FailedFile, FileState, IndexedFile, MetadataStore


@dataclass(frozen=True)
class Progress:
    """A progress report. ``phase`` is ``scanning`` (``total`` unknown), ``indexing`` or
    ``saving``; ``done``/``total`` count files."""

    phase: str
    done: int
    total: int | None = None


ProgressCallback = Callable[[Progress], None]


def _no_progress(_: Progress) -> None:
    return None


@dataclass
class IndexReport:
    """What an index run did. Every file under the roots is counted once in ``added``,
    ``updated``, ``unchanged`` or ``skipped``; ``removed`` counts stored files not found any
    more. ``reused`` (part of added + updated) took a stored vector by content digest instead of
    being encoded; ``encoded`` went through the model."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    reused: int = 0
    encoded: int = 0
    seconds: float = 0.0
    interrupted: bool = False
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of every file skipped in this run."""
    walk_problems: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of folders and links that could not be walked."""

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["skipped_files"] = [{"path": p, "reason": r} for p, r in self.skipped_files]
        data["walk_problems"] = [{"path": p, "reason": r} for p, r in self.walk_problems]
        return data


@dataclass
class _Pending:
    """One checkpoint's worth of results, not yet committed."""

    indexed: list[IndexedFile] = field(default_factory=list)
    failed: list[FailedFile] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.indexed) + len(self.failed)


class Indexer:
    """Brings the store up to date with the files under some roots."""

    def __init__(
        self,
        store: MetadataStore,
        encoder: Encoder,
        settings: Settings,
        *,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.on_commit = on_commit or (lambda seq: None)

    def run(
        self,
        roots: Sequence[str],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        progress: ProgressCallback = _no_progress,
    ) -> IndexReport:
        start = time.perf_counter()
        report = IndexReport()
        files: list[FileRef] = []
        for ref in walk(
            roots, exclude=exclude, extensions=self.settings.extensions,
            follow_symlinks=self.settings.follow_symlinks, include_hidden=include_hidden,
            on_problem=lambda p, r: report.walk_problems.append((p, r)),
        ):
            files.append(ref)
            if len(files) % 1000 == 0:
                progress(Progress("scanning", len(files)))
        progress(Progress("scanning", len(files)))

        known = self.store.file_states(list({os.path.abspath(r) for r in roots}))
        seen = {f.path for f in files}
        removed_ids = [s.id for path, s in known.items() if path not in seen]
        todo: list[tuple[FileRef, FileState | None]] = []
        for ref in files:
            state = known.get(ref.path)
            if (state is not None and state.status == "ok" and state.size == ref.size
                    and state.mtime_ns == ref.mtime_ns):
                report.unchanged += 1
            else:
                todo.append((ref, state))
        total = len(todo)
        progress(Progress("indexing", 0, total))
        try:
            self._process(todo, report, progress, removed_ids)
        except KeyboardInterrupt:
            report.interrupted = True
            raise
        finally:
            report.seconds = time.perf_counter() - start
        return report

    # --- the pipeline ------------------------------------------------------------------------
    def _process(
        self,
        todo: list[tuple[FileRef, FileState | None]],
        report: IndexReport,
        progress: ProgressCallback,
        removed_ids: list[int],
    ) -> None:
        pending = _Pending()
        last_commit = time.monotonic()
        done = 0
        batch: list[tuple[FileRef, FileState | None, DecodedImage]] = []

        def commit(final: bool = False) -> None:
            nonlocal pending, last_commit
            if not pending and not (final and removed_ids):
                return
            seq = self.store.apply(pending.indexed, pending.failed,
                                   removed_ids if final else ())
            pending = _Pending()
            last_commit = time.monotonic()
            self.on_commit(seq)

        try:
            decoded = decode_parallel(
                todo, lambda item: item[0].path, self.encoder.image_spec,
                max_pixels=self.settings.max_pixels, workers=self.settings.decode_workers,
                window=self.settings.batch_size * 2,
            )
            for (ref, state), result in decoded:
                if isinstance(result, DecodeError):
                    done += 1
                    if not result.vanished:
                        report.skipped += 1
                        report.skipped_files.append((ref.path, result.reason))
                        pending.failed.append(
                            FailedFile(ref.path, ref.size, ref.mtime_ns, result.reason))
                    elif state is not None:
                        removed_ids.append(state.id)
                else:
                    batch.append((ref, state, result))
                    if len(batch) < self.settings.batch_size:
                        continue
                    done += self._encode_batch(batch, pending, report)
                    batch = []
                progress(Progress("indexing", done, len(todo)))
                if (len(pending) >= self.settings.checkpoint_images
                        or time.monotonic() - last_commit >= self.settings.checkpoint_seconds):
                    commit()
            if batch:
                done += self._encode_batch(batch, pending, report)
                progress(Progress("indexing", done, len(todo)))
            report.removed = len(removed_ids)
            commit(final=True)
        except KeyboardInterrupt:
            # Keep every finished image: committing is one short transaction.
            if batch:
                self._encode_batch(batch, pending, report)
            commit()
            raise

    def _encode_batch(
        self,
        batch: list[tuple[FileRef, FileState | None, DecodedImage]],
        pending: _Pending,
        report: IndexReport,
    ) -> int:
        digests = [d.digest for _, _, d in batch]
        stored = self.store.known_digests(digests)
        fresh = [i for i, d in enumerate(digests) if d not in stored and d not in pending.vectors]
        # duplicates inside the batch are encoded once
        unique: dict[str, int] = {}
        for i in fresh:
            unique.setdefault(digests[i], i)
        if unique:
            pixels = np.stack([batch[i][2].pixels for i in unique.values()])
            vectors = self.encoder.encode_images(pixels)
            for digest, vec in zip(unique, vectors, strict=True):
                pending.vectors[digest] = vec
            report.encoded += len(unique)
        encoded_rows = set(unique.values())
        for row, (ref, state, decoded) in enumerate(batch):
            digest = decoded.digest
            if row not in encoded_rows:  # a stored vector, or a copy of a file just encoded
                report.reused += 1
            vector = pending.vectors.get(digest) if digest not in stored else None
            pending.indexed.append(IndexedFile(
                ref.path, ref.size, ref.mtime_ns, digest, decoded.width, decoded.height, vector))
            if state is not None and state.status == "ok":
                report.updated += 1
            else:
                report.added += 1
        return len(batch)
