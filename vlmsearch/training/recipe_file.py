"""Reading a ``--config`` recipe file for ``vlmsearch train``."""

from __future__ import annotations

import json
import os
from typing import Any

from ..errors import InputError, UsageError

SECTIONS = frozenset({"head", "training", "image_tower", "text_tower", "text_path"})
"""``text_path`` (name, route, blend, project_dim) only with ``vlmsearch train --base``."""


def read_recipe_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The recipe overrides in a JSON file: an object with only the keys in
    :data:`SECTIONS` (each a section of settings, checked by the trainer)."""
    try:
        with open(path, encoding="utf-8") as fh:
            overrides = json.load(fh)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read --config {os.fspath(path)}: {exc}") from exc
    if not isinstance(overrides, dict) or set(overrides) - SECTIONS:
        raise UsageError(f"--config {os.fspath(path)} must be a JSON object with only the "
                         f"keys {', '.join(sorted(SECTIONS))}")
    return overrides
