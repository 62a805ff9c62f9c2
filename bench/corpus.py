"""Deterministic benchmark corpora.

``photo_corpus(folder, big=100, medium=100)`` writes photo-like JPEGs (smooth gradients, shapes,
sensor-like noise, quality 90, 4:2:0): ``big`` of 4000×3000 and ``medium`` of 1600×1200. Same
seed, same bytes, so runs on different machines read the same files. Existing files are kept.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter


def _photo(rng: np.random.Generator, width: int, height: int) -> Image.Image:
    # a smooth two-colour gradient, a few soft shapes, mild noise: compresses like a photo
    small_w, small_h = width // 8, height // 8
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    t = np.linspace(0, 1, small_w)[None, :, None] * np.linspace(0.6, 1, small_h)[:, None, None]
    base = (a * (1 - t) + b * t).astype(np.uint8)
    img = Image.fromarray(base)
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):
        x0, y0 = int(rng.integers(0, small_w)), int(rng.integers(0, small_h))
        x1, y1 = x0 + int(rng.integers(10, small_w // 2)), y0 + int(rng.integers(10, small_h // 2))
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)((x0, y0, x1, y1), fill=colour)
    img = img.filter(ImageFilter.GaussianBlur(2)).resize((width, height), Image.Resampling.BILINEAR)
    noise = rng.normal(0, 6, (height, width, 1)).astype(np.int16)
    arr = np.clip(np.asarray(img, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr)


def photo_corpus(folder: Path, *, big: int = 100, medium: int = 100, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(big + medium):
        width, height = (4000, 3000) if i < big else (1600, 1200)
        path = folder / f"{'big' if i < big else 'medium'}_{i:04d}.jpg"
        img_rng = np.random.default_rng(rng.integers(0, 2**32))
        if not path.exists():
            _photo(img_rng, width, height).save(path, quality=90, subsampling=2)
        paths.append(path)
    return paths


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--big", type=int, default=100)
    parser.add_argument("--medium", type=int, default=100)
    args = parser.parse_args()
    paths = photo_corpus(args.folder, big=args.big, medium=args.medium)
    print(f"{len(paths)} images in {args.folder}")


if __name__ == "__main__":
    main()
