"""The IVF index of a large collection, built from shards on the cluster.

The driver trains the coarse quantizer and the half-precision codes once, on a sample
(:func:`vlmsearch.store.vectors.train_ivf`); Ray tasks each add one slice of the collection to
an empty clone of the trained index and return it; the driver merges the shards as they arrive
(``merge_from``) and measures recall@10 against exact search on a sample, like the local build
(:meth:`VectorIndex.from_shards`). Adding is where the CPU time goes for big collections (every
vector is compared with every cell centroid), and it is what the shards spread out.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Callable, Iterator
from typing import Any

import faiss
import numpy as np
from sqlalchemy.engine import Connection

from ..store.metadata import Kind, MetadataStore
from ..store.vectors import VectorIndex, fill_shard, train_ivf

log = logging.getLogger("vlmsearch.distributed")

SHARD_VECTORS = 250_000
"""Vectors per shard task: a 512-d shard is 0.5 GB of float32 input and ~130 MB of codes."""


def _fill_serialized(trained: np.ndarray, ids: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Ray task body: deserialize the trained index, add a slice, serialize the shard."""
    shard = fill_shard(faiss.deserialize_index(trained), ids, vectors)
    return faiss.serialize_index(shard)


def build_sharded(
    ids: np.ndarray,
    vectors: np.ndarray,
    *,
    dim: int,
    exact_limit: int,
    shards: int = 0,
    seed: int = 0,
) -> VectorIndex:
    """:meth:`VectorIndex.build`, with the adding spread over Ray tasks (needs a connected
    driver). Exact indexes (up to ``exact_limit`` vectors) are built here directly."""
    if len(ids) <= exact_limit:
        return VectorIndex.build(dim, ids, vectors, exact_limit=exact_limit, seed=seed)
    import ray

    ids = np.ascontiguousarray(ids, dtype=np.int64)
    vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), dim)
    n_shards = shards or max(2, math.ceil(len(ids) / SHARD_VECTORS))
    trained = train_ivf(vecs, seed=seed)
    trained_ref = ray.put(faiss.serialize_index(trained))
    task = ray.remote(num_cpus=1, max_retries=3)(_fill_serialized)
    bounds = np.linspace(0, len(ids), n_shards + 1).astype(int)
    pending = [task.remote(trained_ref, ids[a:b], vecs[a:b])
               for a, b in itertools.pairwise(bounds) if b > a]
    log.info("filling %d IVF shards of %d vectors on the cluster", len(pending), len(ids))

    def arrived() -> Iterator[Any]:
        nonlocal pending
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            yield faiss.deserialize_index(ray.get(done[0]))

    return VectorIndex.from_shards(dim, trained, arrived(), ids, vecs, seed=seed)


def rebuild_sharded(
    store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int,
    connect: Callable[[], object] = lambda: None,
) -> tuple[VectorIndex, int]:
    """A :class:`~vlmsearch.store.sync.Rebuilder` that builds with :func:`build_sharded`;
    ``connect`` joins the cluster when the collection needs an IVF index."""
    everything = store.all_vectors(kind, conn)
    if len(everything.added_ids) > exact_limit:
        connect()
    index = build_sharded(everything.added_ids, everything.added_vectors, dim=dim,
                          exact_limit=exact_limit)
    return index, everything.seq
