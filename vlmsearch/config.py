"""Settings and where indexes live.

The index home is ``$VLMSEARCH_HOME`` when set, else the platform's user data folder
(``~/.local/share/vlmsearch`` on Linux, ``~/Library/Application Support/vlmsearch`` on macOS,
``%LOCALAPPDATA%\\vlmsearch`` on Windows). ``python cli.py`` in a checkout sets
``VLMSEARCH_HOME`` to the checkout's git-ignored ``indexes/`` folder.
"""

from __future__ import annotations

import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

from .errors import UsageError
from .formats import IMAGE_EXTENSIONS as _FORMAT_EXTENSIONS

DEFAULT_MODEL = "openclip:ViT-B-32/laion2b_s34b_b79k"
DEFAULT_INDEX_NAME = "default"

IMAGE_EXTENSIONS: frozenset[str] = _FORMAT_EXTENSIONS
"""The extensions indexed by default (the table is in :mod:`vlmsearch.formats`)."""


@dataclass(frozen=True)
class Settings:
    """Tunables of one engine. Every field has a safe default; apps override what they need."""

    batch_size: int = 32
    """Images per model forward pass."""
    device: str = "auto"
    """``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N`` or ``mps``."""
    max_pixels: int = 100_000_000
    """Images declaring more pixels than this are skipped as possible decompression bombs."""
    decode_workers: int = 0
    """Parallel decoders; 0 picks one per CPU core."""
    checkpoint_images: int = 500
    """Commit indexing work at least every this many images ..."""
    checkpoint_seconds: float = 60.0
    """... and at least every this many seconds, so a crash redoes at most that much."""
    follow_symlinks: bool = True
    """Follow symbolic links to files and folders while walking (loops are detected)."""
    exact_search_limit: int = 100_000
    """Collections up to this many vectors are searched exactly; larger ones use an
    approximate (IVF) index with calibrated recall (see ``vlmsearch.store.vectors``)."""
    extensions: frozenset[str] = field(default=IMAGE_EXTENSIONS)
    """File name extensions (lower case, with dot) that are considered images."""

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise UsageError(f"batch size must be at least 1 (got {self.batch_size})")
        if self.max_pixels < 1:
            raise UsageError(f"the pixel limit must be positive (got {self.max_pixels})")
        if self.checkpoint_images < 1:
            raise UsageError("the checkpoint interval must be at least 1 image")
        if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", self.device):
            raise UsageError(
                f"unknown device {self.device!r}: use auto, cpu, cuda, cuda:N or mps"
            )


def user_data_dir() -> Path:
    """The platform's per-user data folder for vlmsearch (not created)."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "vlmsearch"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Application Support" / "vlmsearch"
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "vlmsearch"


def index_home() -> Path:
    """The folder that holds named indexes: ``$VLMSEARCH_HOME`` or the user data folder."""
    env = os.environ.get("VLMSEARCH_HOME")
    return Path(env).expanduser() if env else user_data_dir()


_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def index_dir_for(name: str | None = None, index_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolve ``--index NAME`` / ``--index-dir DIR`` to a folder. ``index_dir`` wins."""
    if index_dir is not None:
        return Path(index_dir).expanduser().absolute()
    name = name or DEFAULT_INDEX_NAME
    if not _NAME_RE.fullmatch(name):
        raise UsageError(
            f"invalid index name {name!r}: use letters, digits, '.', '_' or '-' "
            "(or pass a folder with --index-dir)"
        )
    return (index_home() / name).absolute()
