"""Generated test images (Pillow only): solid colours with a shape, EXIF orientation, and
the odd formats photo folders hold."""

from __future__ import annotations

import io
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
