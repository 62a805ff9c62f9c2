"""Decoding many files in parallel, and embedding them in batches.

The indexer, the evaluator and the trainer's feature extraction all use these two functions, so
every image reaches a model through the same decode → encode path.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

import numpy as np

from .decode import DecodedImage, DecodeError, ImageSpec, decode_file
from .encoders.base import Encoder

T = TypeVar("T")


def decode_parallel(
    items: Iterable[T],
    path_of: Callable[[T], str],
    spec: ImageSpec,
    *,
    max_pixels: int,
    workers: int = 0,
    window: int = 64,
) -> Iterator[tuple[T, DecodedImage | DecodeError]]:
    """Decode ``items`` in worker threads (Pillow releases the GIL while decoding and resizing),
    with at most ``window`` images in flight, yielding ``(item, result)`` in input order. A file
    that cannot be decoded yields its :class:`DecodeError` instead of raising."""
    n_workers = workers or max(1, os.cpu_count() or 1)
    window = max(window, n_workers * 4)

    def job(path: str) -> DecodedImage | DecodeError:
        try:
            return decode_file(path, spec, max_pixels=max_pixels)
        except DecodeError as exc:
            return exc

    with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="vlmsearch-decode") as ex:
        queue: deque[tuple[T, Future[DecodedImage | DecodeError]]] = deque()
        try:
            for item in items:
                queue.append((item, ex.submit(job, path_of(item))))
                if len(queue) >= window:
                    head, fut = queue.popleft()
                    yield head, fut.result()
            while queue:
                head, fut = queue.popleft()
                yield head, fut.result()
        finally:
            for _, fut in queue:
                fut.cancel()


def embed_image_files(
    encoder: Encoder,
    paths: Sequence[str],
    *,
    batch_size: int = 32,
    max_pixels: int = 100_000_000,
    workers: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    """Unit vectors for ``paths`` (N×dim), in order. Raises the first :class:`DecodeError`
    (evaluation and training need every image)."""
    out = np.zeros((len(paths), encoder.dim), dtype=np.float32)
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        rows = [i for i, _ in batch]
        out[rows] = encoder.encode_images(np.stack([p for _, p in batch]))
        batch.clear()

    done = 0
    decoded = decode_parallel(enumerate(paths), lambda item: item[1], encoder.image_spec,
                              max_pixels=max_pixels, workers=workers, window=batch_size * 2)
    for (i, path), result in decoded:
        if isinstance(result, DecodeError):
            raise DecodeError(f"{path}: {result.reason}")
        batch.append((i, result.pixels))
        if len(batch) >= batch_size:
            done += len(batch)
            flush()
            if progress:
                progress(done, len(paths))
    if batch:
        done += len(batch)
        flush()
        if progress:
            progress(done, len(paths))
    return out


def embed_texts(
    encoder: Encoder,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> np.ndarray:
    out = np.zeros((len(texts), encoder.dim), dtype=np.float32)
    for start in range(0, len(texts), batch_size):
        out[start:start + batch_size] = encoder.encode_texts(texts[start:start + batch_size])
        if progress:
            progress(min(start + batch_size, len(texts)), len(texts))
    return out
