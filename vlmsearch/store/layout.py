"""The index directory: one folder = one index.

```
manifest.json     format version, model (spec, id, dim), metric, per-kind FAISS state, and
                  "database" when the metadata lives in PostgreSQL (its URL, no password)
meta.sqlite       metadata and vectors: the source of truth (see store.metadata); absent
                  when "database" names another database
images.faiss      FAISS index of image vectors, derived from meta.sqlite
texts.faiss       FAISS index of text vectors, derived from meta.sqlite
write.lock        held (flock) by the one process allowed to write
```
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from ..errors import IndexFormatError, IndexLockedError, IndexNotFoundError, StorageError
from .atomic import write_json_atomically

FORMAT_VERSION = 2
"""The newest format this version reads. Indexes whose metadata is in SQLite are still written
as format 1 (older versions read them); format 2 adds ``database``, which an older version
would ignore and then open an empty meta.sqlite instead, so it must refuse them."""
MANIFEST = "manifest.json"
DATABASE = "meta.sqlite"
LOCK = "write.lock"
VECTOR_FILES = {"image": "images.faiss", "text": "texts.faiss"}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass
class VectorFileState:
    """What the FAISS file of one kind reflects: the store's change number and its size."""

    seq: int = 0
    count: int = 0
    index_type: str = "Flat"
    nprobe: int = 1
    recall_at_10: float | None = None
    """Measured recall@10 against exact search (approximate indexes only)."""


@dataclass
class Manifest:
    model_spec: str
    model_id: str
    dim: int
    metric: str = "inner_product"
    format: int = 1
    created: str = field(default_factory=_now)
    updated: str = field(default_factory=_now)
    vectors: dict[str, VectorFileState] = field(default_factory=dict)
    database: str | None = None
    """SQLAlchemy URL (without password) of the metadata database; None: meta.sqlite."""

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "format": max(self.format, 2) if self.database else self.format,
            "model": {"spec": self.model_spec, "id": self.model_id, "dim": self.dim},
            "metric": self.metric,
            "created": self.created,
            "updated": self.updated,
            "vectors": {
                kind: {"file": VECTOR_FILES[kind], "seq": s.seq, "count": s.count,
                       "index_type": s.index_type, "nprobe": s.nprobe,
                       "recall_at_10": s.recall_at_10}
                for kind, s in sorted(self.vectors.items())
            },
        }
        if self.database:
            data["database"] = self.database
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Manifest:
        model = data["model"]
        vectors = {
            kind: VectorFileState(int(v["seq"]), int(v["count"]), str(v["index_type"]),
                                  int(v.get("nprobe", 1)), v.get("recall_at_10"))
            for kind, v in data.get("vectors", {}).items() if kind in VECTOR_FILES
        }
        return cls(
            model_spec=str(model["spec"]), model_id=str(model["id"]), dim=int(model["dim"]),
            metric=str(data.get("metric", "inner_product")), format=int(data["format"]),
            created=str(data.get("created", "")), updated=str(data.get("updated", "")),
            vectors=vectors, database=data.get("database") or None,
        )


class IndexLayout:
    """Paths and files of one index folder."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    @property
    def manifest_path(self) -> Path:
        return self.root / MANIFEST

    @property
    def database_path(self) -> Path:
        return self.root / DATABASE

    def vector_path(self, kind: str) -> Path:
        return self.root / VECTOR_FILES[kind]

    def exists(self) -> bool:
        return self.manifest_path.is_file()

    def read_manifest(self) -> Manifest:
        if not self.exists():
            raise IndexNotFoundError(
                f"no index at {self.root}; build one with `vlmsearch index PATH` "
                "(add --index NAME or --index-dir DIR to pick another index)"
            )
        try:
            data = json.loads(self.manifest_path.read_text(encoding="utf-8"))
            manifest = Manifest.from_json(data)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise IndexFormatError(
                f"{self.manifest_path} is unreadable ({exc}); the index is damaged: delete the "
                "folder and index again"
            ) from exc
        if manifest.format > FORMAT_VERSION:
            raise IndexFormatError(
                f"{self.root} was written by a newer vlmsearch (index format {manifest.format}, "
                f"this one reads {FORMAT_VERSION}); upgrade vlmsearch"
            )
        return manifest

    def write_manifest(self, manifest: Manifest) -> None:
        manifest.updated = _now()
        try:
            write_json_atomically(self.manifest_path, manifest.to_json())
        except OSError as exc:
            raise StorageError(
                f"could not write {self.manifest_path}: {exc.strerror or exc}; check the "
                "folder's permissions and free disk space"
            ) from exc

    def size_on_disk(self) -> int:
        total = 0
        for entry in self.root.iterdir() if self.root.is_dir() else ():
            try:
                if entry.is_file():
                    total += entry.stat().st_size
            except OSError:
                continue
        return total

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Hold the index's write lock, or raise :class:`IndexLockedError` at once.

        The lock is an OS file lock, so the kernel releases it when its holder dies: a lock left
        by a killed process is simply taken over.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot write to {self.root} ({exc.strerror or exc}); check its permissions "
                "or pick another folder with --index-dir"
            ) from exc
        try:
            if not _try_lock(fd):
                holder = _read_pid(fd)
                who = f" (pid {holder})" if holder else ""
                raise IndexLockedError(
                    f"the index at {self.root} is being updated by another process{who}; wait "
                    "for it to finish, or stop it, and try again"
                )
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{time.time():.0f}\n".encode(), 0)
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                _unlock(fd)
        finally:
            os.close(fd)


def _read_pid(fd: int) -> int | None:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _try_lock(fd: int) -> bool:
        try:
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def _unlock(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)
else:
    import fcntl

    def _try_lock(fd: int) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def _unlock(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)
