"""What decoder libraries write straight to the terminal, captured and kept with the file.

libtiff ("TIFFFetchNormalTag: ...", "Fax4Decode: Bad code word at line ..."), LibRaw and libjxl
report problems by writing to file descriptor 2 themselves, below Python, where no logging
setting reaches them: on a folder of odd TIFFs they flood the screen. Pillow installs its own
silent handlers for libjpeg, libpng, libwebp, libavif and OpenJPEG, so those never print.

How the capture works, and why it is safe with decoding in threads:

* **One redirect for the whole run.** File descriptors belong to the process, not to a thread,
  so the redirect is process-wide and reference counted: while at least one :func:`capturing`
  block is open, descriptor 2 points at an anonymous temporary file (opened for appending, so
  every write lands at its end). ``Engine.index`` holds one block for its whole run, so the
  descriptors change twice per run, not per file; a lone decode (a query image) opens its own.
  Python's own ``sys.stderr``, when it is the stream writing to descriptor 2, is replaced for
  that time by one writing to a copy of the original descriptor 2: the application's progress
  bar, log lines and messages still reach the terminal; only what is written below Python is
  captured.
* **Attribution by a lock.** The formats whose libraries print (TIFF, camera RAW, JPEG XL; see
  :func:`vlmsearch.decode.open_image`) are decoded inside :func:`native_call`, which holds one
  lock: at its start it notes where the capture file ends, at its end it reads what was
  appended, which is this file's. The other formats decode in parallel, outside the lock (they
  never write to descriptor 2; if something else does meanwhile, it is attributed to the file
  being decoded, and at worst appears in its reason). The cost: TIFF and RAW decodes run one
  at a time (for RAW only the LibRaw part; a RAW's embedded JPEG preview is decoded outside
  the lock).
* **Python warnings** raised in a thread that is decoding (:func:`decoding`) are kept with that
  file instead of being shown (``warnings.showwarning`` is wrapped while capturing; warning
  filters still decide which warnings are raised at all).

What was captured becomes part of a failed file's recorded reason (:meth:`Notes.summary`:
the first few distinct lines); for a file that decoded, it is logged at debug level.
Where descriptor 2 cannot be redirected (an embedding host without real descriptors), nothing
is captured and decoding works as before.
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import threading
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, TextIO

MAX_CAPTURE_BYTES = 1 << 20
"""The capture file is emptied between native calls once it holds this much."""
MAX_READ_BYTES = 64 << 10
"""At most this much of one file's output is read back."""


@dataclass
class Notes:
    """What one file's decoding said: lines from native libraries and Python warnings."""

    native: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.native or self.warnings)

    def summary(self, lines: int = 3, chars: int = 300) -> str:
        """The first ``lines`` distinct lines, joined, at most ``chars`` long ('' if none)."""
        seen: dict[str, None] = {}
        for line in [*self.native, *self.warnings]:
            text = " ".join(line.split())
            if text and text not in seen:
                seen[text] = None
        kept = list(seen)[:lines]
        more = len(seen) - len(kept)
        text = "; ".join(kept) + (f"; and {more} more" if more > 0 else "")
        return text if len(text) <= chars else text[: chars - 1] + "…"


class _Capture:
    """The process-wide redirect of descriptor 2 (see the module docstring)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.fd: int | None = None
        self.saved_fd: int | None = None
        self.saved_stderr: TextIO | Any = None
        self.replacement: TextIO | None = None
        self.saved_showwarning: Any = None

    def enter(self) -> None:
        with self.lock:
            self.depth += 1
            if self.depth == 1:
                self._start()

    def leave(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth == 0:
                self._stop()

    def _start(self) -> None:
        with contextlib.suppress(Exception):
            sys.stderr.flush()
        try:
            fd, name = tempfile.mkstemp(prefix="vlmsearch-stderr-")
            os.close(fd)
            flags = os.O_RDWR | os.O_APPEND | getattr(os, "O_TEMPORARY", 0) | getattr(
                os, "O_BINARY", 0)
            fd = os.open(name, flags)
            if not hasattr(os, "O_TEMPORARY"):  # POSIX: gone once closed
                os.unlink(name)
            saved = os.dup(2)
        except OSError:
            return
        try:
            os.dup2(fd, 2)
        except OSError:
            os.close(fd)
            os.close(saved)
            return
        self.fd, self.saved_fd = fd, saved
        stream = sys.stderr
        if _writes_to_fd2(stream):
            self.saved_stderr = stream
            self.replacement = open(  # noqa: SIM115 - closed in _stop
                os.dup(saved), "w", buffering=1, encoding=getattr(stream, "encoding", None)
                or "utf-8", errors="backslashreplace", closefd=True)
            sys.stderr = self.replacement
        self.saved_showwarning = warnings.showwarning
        warnings.showwarning = _showwarning

    def _stop(self) -> None:
        if self.fd is None or self.saved_fd is None:
            return
        if warnings.showwarning is _showwarning:
            warnings.showwarning = self.saved_showwarning
        if self.replacement is not None:
            with contextlib.suppress(Exception):
                self.replacement.flush()
            if sys.stderr is self.replacement:
                sys.stderr = self.saved_stderr
            with contextlib.suppress(OSError):
                self.replacement.close()
        with contextlib.suppress(OSError):
            os.dup2(self.saved_fd, 2)
        for fd in (self.saved_fd, self.fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self.fd = self.saved_fd = self.replacement = self.saved_stderr = None

    def end(self) -> int:
        if self.fd is None:
            return 0
        try:
            return os.fstat(self.fd).st_size
        except OSError:
            return 0

    def read(self, start: int) -> str:
        """What was appended since ``start`` (callers hold the native lock)."""
        if self.fd is None:
            return ""
        try:
            end = os.fstat(self.fd).st_size
            if end <= start:
                return ""
            os.lseek(self.fd, start, os.SEEK_SET)  # writes still append (O_APPEND)
            data = os.read(self.fd, min(end - start, MAX_READ_BYTES))
            if end > MAX_CAPTURE_BYTES:
                os.ftruncate(self.fd, 0)
        except OSError:
            return ""
        return data.decode("utf-8", "replace")


def _writes_to_fd2(stream: object) -> bool:
    try:
        return stream is not None and stream.fileno() == 2  # type: ignore[attr-defined]
    except (AttributeError, OSError, ValueError, io.UnsupportedOperation):
        return False


_capture = _Capture()
_native_lock = threading.Lock()
_local = threading.local()


def _current() -> Notes | None:
    return getattr(_local, "notes", None)


def _showwarning(message: Any, category: Any, filename: str, lineno: int,
                 file: Any = None, line: str | None = None) -> None:
    notes = _current()
    if notes is not None:
        notes.warnings.append(f"{getattr(category, '__name__', 'Warning')}: {message}")
        return
    original = _capture.saved_showwarning or warnings._showwarning_orig  # type: ignore[attr-defined]
    original(message, category, filename, lineno, file, line)


@contextlib.contextmanager
def capturing() -> Iterator[None]:
    """Keep what native libraries write to descriptor 2 off the terminal while this block is
    open (process-wide, nestable, from any thread)."""
    _capture.enter()
    try:
        yield
    finally:
        _capture.leave()


def active() -> bool:
    """Whether a :func:`capturing` block is open."""
    return _capture.depth > 0


@contextlib.contextmanager
def decoding(notes: Notes) -> Iterator[Notes]:
    """Mark this thread as decoding one file: its Python warnings and the output of its
    :func:`native_call` blocks go to ``notes``."""
    previous = _current()
    _local.notes = notes
    try:
        yield notes
    finally:
        _local.notes = previous


@contextlib.contextmanager
def native_call() -> Iterator[None]:
    """Run a native decoder that may write to descriptor 2: one at a time, with what it
    writes added to this thread's :class:`Notes` (see the module docstring)."""
    with capturing(), _native_lock:
        start = _capture.end()
        try:
            yield
        finally:
            text = _capture.read(start)
            notes = _current()
            if text and notes is not None:
                notes.native.extend(line for line in text.splitlines() if line.strip())
