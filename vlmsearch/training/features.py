"""Frozen-tower features, computed once and cached on disk.

Training a fusion head reads every image and caption many times; the towers never change, so
their outputs are cached in ``<index home>/.cache/features.sqlite``, keyed by the tower's id
(which names its weights and settings), the view (``center`` or ``flip``) and the content digest
of the file (or text). Re-runs, other heads and other splits reuse them. Images reach the tower
through the same decoder as indexing (:func:`vlmsearch.pipeline.decode_parallel`).
"""

from __future__ import annotations

import hashlib
import sqlite3
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..config import index_home
from ..decode import DecodeError, content_digest
from ..errors import InputError
from ..pipeline import decode_parallel

Progress = Callable[[str, int, int], None]
VIEWS = ("center", "flip", "zoom", "crop_tl", "crop_br", "crop_center_flip")
"""Image views for training augmentation and test-time averaging, all made from the decoded
crop: as is, mirrored, resized to 256 and center-cropped back (zoom), and the top-left,
bottom-right and (mirrored) central 80% squares resized back up."""


def view_pixels(pixels: np.ndarray, view: str) -> np.ndarray:
    """Apply ``view`` to a batch of square uint8 crops (N×S×S×3)."""
    if view == "center":
        return pixels
    if view == "flip":
        return pixels[:, :, ::-1, :]
    from PIL import Image

    size = pixels.shape[1]
    if view == "zoom":
        big = round(size * 256 / 224)
        off = (big - size) // 2
        box = (off * size / big, off * size / big, (off + size) * size / big,
               (off + size) * size / big)
    else:
        side = size * 0.8
        corner = {"crop_tl": (0.0, 0.0), "crop_br": (size - side, size - side),
                  "crop_center_flip": ((size - side) / 2, (size - side) / 2)}[view]
        box = (corner[0], corner[1], corner[0] + side, corner[1] + side)
    out = np.stack([np.asarray(Image.fromarray(p).resize((size, size), Image.Resampling.BILINEAR,
                                                         box=box)) for p in pixels])
    return out[:, :, ::-1, :] if view == "crop_center_flip" else out


def cache_path() -> Path:
    return index_home() / ".cache" / "features.sqlite"


class FeatureCache:
    """(tower id, view, key) → float16 array."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path or cache_path()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path)
        self._db.execute("pragma journal_mode = wal")
        self._db.execute(
            "create table if not exists features (tower text, view text, key text, shape text, "
            "data blob, primary key (tower, view, key))")

    def close(self) -> None:
        self._db.close()

    def get(self, tower: str, view: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for start in range(0, len(keys), 500):
            chunk = list(keys[start:start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self._db.execute(
                f"select key, shape, data from features where tower = ? and view = ? "
                f"and key in ({marks})", [tower, view, *chunk])
            for key, shape, data in rows:
                dims = tuple(int(x) for x in shape.split("x") if x)
                out[key] = np.frombuffer(data, dtype=np.float16).reshape(dims)
        return out

    def put(self, tower: str, view: str, items: Sequence[tuple[str, np.ndarray]]) -> None:
        rows = [(tower, view, key, "x".join(str(d) for d in arr.shape),
                 np.ascontiguousarray(arr, dtype=np.float16).tobytes()) for key, arr in items]
        with self._db:
            self._db.executemany("insert or replace into features values (?, ?, ?, ?, ?)", rows)


@dataclass
class TextFeatureSet:
    """Token features padded to the longest text (M×T×D), mask (M×T) and means (M×D)."""

    tokens: np.ndarray | None
    mask: np.ndarray | None
    mean: np.ndarray


def image_features(
    encoder: object,
    paths: Sequence[str],
    *,
    view: str = "center",
    form: str = "map",
    cache: FeatureCache,
    batch_size: int = 64,
    progress: Progress | None = None,
) -> np.ndarray:
    """Tower outputs for ``paths`` in ``form`` (see ``towers.IMAGE_FORMS``), float16, computed
    through the indexing decoder for the files not cached yet."""
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}: use one of {', '.join(VIEWS)}")
    tower = f"{encoder.image_tower_id}:{form}"  # type: ignore[attr-defined]

    def compute(pixels: np.ndarray) -> np.ndarray:
        feats = encoder.image_features(view_pixels(pixels, view), form)  # type: ignore[attr-defined]
        return feats.float().cpu().numpy().astype(np.float16)

    def report(done: int, total: int) -> None:
        if progress:
            progress(f"image features ({view})", done, total)

    return cached_image_outputs(paths, encoder.image_spec,  # type: ignore[attr-defined]
                                cache, tower, view, compute, batch_size=batch_size,
                                progress=report)


def cached_image_outputs(
    paths: Sequence[str], spec: Any, cache: FeatureCache, tower: str, view: str,
    compute: Callable[[np.ndarray], np.ndarray], *, batch_size: int = 64,
    progress: Callable[[int, int], None] | None = None,
    starting: Callable[[int], None] | None = None,
) -> np.ndarray:
    """``compute``'s output for each image of ``paths`` (its pixels decoded by the indexing
    decoder with ``spec``), stacked: read from ``cache`` under ``tower``/``view`` by file
    content, computed in batches and cached for the rest. ``starting`` hears how many images
    will be computed (when some will), ``progress`` (done, total) after each batch."""
    keys = [_file_key(p) for p in paths]
    found = cache.get(tower, view, keys)
    todo = [(i, p) for i, (p, k) in enumerate(zip(paths, keys, strict=True)) if k not in found]
    done = len(paths) - len(todo)
    if progress:
        progress(done, len(paths))
    if todo and starting:
        starting(len(todo))
    batch: list[tuple[int, np.ndarray]] = []

    def flush() -> None:
        nonlocal done
        arr = compute(np.stack([px for _, px in batch]))
        cache.put(tower, view, [(keys[i], a) for (i, _), a in zip(batch, arr, strict=True)])
        for (i, _), a in zip(batch, arr, strict=True):
            found[keys[i]] = a
        done += len(batch)
        batch.clear()
        if progress:
            progress(done, len(paths))

    for (i, path), result in decode_parallel(todo, lambda item: item[1], spec,
                                             max_pixels=10**9, window=batch_size * 2):
        if isinstance(result, DecodeError):
            raise InputError(f"cannot train on {path}: {result.reason}")
        batch.append((i, result.pixels))
        if len(batch) >= batch_size:
            flush()
    if batch:
        flush()
    return np.stack([found[k] for k in keys])


def text_features(
    encoder: object,
    texts: Sequence[str],
    *,
    tokens: bool,
    cache: FeatureCache,
    batch_size: int = 256,
    progress: Progress | None = None,
) -> TextFeatureSet:
    """Text tower outputs for ``texts``: means always, token features when ``tokens``."""
    tower = encoder.text_tower_id  # type: ignore[attr-defined]
    keys = [hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=16).hexdigest()
            for t in texts]
    views = ("mean", "tokens") if tokens else ("mean",)
    found = {v: cache.get(tower, v, keys) for v in views}
    todo = [i for i, k in enumerate(keys) if any(k not in found[v] for v in views)]
    for start in range(0, len(todo), batch_size):
        rows = todo[start:start + batch_size]
        feats = encoder.text_features([texts[i] for i in rows])  # type: ignore[attr-defined]
        mean = feats.mean.float().cpu().numpy().astype(np.float16)
        toks = feats.tokens.float().cpu().numpy().astype(np.float16)
        lengths = feats.mask.sum(1).long().cpu().numpy()
        cache.put(tower, "mean", [(keys[i], m) for i, m in zip(rows, mean, strict=True)])
        found["mean"].update({keys[i]: m for i, m in zip(rows, mean, strict=True)})
        if tokens:
            items = [(keys[i], t[:n]) for i, t, n in zip(rows, toks, lengths, strict=True)]
            cache.put(tower, "tokens", items)
            found["tokens"].update(dict(items))
        if progress:
            progress("text features", len(texts) - len(todo) + start + len(rows), len(texts))
    mean_arr = np.stack([found["mean"][k] for k in keys])
    if not tokens:
        return TextFeatureSet(None, None, mean_arr)
    seqs = [found["tokens"][k] for k in keys]
    longest = max(len(s) for s in seqs)
    tok_arr = np.zeros((len(seqs), longest, seqs[0].shape[1]), dtype=np.float16)
    mask = np.zeros((len(seqs), longest), dtype=bool)
    for i, s in enumerate(seqs):
        tok_arr[i, : len(s)] = s
        mask[i, : len(s)] = True
    return TextFeatureSet(tok_arr, mask, mean_arr)


def _file_key(path: str) -> str:
    with open(path, "rb") as fh:
        return content_digest(fh.read())
