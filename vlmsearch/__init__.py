"""vlmsearch: local-first semantic image search.

The public API is :class:`Engine` (open an index, index folders, search by text or image),
the result types :class:`Hit`, :class:`TextHit` and :class:`SearchResults`,
:class:`Filter` (search by date, place, camera, folder), :class:`IndexReport`,
:class:`Settings`, and
the errors (all subclasses of :class:`VlmsearchError`, whose messages say how to fix the
problem). Importing ``vlmsearch`` is cheap: torch is only imported when a model is loaded.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import (
    ImageError,
    IndexFormatError,
    IndexLockedError,
    IndexNotFoundError,
    InputError,
    ModelMismatchError,
    ModelSpecError,
    ModelUnavailableError,
    NotInIndexError,
    StorageError,
    UsageError,
    VlmsearchError,
)

__version__ = "0.1.0"

__all__ = [
    "DuplicateGroup",
    "DuplicateRule",
    "Engine",
    "Filter",
    "Hit",
    "ImageError",
    "IndexFormatError",
    "IndexInfo",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexReport",
    "InputError",
    "ModelMismatchError",
    "ModelSpecError",
    "ModelUnavailableError",
    "NotInIndexError",
    "Progress",
    "SearchResults",
    "Settings",
    "StorageError",
    "TextHit",
    "UsageError",
    "VlmsearchError",
    "WatchRound",
    "Watcher",
    "__version__",
]

_LAZY = {
    "DuplicateGroup": "duplicates",
    "DuplicateRule": "duplicates",
    "Watcher": "watch",
    "WatchRound": "watch",
    "Engine": "engine",
    "Filter": "search.filters",
    "IndexInfo": "engine",
    "Hit": "search.results",
    "TextHit": "search.results",
    "SearchResults": "search.results",
    "IndexReport": "indexing.report",
    "Progress": "indexing.report",
    "Settings": "config",
}

if TYPE_CHECKING:
    from .config import Settings
    from .duplicates import DuplicateGroup, DuplicateRule
    from .engine import Engine, IndexInfo
    from .indexing.report import IndexReport, Progress
    from .search.filters import Filter
    from .search.results import Hit, SearchResults, TextHit
    from .watch import Watcher, WatchRound


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vlmsearch' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(f".{module}", __name__), name)
