"""What a photo says about itself: when it was taken, with which camera and lens, and where.

Read from the image's own metadata, headers only: the EXIF block (JPEG, MPO, HEIC/HEIF, AVIF,
JPEG XL, PNG's ``eXIf``, WebP, TIFF, and camera RAW files that are TIFF containers: DNG, CR2,
NEF, ARW, ORF, RW2, PEF, SRW), XMP, and PNG text chunks. Formats Pillow cannot parse headers
of (CR3, RAF) give their embedded preview's EXIF when they are decoded
(:func:`vlmsearch.decode.decode_bytes`), else nothing; JPEG 2000 and PNM carry none. Nothing
here decodes pixels and nothing here raises: a missing, truncated or hostile block (wrong
types, absurd dates, huge values) gives ``None`` fields, never an error.

Dates: ``taken`` is the date the file itself records, as ISO 8601 with its UTC offset when the
file gives one (EXIF ``OffsetTimeOriginal``): first EXIF ``DateTimeOriginal``, then
``DateTimeDigitized``, then XMP's ``CreateDate``/``DateCreated``, then PNG's ``Creation Time``,
then EXIF ``DateTime`` (when the file was written). Never the file's mtime, which is kept
apart. ``taken_ts`` is that date's *local wall-clock time* as seconds since 1970 (as if it were
UTC), which is what "taken in July" means to the person who took it, wherever that was; it
sorts photos by date. Years outside 1800–2200 are treated as no date (cameras with an unset
clock write 0000 or 9999).

Positions: EXIF GPS latitude/longitude with their N/S/E/W references, checked to lie on the
globe. Exactly (0, 0) is treated as no position: it is what receivers write without a fix.
"""

from __future__ import annotations

import math
import re
import warnings
from dataclasses import dataclass, fields
from datetime import datetime, timedelta, timezone
from typing import Any

from PIL import Image

# A hostile or broken EXIF block is expected here and gives None fields; Pillow's warnings
# about it would only scroll past on the terminal during indexing.
warnings.filterwarnings("ignore", category=UserWarning, module=r"PIL\.TiffImagePlugin")

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
MAKE, MODEL, DATETIME = 0x010F, 0x0110, 0x0132
DATETIME_ORIGINAL, DATETIME_DIGITIZED = 0x9003, 0x9004
OFFSET, OFFSET_ORIGINAL, OFFSET_DIGITIZED = 0x9010, 0x9011, 0x9012
LENS_MAKE, LENS_MODEL = 0xA433, 0xA434
MAX_TEXT = 120
"""Longer camera or lens names are cut: real ones are short, hostile ones are not."""
YEARS = range(1800, 2201)

_EXIF_DATE = re.compile(r"\s*(\d{4})[:\-](\d{2})[:\-](\d{2})[ T](\d{2}):(\d{2})(?::(\d{2}))?")
_ISO_DATE = re.compile(
    r"\s*(\d{4})-(\d{2})-(\d{2})(?:[ T](\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?)?"
    r"\s*(Z|[+-]\d{2}:?\d{2})?")
_OFFSET = re.compile(r"\s*([+-])(\d{2}):?(\d{2})\s*$")
_XMP_DATE = re.compile(rb"(?:xmp:CreateDate|photoshop:DateCreated|exif:DateTimeOriginal)"
                       rb"(?:=\"|>)([^\"<]{4,40})")


@dataclass(frozen=True)
class PhotoMeta:
    """The fields :mod:`vlmsearch.photo_meta` reads (all optional)."""

    taken: str | None = None
    taken_ts: float | None = None
    camera_make: str | None = None
    camera_model: str | None = None
    lens: str | None = None
    lat: float | None = None
    lon: float | None = None

    @property
    def camera(self) -> str | None:
        """Make and model as people say it ("Canon EOS R5", not "Canon Canon EOS R5")."""
        make, model = self.camera_make, self.camera_model
        if not model:
            return make
        if not make or model.lower().startswith(make.split()[0].lower()):
            return model
        return f"{make} {model}"

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


NO_META = PhotoMeta()
"""A photo that says nothing about itself (frozen: safe as a shared default)."""


def read_photo_meta(img: Image.Image) -> PhotoMeta:
    """The metadata of an opened (not necessarily decoded) image; never raises."""
    try:
        exif = img.getexif()
    except Exception:
        exif = None
    main: dict[int, Any] = {}
    sub: dict[int, Any] = {}
    gps: dict[int, Any] = {}
    if exif is not None:
        main = _safe(lambda: dict(exif))
        sub = _safe(lambda: dict(exif.get_ifd(EXIF_IFD)))
        gps = _safe(lambda: dict(exif.get_ifd(GPS_IFD)))
    taken, taken_ts = _date(main, sub, _safe(lambda: dict(img.info), {}))
    lat, lon = _position(gps)
    lens = _text(sub.get(LENS_MODEL))
    return PhotoMeta(taken=taken, taken_ts=taken_ts, camera_make=_text(main.get(MAKE)),
                     camera_model=_text(main.get(MODEL)), lens=lens, lat=lat, lon=lon)


def read_file_meta(path: str) -> PhotoMeta:
    """The metadata of a file, reading its headers only (no pixels); empty when it cannot be
    opened."""
    from .decode import register_optional_openers

    register_optional_openers()
    try:
        with Image.open(path) as img:
            return read_photo_meta(img)
    except Exception:
        return PhotoMeta()


def _safe(read: Any, default: Any = None) -> Any:
    try:
        return read()
    except Exception:
        return {} if default is None else default


def _text(value: Any) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    if not isinstance(value, str):
        return None
    text = " ".join(value.replace("\x00", " ").split())
    return text[:MAX_TEXT] or None


def _date(main: dict[int, Any], sub: dict[int, Any], info: dict[str, Any]
          ) -> tuple[str | None, float | None]:
    candidates: list[tuple[Any, Any]] = [
        (sub.get(DATETIME_ORIGINAL), sub.get(OFFSET_ORIGINAL) or sub.get(OFFSET)),
        (sub.get(DATETIME_DIGITIZED), sub.get(OFFSET_DIGITIZED) or sub.get(OFFSET)),
    ]
    xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
    if isinstance(xmp, str):
        xmp = xmp.encode("utf-8", "replace")
    if isinstance(xmp, bytes):
        found = _XMP_DATE.search(xmp[:200_000])
        if found:
            candidates.append((found.group(1).decode("ascii", "replace"), None))
    for key in ("Creation Time", "creation_time", "date:create"):
        if key in info:
            candidates.append((info[key], None))
    candidates.append((main.get(DATETIME), sub.get(OFFSET)))
    for value, offset in candidates:
        parsed = _parse_date(value, offset)
        if parsed is not None:
            return parsed
    return None, None


def _parse_date(value: Any, offset: Any) -> tuple[str, float] | None:
    text = _text(value)
    if not text:
        return None
    zone: timezone | None = None
    found = _EXIF_DATE.match(text)
    if found:
        parts = [int(p) if p else 0 for p in found.groups()]
    else:
        iso = _ISO_DATE.match(text)
        if not iso:
            return None
        parts = [int(p) if p else 0 for p in iso.groups()[:6]]
        zone = _zone(iso.group(7))
    try:
        if parts[0] not in YEARS:
            return None
        local = datetime(parts[0], parts[1], parts[2], parts[3], parts[4], parts[5])
    except (ValueError, OverflowError):
        return None
    zone = _zone(_text(offset)) or zone
    stamp = (local - datetime(1970, 1, 1)).total_seconds()
    shown = local.replace(tzinfo=zone).isoformat() if zone else local.isoformat()
    return shown, stamp


def _zone(text: str | None) -> timezone | None:
    if not text:
        return None
    if text.strip().upper() == "Z":
        return timezone.utc
    found = _OFFSET.match(text)
    if not found:
        return None
    sign, hours, minutes = found.groups()
    delta = timedelta(hours=int(hours), minutes=int(minutes))
    if delta > timedelta(hours=14):
        return None
    return timezone(-delta if sign == "-" else delta)


def _position(gps: dict[int, Any]) -> tuple[float | None, float | None]:
    lat = _degrees(gps.get(2), gps.get(1), "S")
    lon = _degrees(gps.get(4), gps.get(3), "W")
    if lat is None or lon is None:
        return None, None
    if not (-90 <= lat <= 90 and -180 <= lon <= 180) or (lat == 0 and lon == 0):
        return None, None
    return round(lat, 6), round(lon, 6)


def _degrees(value: Any, ref: Any, negative: str) -> float | None:
    try:
        parts = [float(v) for v in value] if isinstance(value, (tuple, list)) else [float(value)]
        if not 1 <= len(parts) <= 3 or not all(math.isfinite(p) for p in parts):
            return None
        degrees = sum(p / 60**n for n, p in enumerate(parts))
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return None
    ref_text = _text(ref) or ""
    return -degrees if ref_text[:1].upper() == negative else degrees
