"""Photos with real EXIF blocks, written by Pillow: dates with offsets, cameras, lenses, GPS."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from tests.imagegen import picture


def _dms(value: float) -> tuple[float, float, float]:
    value = abs(value)
    degrees = int(value)
    minutes = int((value - degrees) * 60)
    seconds = round(((value - degrees) * 60 - minutes) * 60, 4)
    return (float(degrees), float(minutes), seconds)


def exif_block(
    *,
    taken: str | None = None,
    offset: str | None = None,
    make: str | None = None,
    model: str | None = None,
    lens: str | None = None,
    gps: tuple[float, float] | None = None,
    extra: dict[int, Any] | None = None,
) -> Image.Exif:
    exif = Image.Exif()
    if make is not None:
        exif[0x010F] = make
    if model is not None:
        exif[0x0110] = model
    sub = exif.get_ifd(0x8769)
    if taken is not None:
        sub[0x9003] = taken
    if offset is not None:
        sub[0x9011] = offset
    if lens is not None:
        sub[0xA434] = lens
    if gps is not None:
        lat, lon = gps
        block = exif.get_ifd(0x8825)
        block[1] = "N" if lat >= 0 else "S"
        block[2] = _dms(lat)
        block[3] = "E" if lon >= 0 else "W"
        block[4] = _dms(lon)
    for tag, value in (extra or {}).items():
        exif[tag] = value
    return exif


def photo(path: Path, colour: str | tuple[int, int, int] = "red", *,
          size: tuple[int, int] = (64, 48), fmt: str | None = None, **tags: Any) -> Path:
    """A picture at ``path`` with an EXIF block made of ``tags`` (see :func:`exif_block`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    formats = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".webp": "WEBP",
               ".tif": "TIFF", ".tiff": "TIFF", ".heic": "HEIF", ".avif": "AVIF"}
    fmt = fmt or formats[path.suffix.lower()]
    img = picture(colour, size)
    if fmt == "HEIF":
        from pillow_heif import register_heif_opener

        register_heif_opener()
    img.save(path, format=fmt, exif=exif_block(**tags).tobytes())
    return path
