"""Live updates: keep an index in step with folders while files change (``vlmsearch watch``).

A :class:`Watcher` runs one incremental index run of its roots (exactly what ``vlmsearch index``
does), then listens to file system events (``watchdog``: inotify on Linux, FSEvents on macOS,
ReadDirectoryChangesW on Windows; a polling observer where events are unavailable, such as
network mounts, with ``poll`` seconds) and applies them as small incremental runs through the
:class:`~vlmsearch.engine.Engine`, each reported as a :class:`WatchRound`:

* events are **debounced**: a round starts once no event came for ``debounce`` seconds (or
  ``max_wait`` seconds after the oldest waiting change, so a long copy is applied in a few
  rounds while it goes on, never file by file);
* a file is read only once it is **settled**: the same size and mtime at two checks at least
  ``settle`` seconds apart, so a file still being written (a copy, a camera import, a slow
  download) is never indexed half-written;
* created and changed files (and every file of a folder created or moved in) are indexed as
  index runs of those files, or of their folder when a folder holds many; deleted ones, and the
  old side of a rename, are removed. A rename is applied as "index the new path, then remove
  the old one", so the new path reuses the stored vector by content digest (nothing is
  encoded again), as ``index`` does for moved files;
* a round is an ordinary index run, committed in checkpoints: killing the process loses at most
  the batch in progress, and the next start's initial run picks up whatever changed meanwhile.

The watcher never prints: it yields rounds. Readers in other processes (``query``, ``info``,
``serve``) follow each round's commits as they follow any index run.
"""

from __future__ import annotations

import logging
import os
import queue
import stat as stat_module
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from watchdog.events import FileSystemEvent, FileSystemEventHandler

from .errors import IndexLockedError, UsageError
from .formats import extension_set
from .indexing.report import IndexReport, ProgressCallback, no_progress
from .sources import ExcludeRules, absolute, is_under, walk

if TYPE_CHECKING:
    from .distributed.options import RayOptions
    from .engine import Engine

log = logging.getLogger("vlmsearch.watch")

DEFAULT_DEBOUNCE = 0.5
DEFAULT_SETTLE = 1.0
DEFAULT_MAX_WAIT = 10.0
FALLBACK_POLL = 10.0
"""Seconds between scans when file system events cannot be used and no ``poll`` was given."""
TICK = 0.2
LOCKED_RETRY = 1.0
COALESCE = 32
"""A folder with at least this many settled changed files is indexed as one root."""


@dataclass(frozen=True)
class WatchOptions:
    """How a :class:`Watcher` listens: ``poll`` (seconds between scans; None: file system
    events, falling back to scans every :data:`FALLBACK_POLL` seconds when they cannot be
    used), ``debounce``, ``settle`` and ``max_wait`` (see the module docstring)."""

    poll: float | None = None
    debounce: float = DEFAULT_DEBOUNCE
    settle: float = DEFAULT_SETTLE
    max_wait: float = DEFAULT_MAX_WAIT
    fallback_poll: float = FALLBACK_POLL
    """Seconds between scans when events were asked for but cannot be used."""

    def checked(self) -> WatchOptions:
        if self.poll is not None and self.poll <= 0:
            raise UsageError("--poll needs a number of seconds above 0")
        if self.fallback_poll <= 0:
            raise UsageError("fallback_poll needs a number of seconds above 0")
        for name in ("debounce", "settle", "max_wait"):
            if getattr(self, name) < 0:
                raise UsageError(f"{name.replace('_', '-')} cannot be negative")
        return self


@dataclass
class WatchRound:
    """One applied batch of changes (``initial``: the run at start, over every root).

    ``events``: file system events folded into it; ``indexed_paths``: files and folders given
    to the index run; ``removed_paths``: deleted paths (and old sides of renames);
    ``report``: the index run's report (None when there was nothing to index); ``removed``:
    index entries dropped; ``latency``: seconds from the oldest change it applies to the end
    of the round; ``seconds``: the round's own duration."""

    number: int
    initial: bool
    events: int = 0
    indexed_paths: int = 0
    removed_paths: int = 0
    report: IndexReport | None = None
    removed: int = 0
    latency: float = 0.0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        report = self.report
        return {"round": self.number, "initial": self.initial, "events": self.events,
                "indexed_paths": self.indexed_paths, "removed_paths": self.removed_paths,
                "added": report.added if report else 0,
                "updated": report.updated if report else 0,
                "encoded": report.encoded if report else 0,
                "reused": report.reused if report else 0,
                "skipped": report.skipped if report else 0,
                "removed": self.removed + (report.removed if report else 0),
                "latency": round(self.latency, 3), "seconds": round(self.seconds, 3)}


@dataclass
class _Waiting:
    """A changed file not read yet: its last seen (size, mtime) and since when unchanged."""

    signature: tuple[int, int]
    stable_since: float
    changed_at: float


@dataclass
class _State:
    waiting: dict[str, _Waiting] = field(default_factory=dict)
    scan: set[str] = field(default_factory=set)
    """Folders created or moved in: their files join ``waiting`` at the next tick."""
    gone: dict[str, tuple[float, bool]] = field(default_factory=dict)
    """Deleted paths (files or folders) → (when, whether the old side of a rename)."""
    events: int = 0
    last_event: float = 0.0
    blocked_until: float = 0.0
    """Another process holds the write lock: no round before this time."""


ObserverFactory = Callable[[], Any]
EventKind = Literal["created", "modified", "closed", "deleted", "moved"]


class Watcher:
    """Watches ``roots`` for ``engine`` (see the module docstring). Iterate :meth:`rounds`;
    :meth:`stop` (from any thread) ends the iteration after the round in progress."""

    def __init__(
        self,
        engine: Engine,
        roots: Iterable[str | os.PathLike[str]],
        *,
        exclude: Iterable[str] = (),
        include_hidden: bool = False,
        index_engine: Literal["local", "ray"] | None = None,
        ray: RayOptions | None = None,
        ocr: bool | None = None,
        add_extensions: Iterable[str] = (),
        only_extensions: Iterable[str] | None = None,
        options: WatchOptions | None = None,
        progress: ProgressCallback | None = None,
        observer_factory: ObserverFactory | None = None,
    ) -> None:
        self.engine = engine
        self.roots = [absolute(r) for r in roots]
        if not self.roots:
            raise UsageError("give at least one folder to watch")
        self.exclude = tuple(exclude)
        self.include_hidden = include_hidden
        self.index_engine = index_engine
        self.ray = ray
        self.ocr = ocr
        self.options = (options or WatchOptions()).checked()
        self.progress = progress or no_progress
        self._observer_factory = observer_factory
        self._rules = ExcludeRules(self.exclude)
        self.add_extensions = tuple(add_extensions)
        self.only_extensions = None if only_extensions is None else tuple(only_extensions)
        self._extensions = frozenset(e.lower() for e in extension_set(
            engine.settings.extensions, add=self.add_extensions, only=self.only_extensions))
        self._events: queue.SimpleQueue[tuple[str, str, str | None, bool]] = queue.SimpleQueue()
        self._stop = threading.Event()
        self._observer: Any = None
        self.mode: str = ""
        """How changes are seen: ``events`` (file system notifications) or ``polling``."""
        self.interval: float = 0.0
        """Seconds between scans in ``polling`` mode."""
        self.fallback_reason: str | None = None
        """Why file system events could not be used (None when they are, or polling was
        asked for)."""

    # --- control -------------------------------------------------------------------------------
    def stop(self) -> None:
        """End :meth:`rounds` after the round in progress (thread-safe)."""
        self._stop.set()

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def rounds(self) -> Iterator[WatchRound]:
        """Start listening, run the initial round, then one round per settled batch of
        changes, until :meth:`stop` (or Ctrl-C, which propagates after the finished work is
        committed)."""
        for root in self.roots:
            if not os.path.isdir(root):
                raise UsageError(f"cannot watch {root}: not a folder (give folders to watch)")
        self._start_observer()  # first, so changes made during the initial run are seen
        try:
            start = time.monotonic()
            report = self._index(self.roots)
            yield WatchRound(1, True, indexed_paths=len(self.roots), report=report,
                             latency=time.monotonic() - start,
                             seconds=time.monotonic() - start)
            number = 1
            state = _State()
            while not self._stop.is_set():
                self._drain(state, timeout=TICK)
                now = time.monotonic()
                self._expand(state, now)
                self._check(state, now)
                batch = self._due(state, now)
                if batch is None:
                    continue
                done = self._apply(number + 1, state, *batch)
                if done is not None:
                    number += 1
                    yield done
        finally:
            self._stop_observer()

    # --- the observer ----------------------------------------------------------------------
    def _start_observer(self) -> None:
        from watchdog.observers.polling import PollingObserver

        handler = _Handler(self._events)
        poll = self.options.poll
        if poll is None:
            try:
                observer = self._make_event_observer()
                for root in self.roots:
                    observer.schedule(handler, root, recursive=True)
                observer.start()
                self._observer, self.mode = observer, "events"
                return
            except OSError as exc:
                self.fallback_reason = _observer_problem(exc)
                poll = self.options.fallback_poll
                log.warning("file system events are unavailable (%s); scanning every %g s",
                            self.fallback_reason, poll)
        observer = PollingObserver(timeout=poll)
        for root in self.roots:
            observer.schedule(handler, root, recursive=True)
        observer.start()
        self._observer, self.mode, self.interval = observer, "polling", poll

    def _make_event_observer(self) -> Any:
        if self._observer_factory is not None:
            return self._observer_factory()
        from watchdog.observers import Observer

        return Observer()

    def _stop_observer(self) -> None:
        observer, self._observer = self._observer, None
        if observer is None:
            return
        try:
            observer.stop()
            observer.join(timeout=5)
        except Exception as exc:  # stopping must never hide the real outcome
            log.info("stopping the file system observer: %s", exc)

    # --- folding events into state ---------------------------------------------------------
    def _drain(self, state: _State, *, timeout: float) -> None:
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            return
        while True:
            self._take(state, *item)
            try:
                item = self._events.get_nowait()
            except queue.Empty:
                return

    def _take(self, state: _State, kind: str, src: str, dest: str | None, is_dir: bool) -> None:
        now = time.monotonic()
        if kind in ("deleted", "moved") and self._relevant(src, is_dir):
            state.gone[src] = (now, kind == "moved")
            self._forget_waiting(state, src, is_dir)
            state.events += 1
            state.last_event = now
        target = dest if kind == "moved" else src
        if kind == "deleted" or target is None or not self._relevant(target, is_dir):
            return
        state.events += 1
        state.last_event = now
        if is_dir:
            if kind in ("created", "moved"):
                state.scan.add(target)
            return
        self._note(state, target, now)

    def _note(self, state: _State, path: str, now: float) -> None:
        signature = _signature(path)
        if signature is None:
            return  # gone again already: its delete event follows
        seen = state.waiting.get(path)
        if seen is None:
            state.waiting[path] = _Waiting(signature, now, now)
        elif seen.signature != signature:
            seen.signature, seen.stable_since = signature, now

    @staticmethod
    def _forget_waiting(state: _State, path: str, is_dir: bool) -> None:
        if not is_dir:
            state.waiting.pop(path, None)
            return
        for waiting in [p for p in state.waiting if is_under(p, path)]:
            del state.waiting[waiting]
        state.scan = {p for p in state.scan if not is_under(p, path)}

    def _relevant(self, path: str, is_dir: bool) -> bool:
        """Whether a path is one the index run would consider (extension, hidden names,
        ``exclude`` patterns, outside the index folder)."""
        if is_under(path, str(self.engine.path)):
            return False
        root = next((r for r in self.roots if is_under(path, r)), None)
        if root is None:
            return False
        if not is_dir and os.path.splitext(path)[1].lower() not in self._extensions:
            return False
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if rel == ".":
            return True
        parts = rel.split("/")
        for n, name in enumerate(parts):
            if not self.include_hidden and name.startswith("."):
                return False
            if self._rules.excluded("/".join(parts[:n + 1]), name):
                return False
        return True

    def _expand(self, state: _State, now: float) -> None:
        """Files of the folders created or moved in since the last tick."""
        folders, state.scan = state.scan, set()
        for ref in walk(sorted(folders), exclude=(), extensions=self._extensions,
                        follow_symlinks=self.engine.settings.follow_symlinks,
                        include_hidden=True):
            if self._relevant(ref.path, False):
                self._note(state, ref.path, now)

    def _check(self, state: _State, now: float) -> None:
        """The second (and later) look at each waiting file: unchanged since when?"""
        for path in list(state.waiting):
            seen = state.waiting[path]
            signature = _signature(path)
            if signature is None:
                del state.waiting[path]
            elif signature != seen.signature:
                seen.signature, seen.stable_since = signature, now

    def _due(self, state: _State, now: float) -> tuple[list[str], list[str], float] | None:
        """(files to index, paths to remove, oldest change) when a round should run now."""
        if now < state.blocked_until:
            return None
        settle, max_wait = self.options.settle, self.options.max_wait
        ready = [p for p, w in state.waiting.items() if now - w.stable_since >= settle]
        # the old side of a rename waits for the new side to be indexed, so its vector is
        # still stored when the new path asks for it (bounded by max_wait)
        held = bool(state.scan) or len(ready) < len(state.waiting)
        gone = [p for p, (when, moved) in state.gone.items()
                if not (moved and held) or now - when >= max_wait]
        if not ready and not gone:
            return None
        oldest = min([state.waiting[p].changed_at for p in ready]
                     + [state.gone[p][0] for p in gone])
        quiet = now - state.last_event >= self.options.debounce
        if not quiet and now - oldest < max_wait:
            return None
        return ready, gone, oldest

    # --- applying a batch ----------------------------------------------------------------------
    def _apply(self, number: int, state: _State, ready: list[str], gone: list[str],
               oldest: float) -> WatchRound | None:
        """Index ``ready``, then remove ``gone``. While another process holds the index's
        write lock (an `index` run), the batch stays waiting and is tried again shortly."""
        start = time.monotonic()
        roots = _coalesce(ready, {p: w for p, w in state.waiting.items() if p not in ready},
                          simple_rules=not any("/" in p.strip("/") for p in self.exclude))
        round_ = WatchRound(number, False, events=state.events, indexed_paths=len(roots))
        try:
            if roots:  # first, so a renamed file reuses the vector its old path still holds
                round_.report = self._index(roots)
            for path in ready:
                state.waiting.pop(path, None)
            really_gone = [p for p in gone if not os.path.lexists(p)]
            if really_gone:
                round_.removed = self.engine.remove(really_gone)
            round_.removed_paths = len(really_gone)
            for path in gone:
                state.gone.pop(path, None)
        except IndexLockedError as exc:
            log.info("%s; trying again in %g s", exc, LOCKED_RETRY)
            state.blocked_until = time.monotonic() + LOCKED_RETRY
            if round_.report is None:
                return None
        state.events = 0
        end = time.monotonic()
        round_.seconds = end - start
        round_.latency = end - oldest
        return round_

    def _index(self, roots: Sequence[str]) -> IndexReport:
        return self.engine.index(roots, exclude=self.exclude, include_hidden=self.include_hidden,
                                 progress=self.progress, engine=self.index_engine, ray=self.ray,
                                 ocr=self.ocr, add_extensions=self.add_extensions,
                                 only_extensions=self.only_extensions)


class _Handler(FileSystemEventHandler):
    """Queues (kind, src, dest, is_dir) of each event for the watcher's own thread."""

    def __init__(self, events: queue.SimpleQueue[tuple[str, str, str | None, bool]]) -> None:
        super().__init__()
        self.events = events

    def dispatch(self, event: FileSystemEvent) -> None:
        kind = event.event_type
        if kind == "closed_no_write" or kind == "opened":
            return
        if kind == "closed":
            kind = "modified"
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if getattr(event, "dest_path", "") else None
        self.events.put((kind, src, dest, bool(event.is_directory)))


def _signature(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat_module.S_ISREG(st.st_mode):
        return None
    return st.st_size, st.st_mtime_ns


def _coalesce(files: list[str], unsettled: dict[str, _Waiting], *, simple_rules: bool
              ) -> list[str]:
    """The roots for one round: the files, except that a folder holding many of them (and no
    file still being written) is given as the folder itself (one walk instead of many)."""
    if not simple_rules:
        return sorted(files)
    by_folder: dict[str, list[str]] = {}
    for path in files:
        by_folder.setdefault(os.path.dirname(path), []).append(path)
    busy = {os.path.dirname(p) for p in unsettled}
    roots: list[str] = []
    for folder, paths in by_folder.items():
        if len(paths) >= COALESCE and not any(is_under(b, folder) for b in busy):
            roots.append(folder)
        else:
            roots.extend(paths)
    return sorted(roots)


def _observer_problem(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return ("the inotify watch limit is reached (raise fs.inotify.max_user_watches, or "
                "use --poll)")
    if exc.errno == errno.EMFILE:
        return "the inotify instance limit is reached (raise fs.inotify.max_user_instances)"
    return exc.strerror or str(exc)


class BackgroundWatch:
    """A :class:`Watcher` in a thread of its own (``vlmsearch serve --watch``), on an engine
    of its own for the same index folder (``open_engine``): the serving engine's searches
    follow its commits exactly as they follow another process's index run. ``on_round`` and
    ``on_error`` are called from that thread."""

    def __init__(
        self,
        open_engine: Callable[[], Engine],
        roots: Sequence[str | os.PathLike[str]],
        *,
        options: WatchOptions | None = None,
        on_round: Callable[[WatchRound], None] = lambda r: None,
        on_error: Callable[[BaseException], None] = lambda e: None,
        **index_options: Any,
    ) -> None:
        self._open_engine = open_engine
        self._roots = list(roots)
        self._options = options
        self._index_options = index_options
        self._on_round = on_round
        self._on_error = on_error
        self._watcher: Watcher | None = None
        self._stopping = threading.Event()
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlmsearch-watch", daemon=True)
        self.error: BaseException | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the round in progress and wait for the thread (up to ``timeout``)."""
        self._stopping.set()
        watcher = self._watcher
        if watcher is not None:
            watcher.stop()
        self._thread.join(timeout)

    def _run(self) -> None:
        try:
            with self._open_engine() as engine:
                watcher = engine.watch(self._roots, options=self._options,
                                       **self._index_options)
                self._watcher = watcher
                if self._stopping.is_set():
                    return
                for done in watcher.rounds():
                    self._on_round(done)
        except Exception as exc:  # reported to the owner, never lost
            self.error = exc
            log.error("watching stopped: %s", exc)
            self._on_error(exc)
