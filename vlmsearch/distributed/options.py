"""Options of a Ray indexing run (plain data: importing this never imports Ray)."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import UsageError


@dataclass(frozen=True)
class RayOptions:
    """How ``vlmsearch index --engine ray`` uses a cluster.

    ``address``: ``None`` starts a private Ray instance on this machine; ``auto`` joins the
    cluster this machine is part of (``ray start`` ran here); ``HOST:PORT`` joins a cluster's
    head node (GCS port, usually 6379); ``ray://HOST:10001`` connects through Ray Client.
    """

    address: str | None = None
    workers: int = 0
    """Encoder actors (0: one per GPU with ``gpus_per_worker``, else one per 2 cluster CPUs,
    at least 1)."""
    gpus_per_worker: float = 0.0
    """GPUs each encoder actor reserves (0: CPU actors that decode and encode themselves).
    With GPUs, decoding runs in separate CPU tasks so the GPU never waits on JPEG decoding."""
    block_size: int = 64
    """Files per Ray Data block: the unit of work and of retry after a failure. Small blocks
    bound how many decoded images a node holds at once (see docs/scale.md)."""
    decode_cpus: float = 1.0
    """CPUs reserved by each decode task (GPU mode only)."""
    max_in_flight_blocks: int = 2
    """Blocks queued per encoder actor (Ray Data's ``max_tasks_in_flight_per_actor``)."""
    object_store_limit: int | None = None
    """Bytes of Ray object store the run may fill with blocks before Ray Data backs off
    (default: Ray Data's own share of the cluster's store)."""
    shard_build: bool = True
    """Build an IVF index (collections above ``Settings.exact_search_limit``) from shards
    filled by Ray tasks instead of on the driver alone."""

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise UsageError(f"--ray-workers must be 0 (automatic) or more (got {self.workers})")
        if self.gpus_per_worker < 0:
            raise UsageError(f"--gpus-per-worker must be 0 or more (got {self.gpus_per_worker})")
        if self.block_size < 1:
            raise UsageError(f"the block size must be at least 1 file (got {self.block_size})")
