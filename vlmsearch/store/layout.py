"""The index directory: one folder = one index.

```
manifest.json     format version, model (spec, id, dim), metric, per-kind FAISS state (which
                  file, which change number), and "database" when the metadata lives in
                  PostgreSQL (its URL, no password)
meta.sqlite       metadata and vectors: the source of truth (see store.metadata); absent
                  when "database" names another database
images.SEQ.faiss  FAISS index of image vectors at change number SEQ, derived from meta.sqlite
texts.SEQ.faiss   FAISS index of text vectors, derived from meta.sqlite
write.lock        held (an OS lock) by the one process allowed to write; holds its pid
```

Each FAISS file is written under a new name (tagged with the change number it reflects) and
the manifest then points at it; the one it replaces is deleted afterwards, or, where the OS
refuses to delete a file another process has memory-mapped (Windows: a running ``serve``),
at a later save once nobody uses it. So a writer never replaces a file in place, which
Windows does not allow while a reader maps it, and a reader keeps searching its own copy.
Indexes written before kept ``images.faiss``/``texts.faiss``; the manifest's ``file`` says
which, and the first save moves to the new names.

The write lock is ``flock`` where ``fcntl`` exists and ``msvcrt.locking`` (on one byte far
past the pid) on Windows; both are released by the OS when the holder dies. The pid is read
and written with ``lseek`` + ``read``/``write`` (``os.pread``/``os.pwrite`` do not exist on
Windows).
"""

from __future__ import annotations

import importlib
import json
import os
import re
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
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
"""The names indexes written before change-numbered FAISS files used (still read)."""
_VECTOR_FILE = re.compile(r"(images|texts)(\.\d+(-\d+)?)?\.faiss")
PID_BYTES = 64
"""The lock file's first bytes hold the holder's pid and start time, space-padded."""


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
    file: str = ""
    """The FAISS file's name in the index folder ('': the kind's old fixed name)."""


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
                kind: {"file": s.file or VECTOR_FILES[kind], "seq": s.seq, "count": s.count,
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
                                  int(v.get("nprobe", 1)), v.get("recall_at_10"),
                                  _file_name(kind, v.get("file")))
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

    def vector_path(self, kind: str, name: str = "") -> Path:
        """The FAISS file ``name`` of ``kind`` (a :attr:`VectorFileState.file`; '' is the
        kind's old fixed name)."""
        return self.root / (name or VECTOR_FILES[kind])

    def new_vector_path(self, kind: str, seq: int) -> Path:
        """A name no file has yet for the FAISS file of ``kind`` at change number ``seq``."""
        stem = VECTOR_FILES[kind].removesuffix(".faiss")
        path = self.root / f"{stem}.{seq}.faiss"
        n = 1
        while path.exists():
            path = self.root / f"{stem}.{seq}-{n}.faiss"
            n += 1
        return path

    def vector_files(self, kind: str) -> list[Path]:
        """Every FAISS file of ``kind`` in the folder (current, old, legacy)."""
        stem = VECTOR_FILES[kind].removesuffix(".faiss")
        try:
            entries = list(self.root.iterdir())
        except OSError:
            return []
        return sorted(p for p in entries if (m := _VECTOR_FILE.fullmatch(p.name))
                      and m.group(1) == stem)

    def remove_old_vector_files(self, kind: str, keep: str | None) -> list[Path]:
        """Delete the FAISS files of ``kind`` other than ``keep``; return those that could not
        be deleted (on Windows, files another process has memory-mapped: they are tried again
        at the next save)."""
        left = []
        for path in self.vector_files(kind):
            if path.name == keep:
                continue
            try:
                path.unlink()
            except FileNotFoundError:
                continue
            except OSError:
                left.append(path)
        return left

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

        The lock is an OS file lock (``flock``, or ``msvcrt.locking`` on Windows), so the OS
        releases it when its holder dies: a lock left by a killed process is simply taken over.
        """
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_BINARY", 0),
                         0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot write to {self.root} ({exc.strerror or exc}); check its permissions "
                "or pick another folder with --index-dir"
            ) from exc
        try:
            locks = _locks()
            if not locks.try_lock(fd):
                holder = _read_pid(fd)
                who = f" (pid {holder})" if holder else ""
                raise IndexLockedError(
                    f"the index at {self.root} is being updated by another process{who}; wait "
                    "for it to finish, or stop it, and try again"
                )
            _write_pid(fd, f"{os.getpid()}\n{time.time():.0f}\n")
            try:
                yield
            finally:
                _write_pid(fd, "")
                locks.unlock(fd)
        finally:
            os.close(fd)


def _file_name(kind: str, value: object) -> str:
    """The FAISS file a manifest names, if it is one of ours (a plain name, never a path)."""
    matched = _VECTOR_FILE.fullmatch(value) if isinstance(value, str) else None
    if matched and matched.group(1) == VECTOR_FILES[kind].removesuffix(".faiss"):
        return matched.group(0)
    return ""


def _write_pid(fd: int, text: str) -> None:
    """Overwrite the lock file's first bytes (padded, so no truncation is needed: Windows
    may refuse to truncate a file with a locked range)."""
    with suppress(OSError):
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, text.encode("ascii").ljust(PID_BYTES))


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        text = os.read(fd, PID_BYTES).decode("ascii", "replace").split()
        return int(text[0]) if text else None
    except (OSError, ValueError):
        return None


class FlockLocks:
    """``flock`` (Linux, macOS, BSD): the whole file, released when the descriptor closes."""

    def __init__(self, fcntl: Any) -> None:
        self.fcntl = fcntl

    def try_lock(self, fd: int) -> bool:
        try:
            self.fcntl.flock(fd, self.fcntl.LOCK_EX | self.fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False

    def unlock(self, fd: int) -> None:
        self.fcntl.flock(fd, self.fcntl.LOCK_UN)


class MsvcrtLocks:
    """``msvcrt.locking`` (Windows): one byte at :data:`LOCK_BYTE`, far past the pid, so
    another process can still read who holds the lock (Windows locks bar reading the locked
    range). ``locking`` locks from the current position, hence the seeks."""

    LOCK_BYTE = 1 << 20

    def __init__(self, msvcrt: Any) -> None:
        self.msvcrt = msvcrt

    def try_lock(self, fd: int) -> bool:
        os.lseek(fd, self.LOCK_BYTE, os.SEEK_SET)
        try:
            self.msvcrt.locking(fd, self.msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False

    def unlock(self, fd: int) -> None:
        os.lseek(fd, self.LOCK_BYTE, os.SEEK_SET)
        with suppress(OSError):
            self.msvcrt.locking(fd, self.msvcrt.LK_UNLCK, 1)


_chosen: FlockLocks | MsvcrtLocks | None = None


def _locks() -> FlockLocks | MsvcrtLocks:
    """``flock`` where ``fcntl`` can be imported, else ``msvcrt`` (chosen once)."""
    global _chosen
    if _chosen is None:
        try:
            _chosen = FlockLocks(importlib.import_module("fcntl"))
        except ImportError:
            _chosen = MsvcrtLocks(importlib.import_module("msvcrt"))
    return _chosen
