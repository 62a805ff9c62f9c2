"""Crash-safe file replacement: write a temp file beside the target, fsync, rename, fsync the
folder. Readers see the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
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
        os.replace(tmp, target)
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


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_dir(path: Path) -> None:
    if os.name != "posix":  # pragma: no cover - directories cannot be fsynced on Windows
        return
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
