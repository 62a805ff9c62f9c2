"""Errors meant for people.

Every error the library raises on purpose is a :class:`VlmsearchError`. Its message says what
went wrong *and how to fix it*, so the CLI can print it as is (no traceback) and an app can show
it to its users. The CLI turns these into an exit code in one place (``vlmsearch.cli``).
"""

from __future__ import annotations


class VlmsearchError(Exception):
    """Base class: a problem the user can fix. ``str(err)`` is the complete message."""

    exit_code = 1


class UsageError(VlmsearchError):
    """Arguments that cannot work together (e.g. a query with neither text nor image)."""

    exit_code = 2


class IndexNotFoundError(VlmsearchError):
    """The index folder does not exist or holds no index."""


class IndexFormatError(VlmsearchError):
    """The index folder exists but its files are unreadable or from an unknown format version."""


class IndexLockedError(VlmsearchError):
    """Another process is writing to the index."""


class ModelMismatchError(VlmsearchError):
    """The index was built with a different model than the one asked for."""


class ModelSpecError(VlmsearchError):
    """A ``--model`` string that names no model vlmsearch knows how to load."""


class ModelUnavailableError(VlmsearchError):
    """The model is known but its weights cannot be loaded (no network, missing file, ...)."""


class NotInIndexError(VlmsearchError):
    """An id that names no indexed image (the web layer answers 404)."""


class ImageError(VlmsearchError):
    """An image given as a query could not be read."""


class InputError(VlmsearchError):
    """A file given as input (captions, lists, paths) is missing or malformed."""


class StorageError(VlmsearchError):
    """The index could not be written (disk full, read-only folder, ...); nothing was lost."""


class OfflineError(ModelUnavailableError):
    """A model's weights are not on this machine and the place they come from cannot be
    reached (or ``HF_HUB_OFFLINE`` forbids trying)."""


def shorten(text: str, limit: int = 200) -> str:
    """``text`` on one line, at most ``limit`` characters, cut at a word boundary (never inside
    a word) and marked with an ellipsis when cut."""
    text = " ".join(text.split())
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:  # a word boundary not too far back; else cut a very long token
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"


def describe(exc: BaseException, limit: int = 200) -> str:
    """An exception's message for a person: its first non-empty line, shortened at a word
    boundary; the exception's class name when it has no message."""
    for line in str(exc).splitlines():
        if line.strip():
            return shorten(line, limit)
    return exc.__class__.__name__
