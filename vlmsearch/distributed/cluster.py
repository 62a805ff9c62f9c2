"""Connecting the driver to Ray, with messages that say how to fix what went wrong."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from ..errors import UsageError, VlmsearchError, describe
from .options import RayOptions

log = logging.getLogger("vlmsearch.distributed")


class ClusterError(VlmsearchError):
    """The Ray cluster could not be reached, or a job on it failed."""


def import_ray() -> Any:
    """The ``ray`` module, or a message saying how to install it."""
    try:
        import ray
        import ray.data  # Ray Data ships with ray[data]
    except ImportError as exc:
        raise UsageError(
            f"--engine ray needs Ray Data ({exc.name or 'ray'} is not installed): "
            "pip install 'vlmsearch[scale]'"
        ) from exc
    return ray


@dataclass(frozen=True)
class ClusterResources:
    cpus: float
    gpus: float
    nodes: int


def _describe(address: str | None) -> str:
    return "a new local Ray instance" if address is None else f"the Ray cluster at {address}"


@contextmanager
def ray_session(options: RayOptions) -> Iterator[ClusterResources]:
    """Connect to (or start) Ray for one indexing run; disconnect afterwards. A driver that is
    already connected (an app that called ``ray.init`` itself) is used as it is and left
    connected."""
    ray = import_ray()
    owned = not ray.is_initialized()
    if owned:
        _probe(options.address)
        _quiet_ray_logs()
        kwargs: dict[str, Any] = {"address": options.address, "log_to_driver": False,
                                  "logging_level": logging.ERROR, "configure_logging": True}
        if options.address is None:
            kwargs["include_dashboard"] = False
        try:
            ray.init(**kwargs)
        except (ConnectionError, TimeoutError, RuntimeError, ValueError) as exc:
            hint = ("start one with `ray start --head` on the head node, check the address "
                    "and port (GCS port, usually 6379; ray:// uses the client port, usually "
                    "10001) and that this machine can reach it, and that both run the same "
                    "Ray and Python versions")
            if options.address is None:
                hint = "check free memory and /tmp space, or join a cluster with --ray-address"
            raise ClusterError(
                f"could not connect to {_describe(options.address)}: "
                f"{describe(exc, 300)}"
                f"; {hint}"
            ) from exc
    try:
        total = ray.cluster_resources()
        nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
        resources = ClusterResources(float(total.get("CPU", 0)), float(total.get("GPU", 0)),
                                     nodes)
        if options.gpus_per_worker > resources.gpus:
            raise UsageError(
                f"--gpus-per-worker {options.gpus_per_worker:g} but {_describe(options.address)} "
                f"has {resources.gpus:g} GPUs; lower it, or 0 for CPU workers"
            )
        log.info("connected to %s: %d nodes, %g CPUs, %g GPUs", _describe(options.address),
                 resources.nodes, resources.cpus, resources.gpus)
        yield resources
    finally:
        if owned:
            ray.shutdown()


def _probe(address: str | None, timeout: float = 10.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (``ray.init`` would wait for minutes)."""
    if address is None or address == "auto" or "://" in address:
        return
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise UsageError(
            f"invalid --ray-address {address!r}: use auto, HOST:PORT (the head node's GCS "
            "port, usually 6379) or ray://HOST:10001"
        )
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as exc:
        raise ClusterError(
            f"could not connect to the Ray cluster at {address}: {exc.strerror or exc}; start "
            "one with `ray start --head --port PORT` on the head node, or check the address, "
            "the port and that this machine can reach it"
        ) from exc


def _quiet_ray_logs() -> None:
    """Ray and Ray Data report to stderr by default; the CLI has its own progress bar, and
    ``--json`` output must stay the only thing on stdout."""
    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Ray's C++ core logs warnings of its own to stderr (set RAY_BACKEND_LOG_LEVEL=info to
    # see them); failures still reach us as Python exceptions.
    os.environ.setdefault("RAY_BACKEND_LOG_LEVEL", "fatal")
    for name in ("ray", "ray.data", "ray._private", "ray.util"):
        logging.getLogger(name).setLevel(logging.ERROR)


def worker_error(exc: BaseException) -> VlmsearchError:
    """A failure inside the cluster, as a message for people. A ``VlmsearchError`` raised on a
    worker (a model that loads different weights there, say) keeps its own message."""
    cause: BaseException | None = exc
    while cause is not None:
        if isinstance(cause, VlmsearchError):
            return cause
        cause = getattr(cause, "cause", None) or cause.__cause__
    text = str(exc).strip().splitlines()
    first = next((line for line in reversed(text) if line.strip()), type(exc).__name__)
    return ClusterError(
        f"the Ray job failed: {first.strip()}; the finished part is saved, run the same "
        "command again to continue (Ray's logs in /tmp/ray/session_latest/logs on each node "
        "tell more)"
    )
