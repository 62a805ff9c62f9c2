"""Where files are found: walk roots, filter by extension and exclude globs, stat.

The walk never raises for one bad entry. Two kinds of trouble are told apart, because they
mean different things for the files indexed there before:

* *unavailable* places (``on_unavailable``): a root that does not exist, a folder that cannot be
  listed, a symbolic link whose target is gone (an unplugged drive, an unmounted share). What
  was indexed under them may well still exist, so the indexer keeps it;
* other *problems* (``on_problem``): a symlink loop or alias, an entry that is neither file nor
  folder. Those are skipped.

Files that vanish between listing and stat are simply not there.
"""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .config import IMAGE_EXTENSIONS


@dataclass(frozen=True, slots=True)
class FileRef:
    """A file found on disk, with what incremental indexing compares: size and mtime."""

    path: str
    size: int
    mtime_ns: int


ProblemCallback = Callable[[str, str], None]


def _ignore_problem(path: str, reason: str) -> None:
    return None


@dataclass(frozen=True)
class ExcludeRules:
    """Glob patterns: one without ``/`` matches any file or folder *name* (``.thumbnails``,
    ``*.tmp``); one with ``/`` matches the path relative to the root (``raw/*``, ``*/cache/*``)."""

    patterns: tuple[str, ...] = ()

    def excluded(self, rel_path: str, name: str) -> bool:
        for pattern in self.patterns:
            target = rel_path if "/" in pattern.strip("/") else name
            if fnmatch.fnmatchcase(target, pattern.strip("/")):
                return True
        return False


def absolute(path: str | os.PathLike[str]) -> str:
    """Absolute, normalised path without resolving symlinks (keeps the user's view of a tree)."""
    return os.path.normpath(os.path.abspath(os.path.expanduser(os.fspath(path))))


def walk(
    roots: Iterable[str | os.PathLike[str]],
    *,
    exclude: Iterable[str] = (),
    extensions: Iterable[str] = IMAGE_EXTENSIONS,
    follow_symlinks: bool = True,
    include_hidden: bool = False,
    on_problem: ProblemCallback = _ignore_problem,
    on_unavailable: ProblemCallback = _ignore_problem,
) -> Iterator[FileRef]:
    """Yield every image file under ``roots`` once, in a stable (sorted) order.

    A root that is a file is yielded whatever its extension. Hidden entries (names starting with
    ``.``) are skipped unless ``include_hidden``. With ``follow_symlinks``, links to folders are
    walked (each real folder once, so loops end) and links to files are indexed under the link's
    path; without it, symlinks are skipped.

    A root that does not exist, or cannot be reached, is reported to ``on_unavailable`` (with
    the other unavailable places) and the walk goes on with the other roots.
    """
    root_list = [absolute(r) for r in roots]
    rules = ExcludeRules(tuple(exclude))
    exts = frozenset(e.lower() for e in extensions)
    seen_dirs: set[tuple[int, int]] = set()
    seen_files: set[str] = set()
    for root in root_list:
        try:
            st = os.stat(root) if follow_symlinks else os.lstat(root)
        except OSError as exc:
            missing = isinstance(exc, FileNotFoundError) and not os.path.lexists(root)
            on_unavailable(root, "no such file or folder" if missing else _reason(exc))
            continue
        if stat.S_ISDIR(st.st_mode):
            yield from _walk_dir(root, st, rules, exts, follow_symlinks, include_hidden,
                                 on_problem, on_unavailable, seen_dirs, seen_files)
        elif stat.S_ISREG(st.st_mode):
            if root not in seen_files:
                seen_files.add(root)
                yield FileRef(root, st.st_size, st.st_mtime_ns)
        else:
            on_problem(root, "not a regular file or folder")


def _walk_dir(
    root: str,
    root_stat: os.stat_result,
    rules: ExcludeRules,
    exts: frozenset[str],
    follow_symlinks: bool,
    include_hidden: bool,
    on_problem: ProblemCallback,
    on_unavailable: ProblemCallback,
    seen_dirs: set[tuple[int, int]],
    seen_files: set[str],
) -> Iterator[FileRef]:
    key = (root_stat.st_dev, root_stat.st_ino)
    if key in seen_dirs:
        return
    seen_dirs.add(key)
    stack: list[str] = [root]
    while stack:
        folder = stack.pop()
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: e.name)
        except OSError as exc:
            on_unavailable(folder, _reason(exc))
            continue
        subdirs: list[str] = []
        for entry in entries:
            name = entry.name
            if not include_hidden and name.startswith("."):
                continue
            rel = os.path.relpath(entry.path, root).replace(os.sep, "/")
            if rules.excluded(rel, name):
                continue
            is_link = _is_symlink(entry)
            if is_link and not follow_symlinks:
                continue
            try:
                st = entry.stat(follow_symlinks=True)
            except OSError as exc:
                if is_link:
                    on_unavailable(entry.path, "broken or looping symbolic link (is its target "
                                   "on a drive that is not mounted?)")
                elif os.path.lexists(entry.path):
                    on_unavailable(entry.path, _reason(exc))
                continue  # vanished between listing and stat: nothing to index
            if stat.S_ISDIR(st.st_mode):
                key = (st.st_dev, st.st_ino)
                if key in seen_dirs:
                    if is_link:
                        on_problem(entry.path,
                                   "symbolic link to a folder already walked (loop or alias)")
                    continue
                seen_dirs.add(key)
                subdirs.append(entry.path)
            elif (stat.S_ISREG(st.st_mode) and os.path.splitext(name)[1].lower() in exts
                  and entry.path not in seen_files):
                seen_files.add(entry.path)
                yield FileRef(entry.path, st.st_size, st.st_mtime_ns)
        stack.extend(reversed(subdirs))


def _is_symlink(entry: os.DirEntry[str]) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _reason(exc: OSError) -> str:
    return exc.strerror or exc.__class__.__name__


def is_under(path: str, folder: str) -> bool:
    """True when ``path`` is ``folder`` or inside it (both absolute, normalised)."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def display_path(path: str | Path) -> str:
    """A printable form of a path whose name may hold bytes that are not valid UTF-8."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")
