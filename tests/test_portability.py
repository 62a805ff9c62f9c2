"""The Windows code paths, simulated here: the write lock without ``fcntl``, ``os.pwrite`` and
``os.pread`` (through ``msvcrt.locking``, faked with byte-range locks so two processes really
exclude each other), fsync through descriptors opened for writing, folders that cannot be
fsynced, renames refused while another process has a file open, and FAISS files a reader
keeps memory-mapped while a writer saves new ones."""

from __future__ import annotations

import errno
import fcntl
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from tests.imagegen import make_image
from vlmsearch import Engine, IndexLockedError
from vlmsearch.store import atomic, layout, sync
from vlmsearch.store.layout import IndexLayout, MsvcrtLocks
from vlmsearch.store.vectors import VectorIndex

REPO = Path(__file__).resolve().parent.parent

FAKE_MSVCRT = '''
import fcntl as _fcntl, os as _os
LK_UNLCK, LK_LOCK, LK_NBLCK, LK_RLCK, LK_NBRLCK = 0, 1, 2, 3, 4
calls = []
def locking(fd, mode, nbytes):
    """msvcrt.locking: from the current position, nbytes; OSError when taken (byte-range
    POSIX locks, which exclude other processes as Windows locks do)."""
    start = _os.lseek(fd, 0, _os.SEEK_CUR)
    calls.append((mode, start, nbytes))
    if mode == LK_UNLCK:
        _fcntl.lockf(fd, _fcntl.LOCK_UN, nbytes, start, 0)
        return
    try:
        _fcntl.lockf(fd, _fcntl.LOCK_EX | _fcntl.LOCK_NB, nbytes, start, 0)
    except OSError:
        raise PermissionError(13, "Permission denied") from None
'''

WINDOWS_LIKE = f'''
import sys, os, types
fake = types.ModuleType("msvcrt")
exec({FAKE_MSVCRT!r}, fake.__dict__)
sys.modules["msvcrt"] = fake
sys.modules["fcntl"] = None        # import fcntl now fails, as on Windows
for name in ("pwrite", "pread"):   # absent on Windows
    if hasattr(os, name):
        delattr(os, name)
'''


def _fake_msvcrt() -> Any:
    import types

    module = types.ModuleType("msvcrt")
    exec(FAKE_MSVCRT, module.__dict__)
    return module


@pytest.fixture
def windows_lock(monkeypatch: pytest.MonkeyPatch) -> Any:
    """This process locks as on Windows: msvcrt, and no pwrite/pread."""
    fake = _fake_msvcrt()
    monkeypatch.setattr(layout, "_chosen", MsvcrtLocks(fake))
    monkeypatch.delattr(os, "pwrite", raising=False)
    monkeypatch.delattr(os, "pread", raising=False)
    return fake


def test_lock_backend_without_fcntl_is_msvcrt() -> None:
    code = WINDOWS_LIKE + textwrap.dedent('''
        from vlmsearch.store import layout
        locks = layout._locks()
        print(type(locks).__name__, locks.msvcrt is sys.modules["msvcrt"])
    ''')
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.split() == ["MsvcrtLocks", "True"]


def test_windows_lock_excludes_a_second_writer_process(tmp_path: Path, windows_lock: Any
                                                       ) -> None:
    """A holder in another process (fcntl, pwrite and pread made unavailable there) keeps
    this one out, with its pid readable beside the locked byte; once it lets go, we get in."""
    folder = tmp_path / "index"
    code = WINDOWS_LIKE + textwrap.dedent('''
        from vlmsearch.store.layout import IndexLayout
        with IndexLayout(sys.argv[1]).write_lock():
            print("locked", flush=True)
            sys.stdin.readline()
        print("released", sys.modules["msvcrt"].calls, flush=True)
    ''')
    holder = subprocess.Popen([sys.executable, "-c", code, str(folder)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"), \
                IndexLayout(folder).write_lock():
            pass
        holder.stdin.write("\n")
        holder.stdin.flush()
        released = holder.stdout.readline()
        assert released.startswith("released")
        # the holder locked and unlocked one byte far past the pid text
        assert f"(2, {MsvcrtLocks.LOCK_BYTE}, 1)" in released
        assert f"(0, {MsvcrtLocks.LOCK_BYTE}, 1)" in released
    finally:
        holder.wait(timeout=30)
    with IndexLayout(folder).write_lock():
        text = (folder / "write.lock").read_bytes()[:64].decode().split()
        assert text[0] == str(os.getpid())
    assert windows_lock.calls[-1][0] == windows_lock.LK_UNLCK
    assert (folder / "write.lock").read_bytes()[:64].strip() == b""  # pid cleared


def test_a_whole_index_run_with_windows_locking(tmp_path: Path, windows_lock: Any) -> None:
    root = tmp_path / "photos"
    make_image(root / "red.jpg", "red")
    make_image(root / "blue.png", "blue")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        assert eng.index([root]).added == 2
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")
    assert any(mode == windows_lock.LK_NBLCK for mode, _, _ in windows_lock.calls)


def _read_only(fd: int) -> bool:
    return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY


def test_fsync_uses_a_descriptor_open_for_writing(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Windows' fsync (``_commit``) fails with EBADF on a read-only descriptor; folders cannot
    be opened at all."""
    real_fsync, real_open = os.fsync, os.open
    synced: list[str] = []

    def windows_fsync(fd: int) -> None:
        if _read_only(fd):
            raise OSError(errno.EBADF, "Bad file descriptor")
        synced.append(os.readlink(f"/proc/self/fd/{fd}") if os.path.exists("/proc/self/fd")
                      else "?")
        real_fsync(fd)

    def windows_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        if os.path.isdir(path):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "fsync", windows_fsync)
    monkeypatch.setattr(os, "open", windows_open)
    target = tmp_path / "manifest.json"
    atomic.write_json_atomically(target, {"a": 1})  # POSIX branch: the folder fsync is skipped
    monkeypatch.setattr(atomic, "FSYNC_DIRS", False)  # the Windows branch: not even tried
    atomic.write_json_atomically(target, {"a": 2})
    assert json.loads(target.read_text()) == {"a": 2}
    assert len(synced) == 2 and all(".manifest.json." in s or s == "?" for s in synced)


def test_folder_fsync_refused_with_einval_is_skipped(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    real_fsync = os.fsync

    def picky(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}"):
            raise OSError(errno.EINVAL, "Invalid argument")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", picky)
    atomic.write_json_atomically(tmp_path / "x.json", {"ok": True})
    assert json.loads((tmp_path / "x.json").read_text()) == {"ok": True}


def test_a_rename_refused_for_a_moment_is_retried(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A reader reading manifest.json on Windows makes os.replace fail with a sharing
    violation until it closes the file."""
    real_replace = os.replace
    refusals = [2]

    def busy(src: Any, dst: Any) -> None:
        if refusals[0]:
            refusals[0] -= 1
            raise PermissionError(errno.EACCES, "The process cannot access the file")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", busy)
    monkeypatch.setattr(atomic, "RETRY_SHARING_VIOLATIONS", True)
    monkeypatch.setattr(atomic, "REPLACE_PAUSE_S", 0.001)
    atomic.write_json_atomically(tmp_path / "manifest.json", {"v": 1})
    assert json.loads((tmp_path / "manifest.json").read_text()) == {"v": 1}
    monkeypatch.setattr(atomic, "RETRY_SHARING_VIOLATIONS", False)  # POSIX: no retries
    refusals[0] = 1
    with pytest.raises(PermissionError):
        atomic.write_json_atomically(tmp_path / "manifest.json", {"v": 2})
    assert not list(tmp_path.glob(".manifest.json.*"))  # the temp file was cleaned up


@pytest.fixture
def windows_mapping(monkeypatch: pytest.MonkeyPatch) -> set[str]:
    """Files memory-mapped by a reader cannot be replaced or deleted (Windows): the set of
    mapped paths, filled by read-only loads and emptied by the test to 'close' a reader."""
    mapped: set[str] = set()
    real_load = VectorIndex.load.__func__  # type: ignore[attr-defined]
    real_replace, real_unlink = os.replace, os.unlink

    def load(cls: Any, path: Any, dim: int, *, writable: bool, **kwargs: Any) -> VectorIndex:
        if not writable:
            mapped.add(os.fspath(path))
        return real_load(cls, path, dim, writable=writable, **kwargs)

    def replace(src: Any, dst: Any) -> None:
        if os.fspath(dst) in mapped:
            raise PermissionError(errno.EACCES, "Access is denied", os.fspath(dst))
        real_replace(src, dst)

    def unlink(path: Any, *args: Any, **kwargs: Any) -> None:
        if os.fspath(path) in mapped:
            raise PermissionError(errno.EACCES, "Access is denied", os.fspath(path))
        real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(VectorIndex, "load", classmethod(load))
    monkeypatch.setattr(os, "replace", replace)
    monkeypatch.setattr(os, "unlink", unlink)
    return mapped


def test_rebuild_while_a_reader_maps_the_old_faiss_file(
    tmp_path: Path, windows_mapping: set[str]
) -> None:
    root = tmp_path / "photos"
    for colour in ("red", "green", "blue"):
        make_image(root / f"{colour}.jpg", colour)
    index = tmp_path / "index"
    with Engine.open(index, model="fake") as writer:
        writer.index([root])
    reader = Engine.open(index, model="fake", create=False)
    try:
        assert reader.search(text="red", k=1)[0].path.endswith("red.jpg")
        first = json.loads((index / "manifest.json").read_text())["vectors"]["image"]["file"]
        assert str(index / first) in windows_mapping  # the reader maps it
        # a second run (more files, one gone): the FAISS file is saved again
        make_image(root / "yellow.jpg", "yellow")
        make_image(root / "purple.png", "purple")
        (root / "green.jpg").unlink()
        with Engine.open(index, model="fake") as writer:
            report = writer.index([root])
            assert (report.added, report.removed) == (2, 1)
        second = json.loads((index / "manifest.json").read_text())["vectors"]["image"]
        assert second["file"] != first and second["count"] == 4
        assert (index / first).exists()  # still mapped: left for later, not an error
        # the reader, still on its mapped copy, sees the new state (patched from the store)
        assert reader.search(text="yellow", k=1)[0].path.endswith("yellow.jpg")
        assert not any(h.path.endswith("green.jpg") for h in reader.search(text="green", k=4))
        # a new reader opens the new file
        with Engine.open(index, model="fake", create=False) as fresh:
            assert fresh.search(text="purple", k=1)[0].path.endswith("purple.png")
            assert fresh.info().images == 4
    finally:
        reader.close()
    windows_mapping.clear()  # every reader has gone
    make_image(root / "orange.jpg", "orange")
    with Engine.open(index, model="fake") as writer:
        writer.index([root])
        current = writer._handle.manifest.vectors["image"].file
    names = sorted(p.name for p in index.glob("images*.faiss"))
    assert names == [current]  # the old ones are deleted once nobody maps them


def test_a_reader_whose_manifest_names_a_deleted_file_follows_the_new_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a reader's reading the manifest and opening the file it names, a writer may
    save a new file and delete that one: the reader reads the manifest again instead of
    rebuilding the index from the database."""
    root = tmp_path / "photos"
    make_image(root / "red.jpg", "red")
    make_image(root / "blue.jpg", "blue")
    index = tmp_path / "index"
    with Engine.open(index, model="fake") as eng:
        eng.index([root])
    stale = IndexLayout(index).read_manifest()
    make_image(root / "green.jpg", "green")
    with Engine.open(index, model="fake") as eng:
        eng.index([root])
    assert not (index / stale.vectors["image"].file).exists()

    def no_rebuild(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("rebuilt from the database")

    monkeypatch.setattr(sync, "rebuild", no_rebuild)
    with Engine.open(index, model="fake", create=False) as eng:
        handle = eng._handle
        with handle.store.read() as conn:
            vectors, _ = sync.load_synced(handle.layout, stale, handle.store, "image", conn,
                                          writable=False)
        assert vectors.count == 3


def test_an_index_with_the_old_fixed_file_names_still_opens(tmp_path: Path) -> None:
    """Indexes written before kept images.faiss; the manifest says so (or says nothing): it
    is read, and the next save moves to a change-numbered name and deletes it."""
    root = tmp_path / "photos"
    make_image(root / "red.jpg", "red")
    index = tmp_path / "index"
    with Engine.open(index, model="fake") as eng:
        eng.index([root])
    manifest_path = index / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    current = manifest["vectors"]["image"]["file"]
    os.rename(index / current, index / "images.faiss")
    manifest["vectors"]["image"]["file"] = "images.faiss"
    manifest_path.write_text(json.dumps(manifest))
    with Engine.open(index, model="fake", create=False) as eng:
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")
    del manifest["vectors"]["image"]["file"]  # hostile or old: falls back to the old name
    manifest["vectors"]["text"] = {"file": "../../etc/passwd", "seq": 1, "count": 0,
                                   "index_type": "Flat"}
    manifest_path.write_text(json.dumps(manifest))
    state = IndexLayout(index).read_manifest().vectors
    assert state["image"].file == "" and state["text"].file == ""
    make_image(root / "blue.jpg", "blue")
    with Engine.open(index, model="fake") as eng:
        eng.index([root])
        assert eng.search(text="blue", k=1)[0].path.endswith("blue.jpg")
    assert not (index / "images.faiss").exists()
    assert len(list(index.glob("images.*.faiss"))) == 1
