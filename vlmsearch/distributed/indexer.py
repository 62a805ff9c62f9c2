"""The driver of a Ray indexing run: the local indexer's rules, the cluster's hands.

:class:`RayIndexer` is the local :class:`~vlmsearch.indexer.Indexer` with another
``_process``: the walk and the incremental classification (unchanged / new / changed / removed
by size and mtime) happen here, in the driver, exactly as in a local run; only the files to
(re)read go to the cluster, as a Ray Data dataset of small blocks, mapped by a pool of encoder
actors (see :mod:`vlmsearch.distributed.workers`). Results stream back in whatever order blocks
finish, and the driver, the only writer, commits them in the same checkpoints as a local run
(``MetadataStore.apply``): ids come from the store, a crash loses at most one checkpoint, and the
report has the same fields and counts.

Vectors are reused by content digest as in a local run: workers get the table of digests the
store holds when the run starts and do not encode those contents; the driver counts a digest it
already committed or queued in this run as reused. A reused digest whose vector was dropped
meanwhile (its last file changed earlier in this run) is embedded by the driver itself before
the commit, so a file never points at a missing vector.

Backpressure: CPU actors decode inside themselves, so a node holds at most
``actors × block_size`` decoded images, plus the blocks queued per actor (paths only). With GPU
actors, decode tasks hand pixel blocks over through the object store, bounded by Ray Data's
object-store budget (``RayOptions.object_store_limit``); see docs/scale.md.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..config import Settings
from ..decode import DecodeError, decode_file
from ..encoders.base import Encoder
from ..errors import VlmsearchError
from ..indexer import Indexer, IndexReport, Progress, ProgressCallback, _Pending
from ..sources import FileRef
from ..store.metadata import (
    VECTORS,
    FailedFile,
    FileState,
    IndexedFile,
    Kind,
    MetadataStore,
)
from ..store.sync import rebuild
from ..store.vectors import VectorIndex
from .cluster import ClusterResources, import_ray, ray_session, worker_error
from .options import RayOptions
from .shards import rebuild_sharded
from .workers import BlockEncoder, decode_block, known_table

log = logging.getLogger("vlmsearch.distributed")


class RayIndexer(Indexer):
    """See the module docstring. Use inside :meth:`session`."""

    def __init__(
        self,
        store: MetadataStore,
        encoder: Encoder,
        settings: Settings,
        *,
        options: RayOptions | None = None,
        on_commit: Callable[[int], None] | None = None,
    ) -> None:
        super().__init__(store, encoder, settings, on_commit=on_commit)
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
                raise RuntimeError("RayIndexer is used outside its session()")
            self._resources = self._stack.enter_context(ray_session(self.options))
        return self._resources

    def rebuild(
        self, store: MetadataStore, kind: Kind, dim: int, conn: Connection, *, exact_limit: int
    ) -> tuple[VectorIndex, int]:
        """The engine's FAISS rebuild, with the IVF filled in shards on the cluster."""
        if not self.options.shard_build:
            return rebuild(store, kind, dim, conn, exact_limit=exact_limit)
        return rebuild_sharded(store, kind, dim, conn, exact_limit=exact_limit,
                               connect=self._connect)

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
        seen_digests: set[str] = set()  # got a vector in this run (committed or pending)
        done_rows: set[int] = set()

        def commit(final: bool = False) -> None:
            nonlocal pending, last_commit
            if not pending and not (final and removed_ids):
                return
            self._fill_missing_vectors(pending)
            seq = self.store.apply(pending.indexed, pending.failed,
                                   removed_ids if final else ())
            pending = _Pending()
            last_commit = time.monotonic()
            self.on_commit(seq)

        try:
            if todo:
                for block in self._results(todo):
                    for row in range(len(block["i"])):
                        i = int(block["i"][row])
                        if i in done_rows:  # a block Ray ran twice (retry after a failure)
                            continue
                        done_rows.add(i)
                        ref, state = todo[i]
                        self._record(ref, state, block, row, pending, report, removed_ids,
                                     seen_digests)
                    progress(Progress("indexing", len(done_rows), len(todo)))
                    if (len(pending) >= self.settings.checkpoint_images
                            or time.monotonic() - last_commit
                            >= self.settings.checkpoint_seconds):
                        commit()
            report.removed = len(removed_ids)
            commit(final=True)
        except KeyboardInterrupt:
            commit()
            raise
        except Exception as exc:
            commit()  # keep what finished, then explain what failed
            if isinstance(exc, VlmsearchError):
                raise
            raise worker_error(exc) from exc

    def _record(
        self,
        ref: FileRef,
        state: FileState | None,
        block: dict[str, np.ndarray],
        row: int,
        pending: _Pending,
        report: IndexReport,
        removed_ids: list[int],
        seen_digests: set[str],
    ) -> None:
        """One file's result, exactly as the local indexer records it."""
        error = str(block["error"][row])
        if error:
            if not bool(block["vanished"][row]):
                report.skipped += 1
                report.skipped_files.append((ref.path, error))
                pending.failed.append(FailedFile(ref.path, ref.size, ref.mtime_ns, error))
            elif state is not None:
                removed_ids.append(state.id)
            return
        digest = str(block["digest"][row])
        vector: np.ndarray | None = None
        if bool(block["has_vector"][row]) and digest not in seen_digests:
            vector = np.array(block["vector"][row], dtype=np.float32)
            seen_digests.add(digest)
            pending.vectors[digest] = vector
            report.encoded += 1
        else:
            report.reused += 1
        pending.indexed.append(IndexedFile(ref.path, ref.size, ref.mtime_ns, digest,
                                           int(block["width"][row]), int(block["height"][row]),
                                           vector))
        if state is not None and state.status == "ok":
            report.updated += 1
        else:
            report.added += 1

    def _fill_missing_vectors(self, pending: _Pending) -> None:
        """Embed here the few reused contents whose stored vector is gone by now (see the
        module docstring), so the checkpoint never refers to a missing vector."""
        wanted = {f.digest for f in pending.indexed if f.vector is None}
        wanted -= set(pending.vectors)
        if not wanted:
            return
        missing = wanted - self.store.known_digests(wanted)
        if not missing:
            return
        fixed: dict[str, np.ndarray] = {}
        for n, f in enumerate(pending.indexed):
            if f.digest not in missing:
                continue
            if f.digest not in fixed:
                try:
                    decoded = decode_file(f.path, self.encoder.image_spec,
                                          max_pixels=self.settings.max_pixels)
                except DecodeError:
                    continue  # recorded as indexed by a worker a moment ago; retried next run
                if decoded.digest != f.digest:
                    continue
                fixed[f.digest] = self.encoder.encode_images(decoded.pixels[None])[0]
                vec = fixed[f.digest]
            else:
                vec = None  # the first file with this digest carries the vector
            pending.indexed[n] = IndexedFile(f.path, f.size, f.mtime_ns, f.digest, f.width,
                                             f.height, vec)
        # files whose content could not be re-read are left for the next run
        pending.indexed = [f for f in pending.indexed if f.digest not in missing - set(fixed)]
        log.info("embedded %d contents on the driver whose stored vector was dropped earlier "
                 "in this run", len(fixed))

    # --- the Ray Data job ----------------------------------------------------------------------
    def _results(
        self, todo: list[tuple[FileRef, FileState | None]]
    ) -> Iterator[dict[str, np.ndarray]]:
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
        items = [{"i": i, "path": ref.path} for i, (ref, _) in enumerate(todo)]
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

