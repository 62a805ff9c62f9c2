"""The Ray executor of an index run: the indexer's rules, the cluster's hands.

:class:`RayExecutor` plugs into the one :class:`~vlmsearch.indexing.indexer.Indexer`: the walk,
the incremental plan, the recording, the checkpoints and the report happen in the driver
exactly as in a local run; only the files to (re)read go to the cluster, as a Ray Data dataset
of small blocks, mapped by a pool of encoder actors (see :mod:`vlmsearch.distributed.workers`).
Results stream back in whatever order blocks finish (a block Ray ran twice after a failure is
recorded once), and the driver, the only writer, commits them.

Vectors are reused by content digest as in a local run: workers get the table of digests the
store holds when the run starts and do not encode those contents; a reused digest whose vector
was dropped meanwhile is embedded by the indexer itself before the commit, so a file never
points at a missing vector.

Backpressure: CPU actors decode inside themselves, so a node holds at most
``actors × block_size`` decoded images, plus the blocks queued per actor (paths only). With GPU
actors, decode tasks hand pixel blocks over through the object store, bounded by Ray Data's
object-store budget (``RayOptions.object_store_limit``); see docs/scale.md.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import Settings
from ..encoders.base import Encoder
from ..indexing.executor import FileResult, KnownDigests
from ..photo_meta import PhotoMeta
from ..store.metadata import MetadataStore
from ..store.schema import VECTORS, Kind
from ..store.sync import Rebuilder, SaveProgress, rebuild
from ..store.vectors import VectorIndex
from .cluster import ClusterResources, import_ray, ray_session, worker_error
from .options import RayOptions
from .shards import fill_on_cluster
from .workers import BlockEncoder, decode_block, known_table

log = logging.getLogger("vlmsearch.distributed")


class RayExecutor:
    """See the module docstring. Use inside :meth:`session`."""

    def __init__(
        self,
        store: MetadataStore,
        encoder: Encoder,
        settings: Settings,
        *,
        options: RayOptions | None = None,
    ) -> None:
        self.store = store
        self.encoder = encoder
        self.settings = settings
        self.options = options or RayOptions()
        self._resources: ClusterResources | None = None
        self._stack: ExitStack | None = None

    @contextmanager
    def session(self) -> Iterator[None]:
        """The scope of one run and its FAISS build. Ray is connected on first need only, so
        a run with nothing new to embed never starts or joins a cluster."""
        with ExitStack() as stack:
            self._stack = stack
            try:
                yield
            finally:
                self._stack = None
                self._resources = None

    def _connect(self) -> ClusterResources:
        if self._resources is None:
            if self._stack is None:
                raise RuntimeError("RayExecutor is used outside its session()")
            self._resources = self._stack.enter_context(ray_session(self.options))
        return self._resources

    def explain(self, exc: Exception) -> Exception:
        return worker_error(exc)

    @property
    def rebuilder(self) -> Rebuilder:
        return self._rebuild

    def _rebuild(
        self, store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int,
        progress: SaveProgress | None = None,
    ) -> tuple[VectorIndex, int]:
        """The engine's FAISS rebuild, with the IVF filled in shards on the cluster."""
        if not self.options.shard_build or store.live_count(kind, conn) <= exact_limit:
            return rebuild(store, kind, dim, conn, exact_limit=exact_limit, progress=progress)
        self._connect()
        return rebuild(store, kind, dim, conn, exact_limit=exact_limit, progress=progress,
                       fill=fill_on_cluster)

    def results(self, paths: Sequence[str], known: KnownDigests) -> Iterator[list[FileResult]]:
        """Per-file results, block by block as blocks finish on the cluster."""
        for block in self._blocks(paths):
            yield [_result(block, row) for row in range(len(block["i"]))]

    # --- the Ray Data job ----------------------------------------------------------------------
    def _blocks(self, paths: Sequence[str]) -> Iterator[dict[str, np.ndarray]]:
        """Result blocks as they finish (see :mod:`vlmsearch.distributed.workers`)."""
        resources = self._connect()
        ray = import_ray()
        from ray.data import ActorPoolStrategy, DataContext

        opts = self.options
        ctx = DataContext.get_current()
        ctx.enable_progress_bars = False
        ctx.print_on_execution_start = False
        ctx.enable_auto_log_stats = False
        ctx.execution_options.preserve_order = False
        if opts.object_store_limit:
            ctx.execution_options.resource_limits = (
                ctx.execution_options.resource_limits.copy(
                    object_store_memory=opts.object_store_limit))

        # In a list: Ray passes the reference itself, and each actor fetches the table once
        # (shared by the actors of a node) instead of Ray pinning it as a constructor argument.
        known = [ray.put(known_table(self._stored_digests()))]
        items = [{"i": i, "path": path} for i, path in enumerate(paths)]
        n_blocks = max(1, math.ceil(len(items) / opts.block_size))
        ds = ray.data.from_items(items, override_num_blocks=n_blocks)
        gpu = opts.gpus_per_worker > 0
        if gpu:
            actors = opts.workers or max(1, int(resources.gpus // opts.gpus_per_worker))
        else:
            actors = opts.workers or max(1, int(resources.cpus))
        actors = max(1, min(actors, n_blocks))
        common = {"model_spec": self.encoder.spec, "model_id": self.encoder.model_id,
                  "device": "cuda" if gpu else "cpu", "batch_size": self.settings.batch_size,
                  "max_pixels": self.settings.max_pixels}
        # Ray Data restarts a killed actor and retries its blocks without limit
        # (max_restarts=-1, max_task_retries=-1 are its defaults for actor pools).
        pool = ActorPoolStrategy(size=actors,
                                 max_tasks_in_flight_per_actor=opts.max_in_flight_blocks)
        if gpu:
            ds = ds.map_batches(
                decode_block, batch_size=opts.block_size, num_cpus=opts.decode_cpus,
                fn_kwargs={"spec": self.encoder.image_spec,
                           "max_pixels": self.settings.max_pixels, "known": known,
                           "threads": max(1, int(opts.decode_cpus))})
            ds = ds.map_batches(
                BlockEncoder, batch_size=opts.block_size, compute=pool,
                num_gpus=opts.gpus_per_worker, num_cpus=1,
                fn_constructor_kwargs={**common, "known": None, "decode": False})
        else:
            ds = ds.map_batches(
                BlockEncoder, batch_size=opts.block_size, compute=pool, num_cpus=1,
                fn_constructor_kwargs={**common, "known": known, "decode": True,
                                       "threads": 1})
        log.info("ray: %d files in %d blocks on %d %s actors", len(items), n_blocks, actors,
                 "GPU" if gpu else "CPU")
        yield from ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1)

    def _stored_digests(self) -> list[str]:
        with self.store.read() as conn:
            return [str(d) for d in conn.execute(sa.select(VECTORS.c.digest)).scalars()]



def _result(block: dict[str, np.ndarray], row: int) -> FileResult:
    item = int(block["i"][row])
    error = str(block["error"][row])
    if error:
        return FileResult(item, error=error, vanished=bool(block["vanished"][row]))
    vector: Any = None
    phash: int | None = None
    if bool(block["has_vector"][row]):
        vector = np.array(block["vector"][row], dtype=np.float32)
        phash = int(block["phash"][row])
    meta = PhotoMeta(**json.loads(str(block["meta"][row]))) if block["meta"][row] else PhotoMeta()
    return FileResult(item, str(block["digest"][row]), int(block["width"][row]),
                      int(block["height"][row]), vector, meta=meta, phash=phash)
