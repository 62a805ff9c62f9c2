"""Reading text in pictures during an index run, beside the embedding (``--ocr``).

One background thread runs :class:`vlmsearch.ocr.TextReader` on each content (digest) that has
not been read yet, while the executor keeps embedding: the two overlap, and OCR's ONNX Runtime
uses one thread so it does not starve the model. Results join the run's checkpoints, so a
crash loses at most what was read since the last one, and the next run reads what is missing
(the plan asks the store for indexed contents without text read).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

from ..ocr import OcrResult, TextReader
from ..store.metadata import MetadataStore


class OcrStage:
    def __init__(self, reader: TextReader, store: MetadataStore, *, max_pixels: int) -> None:
        self.reader = reader
        self.store = store
        self.max_pixels = max_pixels
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vlmsearch-ocr")
        self._seen: set[str] = set()
        self._queue: deque[tuple[str, Future[OcrResult]]] = deque()

    @property
    def outstanding(self) -> int:
        return len(self._queue)

    def want(self, items: Iterable[tuple[str, str]], *, known: bool = False) -> None:
        """Read the text of these (digest, path) unless already read (``known``: the caller
        knows they are not) or asked for in this run."""
        fresh = {d: p for d, p in items if d and d not in self._seen}
        if not fresh:
            return
        done = set() if known else self.store.known_ocr(fresh)
        for digest, path in fresh.items():
            self._seen.add(digest)
            if digest not in done:
                self._queue.append((digest, self._pool.submit(
                    self.reader.read_file, path, max_pixels=self.max_pixels)))

    def finished(self) -> list[tuple[str, OcrResult]]:
        """Results ready now, in the order they were asked for (never waits)."""
        out = []
        while self._queue and self._queue[0][1].done():
            digest, future = self._queue.popleft()
            out.append((digest, future.result()))
        return out

    def remaining(self) -> Iterator[tuple[str, OcrResult]]:
        """Every result still to come, waiting for each."""
        while self._queue:
            digest, future = self._queue.popleft()
            yield digest, future.result()

    def close(self) -> None:
        for _, future in self._queue:
            future.cancel()
        self._queue.clear()
        self._pool.shutdown(wait=True, cancel_futures=True)
