"""The IVF index of a large collection, filled in shards on the cluster.

The driver trains the coarse quantizer and the half-precision codes once, on a sample
(:func:`vlmsearch.store.vectors.train_ivf`), and streams the collection out of the store in
chunks (:func:`vlmsearch.store.sync.rebuild`). :func:`fill_on_cluster` gathers the chunks into
shard-sized slices and sends each to a Ray task, which adds it to an empty clone of the trained
index and returns it; the driver merges the shards as they arrive. Adding is where the CPU time
goes for big collections (every vector is compared with every cell centroid), and it is what
the shards spread out. At most ``IN_FLIGHT`` slices are out at once, so the driver never holds
more of the collection than that.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import faiss
import numpy as np

from ..store.vectors import fill_shard

log = logging.getLogger("vlmsearch.distributed")

SHARD_BYTES = 256 * 2**20
"""float32 input per shard task (a 512-d shard of 128k vectors, ~130 MB of codes)."""
IN_FLIGHT = 4


def _fill_serialized(trained: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Ray task body: deserialize the trained index, add a slice, serialize the shard."""
    shard = fill_shard(faiss.deserialize_index(trained), ids, vectors)
    return faiss.serialize_index(shard)


def fill_on_cluster(
    trained: Any, chunks: Iterator[tuple[np.ndarray, np.ndarray]]
) -> Iterator[Any]:
    """A :data:`~vlmsearch.store.vectors.ShardFiller` running on the connected Ray cluster."""
    import ray

    trained_ref = ray.put(faiss.serialize_index(trained))
    task = ray.remote(num_cpus=1, max_retries=3)(_fill_serialized)
    pending: list[Any] = []
    sent = 0

    def arrived(block: bool) -> Iterator[Any]:
        nonlocal pending
        while pending and (block or len(pending) >= IN_FLIGHT):
            done, pending = ray.wait(pending, num_returns=1)
            yield faiss.deserialize_index(ray.get(done[0]))

    for ids, vecs in _slices(chunks, SHARD_BYTES):
        pending.append(task.remote(trained_ref, ids, vecs))
        sent += 1
        yield from arrived(block=False)
    log.info("filled %d IVF shards on the cluster", sent)
    yield from arrived(block=True)


def _slices(
    chunks: Iterator[tuple[np.ndarray, np.ndarray]], max_bytes: int
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The chunks regrouped into slices of about ``max_bytes`` of vectors."""
    ids: list[np.ndarray] = []
    vecs: list[np.ndarray] = []
    size = 0
    for chunk_ids, chunk_vecs in chunks:
        ids.append(chunk_ids)
        vecs.append(chunk_vecs)
        size += chunk_vecs.nbytes
        if size >= max_bytes:
            yield np.concatenate(ids), np.concatenate(vecs)
            ids, vecs, size = [], [], 0
    if ids:
        yield np.concatenate(ids), np.concatenate(vecs)
