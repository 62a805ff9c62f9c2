"""Crash-safe file replacement: write a temp file beside the target, fsync, rename, fsync the
folder. Readers see the old file or the new one, never half of one.

Portable: the temp file is fsynced through a descriptor opened for writing (Windows refuses to
flush a read-only one); folders are fsynced where the OS allows it (POSIX; Windows cannot open
a folder as a file, and some file systems refuse with EINVAL: skipped, the rename itself is
then as durable as that OS makes it). On Windows a rename over a file that another process has
open for a moment (a reader reading ``manifest.json``) fails with a sharing violation, so it
is retried for up to a second. Files that stay open for long (memory-mapped FAISS files) are
never replaced in place: they get new names (see :mod:`vlmsearch.store.layout`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replace_atomically(target: Path) -> Iterator[Path]:
    """Yield a temp path to write; on success it replaces ``target`` atomically. On error the
    temp file is removed and ``target`` is untouched."""
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        _fsync_file(tmp)
        # mkstemp makes the file owner-only; the result must get the mode any new file gets
        # (or keep the one it replaces), or other users could not read a shared index
        try:
            mode = target.stat().st_mode & 0o7777
        except OSError:
            mode = default_mode(0o666)
        os.chmod(tmp, mode)
        _replace(tmp, target)
        _fsync_dir(target.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def default_mode(requested: int) -> int:
    """``requested`` as the process umask lets a newly created file or folder have it."""
    mask = os.umask(0o022)  # reading the umask means setting it; put it straight back
    os.umask(mask)
    return requested & ~mask


def write_json_atomically(target: Path, data: dict[str, Any]) -> None:
    with replace_atomically(target) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


FSYNC_DIRS = os.name == "posix"
"""Whether folders can be opened and fsynced (not on Windows)."""
RETRY_SHARING_VIOLATIONS = sys.platform == "win32"
"""Whether a rename refused with PermissionError is retried (Windows sharing violations)."""
REPLACE_RETRIES = 20
REPLACE_PAUSE_S = 0.05
_UNSUPPORTED = {errno.EINVAL, errno.EBADF, errno.EACCES, errno.EPERM,
                getattr(errno, "ENOTSUP", errno.EINVAL), getattr(errno, "EOPNOTSUPP", errno.EINVAL)}


def _replace(tmp: Path, target: Path) -> None:
    for attempt in range(REPLACE_RETRIES):
        try:
            os.replace(tmp, target)
            return
        except PermissionError:
            if not RETRY_SHARING_VIOLATIONS or attempt == REPLACE_RETRIES - 1:
                raise
            time.sleep(REPLACE_PAUSE_S)


def _fsync_file(path: Path) -> None:
    """Flush a written file to disk, through a descriptor opened for writing."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    """Make a rename in ``path`` durable, where the OS lets a folder be fsynced."""
    if not FSYNC_DIRS:
        return
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as exc:
        if exc.errno in _UNSUPPORTED or isinstance(exc, PermissionError):
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno not in _UNSUPPORTED:
            raise
    finally:
        os.close(fd)
