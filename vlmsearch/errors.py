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
