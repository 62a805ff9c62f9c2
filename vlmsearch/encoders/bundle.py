"""Model bundles: a dual encoder (image tower + text tower) with a trained fusion head."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..errors import ModelSpecError
from .base import Encoder


def resolve_bundle_path(spec: str) -> Path | None:
    path = Path(spec).expanduser()
    if (path / "bundle.json").is_file():
        return path
    return None


def load_bundle_encoder(spec: str, body: str, *, device: str = "auto") -> Encoder:
    raise ModelSpecError(f"bundle models are not available yet ({spec})")


def shipped_bundles() -> list[dict[str, Any]]:
    return []
