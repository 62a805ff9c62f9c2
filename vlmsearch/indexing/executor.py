"""What turns files into vectors during an index run.

An executor gets the paths to (re)read and yields, batch by batch, one :class:`FileResult` per
path, in any order: the content digest, pixel size and vector, or why the file could not be
used. It never writes anything: the :class:`~vlmsearch.indexing.indexer.Indexer` records and
commits. Contents whose digest already has a vector need not be encoded again: an executor asks
``known`` (the store and this run's pending work) and leaves ``vector`` out for those.

:class:`LocalExecutor` decodes in threads and encodes with one model in this process;
:class:`vlmsearch.distributed.executor.RayExecutor` does both on a Ray cluster.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from ..config import Settings
from ..decode import DecodedImage, DecodeError
from ..encoders.base import Encoder
from ..phash import phashes
from ..photo_meta import NO_META, PhotoMeta
from ..pipeline import decode_parallel
from ..store.sync import Rebuilder, rebuild

KnownDigests = Callable[[Sequence[str]], set[str]]
"""Which of these content digests already have a vector (in the store or this run)."""


@dataclass(frozen=True, slots=True)
class FileResult:
    """The outcome for the ``item``-th path of the run's to-do list."""

    item: int
    digest: str = ""
    width: int = 0
    height: int = 0
    vector: np.ndarray | None = None
    """None for failed files and for contents that already had a vector."""
    error: str | None = None
    vanished: bool = False
    """The file disappeared before it was read: nothing to record."""
    meta: PhotoMeta = NO_META
    phash: int | None = None
    """The perceptual hash of the decoded pixels (:mod:`vlmsearch.phash`), made with the
    vector (None whenever ``vector`` is)."""


class Executor(Protocol):
    def session(self) -> AbstractContextManager[Any]:
        """The scope of one run and its search-index build (e.g. a cluster connection)."""
        ...

    def results(self, paths: Sequence[str], known: KnownDigests) -> Iterator[list[FileResult]]:
        ...

    def explain(self, exc: Exception) -> Exception:
        """The error to raise for an unexpected failure of the executor's machinery (``exc``
        itself when there is nothing to add)."""
        ...

    @property
    def rebuilder(self) -> Rebuilder:
        """How the search index is rebuilt after the run."""
        ...


class LocalExecutor:
    """Decoder threads feeding batches to one model in this process."""

    def __init__(self, encoder: Encoder, settings: Settings) -> None:
        self.encoder = encoder
        self.settings = settings

    def session(self) -> AbstractContextManager[Any]:
        return nullcontext()

    @property
    def rebuilder(self) -> Rebuilder:
        return rebuild

    def explain(self, exc: Exception) -> Exception:
        return exc

    def results(self, paths: Sequence[str], known: KnownDigests) -> Iterator[list[FileResult]]:
        settings = self.settings
        decoded = decode_parallel(
            enumerate(paths), lambda item: item[1], self.encoder.image_spec,
            max_pixels=settings.max_pixels, workers=settings.decode_workers,
            window=settings.batch_size * 2,
        )
        batch: list[tuple[int, DecodedImage]] = []
        for (item, _), result in decoded:
            if isinstance(result, DecodeError):
                yield [FileResult(item, error=result.reason, vanished=result.vanished)]
                continue
            batch.append((item, result))
            if len(batch) >= settings.batch_size:
                yield self._encode(batch, known)
                batch = []
        if batch:
            yield self._encode(batch, known)

    def _encode(self, batch: list[tuple[int, DecodedImage]], known: KnownDigests
                ) -> list[FileResult]:
        digests = [d.digest for _, d in batch]
        skip = known(digests)
        first: dict[str, int] = {}  # duplicates inside the batch are encoded once
        for row, digest in enumerate(digests):
            if digest not in skip:
                first.setdefault(digest, row)
        vectors: dict[int, np.ndarray] = {}
        hashes: dict[int, int] = {}
        if first:
            rows = list(first.values())
            pixels = np.stack([batch[row][1].pixels for row in rows])
            vectors = dict(zip(rows, self.encoder.encode_images(pixels), strict=True))
            hashes = dict(zip(rows, (int(h) for h in phashes(pixels)), strict=True))
        return [FileResult(item, d.digest, d.width, d.height, vectors.get(row), meta=d.meta,
                           phash=hashes.get(row))
                for row, (item, d) in enumerate(batch)]
