"""Generated test images (Pillow only): solid colours with a shape, EXIF orientation, and
the odd formats photo folders hold."""

from __future__ import annotations

import io
import random
from pathlib import Path

from PIL import Image, ImageDraw

from vlmsearch.encoders.fake import COLOURS


def picture(colour: str | tuple[int, int, int], size: tuple[int, int] = (64, 48)) -> Image.Image:
    rgb = COLOURS[colour] if isinstance(colour, str) else colour
    img = Image.new("RGB", size, rgb)
    draw = ImageDraw.Draw(img)
    w, h = size
    shade = tuple(max(0, c - 25) for c in rgb)
    draw.ellipse((w // 4, h // 4, w // 2, h // 2), fill=shade)
    return img


def make_image(
    path: Path,
    colour: str | tuple[int, int, int],
    *,
    size: tuple[int, int] = (64, 48),
    orientation: int | None = None,
    fmt: str | None = None,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = picture(colour, size)
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
               ".bmp": "BMP", ".gif": "GIF", ".tif": "TIFF", ".tiff": "TIFF"}
    fmt = fmt or formats[path.suffix.lower()]
    kwargs: dict = {}
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        kwargs["exif"] = exif
    if fmt == "JPEG":
        kwargs["quality"] = 95
    img.save(path, format=fmt, **kwargs)
    return path


def jpeg_bytes(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _mix(rgb: tuple[int, int, int], other: tuple[int, int, int], t: float) -> tuple[int, ...]:
    return tuple(round(a + (b - a) * t) for a, b in zip(rgb, other, strict=True))


def scene(colour: str, seed: int, size: tuple[int, int]) -> Image.Image:
    """A small landscape-like picture whose mean colour stays close to ``colour``: a gradient
    sky, a sun, hills and a few dots, all tints and shades of the one colour."""
    rng = random.Random(seed)
    base = COLOURS[colour]
    w, h = size
    img = Image.new("RGB", size)
    draw = ImageDraw.Draw(img)
    top, bottom = _mix(base, (255, 255, 255), 0.22), _mix(base, (0, 0, 0), 0.12)
    for y in range(h):
        draw.line([(0, y), (w, y)], fill=_mix(top, bottom, y / h))  # type: ignore[arg-type]
    r = rng.randint(h // 10, h // 6)
    cx, cy = rng.randint(r, w - r), rng.randint(r, h // 2)
    draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=_mix(base, (255, 255, 255), 0.45))
    for layer in range(2):
        shade = _mix(base, (0, 0, 0), 0.18 + 0.14 * layer)
        y0 = int(h * (0.55 + 0.15 * layer))
        points = [(0, h)] + [(x, y0 + rng.randint(-h // 9, h // 9))
                             for x in range(0, w + w // 6, w // 6)] + [(w, h)]
        draw.polygon(points, fill=shade)
    for _ in range(rng.randint(3, 9)):
        x, y, d = rng.randint(0, w), rng.randint(0, h), rng.randint(3, w // 28 + 4)
        draw.ellipse((x, y, x + d, y + d), fill=_mix(base, (255, 255, 255), 0.3))
    return img
