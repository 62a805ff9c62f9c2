"""How the index tells whether two path strings name the same file.

Linux file systems compare names byte for byte. macOS (APFS, HFS+) ignores case and Unicode
normalisation by default ("Café" typed with one é or with e + a combining accent is one file,
and so are ~/pictures and ~/Pictures); Windows (NTFS) ignores case. Comparing paths as raw bytes
there would store one photo twice under two spellings and never remove the stale one. So every
file row carries a *path key*: its path as that file system compares it; lookups, "everything
under this folder" ranges and the one-row-per-file rule all use the key, while the path itself
keeps the spelling last seen, for showing and opening.

The mode is chosen for the platform when an index is created (``VLMSEARCH_PATH_KEYS`` forces
one, which is how the tests exercise the macOS and Windows rules on Linux) and recorded in the
index, so a copy opened elsewhere keeps its keys.
"""

from __future__ import annotations

import os
import sys
import unicodedata

MODES = ("exact", "case-insensitive", "macos")


def platform_mode() -> str:
    forced = os.environ.get("VLMSEARCH_PATH_KEYS", "").strip()
    if forced:
        if forced not in MODES:
            raise ValueError(f"VLMSEARCH_PATH_KEYS={forced!r}: use one of {', '.join(MODES)}")
        return forced
    if sys.platform == "darwin":
        return "macos"
    if sys.platform == "win32":
        return "case-insensitive"
    return "exact"


class PathKeys:
    """The key of a path under one of :data:`MODES`."""

    def __init__(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown path key mode {mode!r}")
        self.mode = mode

    def key(self, path: str) -> bytes:
        if self.mode == "exact":
            return os.fsencode(path)
        text = path
        if self.mode == "macos":
            text = unicodedata.normalize("NFD", text)
        # str.casefold is a per-character mapping: the key of a folder is a prefix of the keys
        # of everything under it, which the range queries rely on
        return text.casefold().encode("utf-8", "surrogateescape")
