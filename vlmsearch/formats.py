"""Which files are images: the formats vlmsearch indexes, by file name extension.

One table, :data:`FORMATS`, says for each format its name (what ``vlmsearch info --formats``
counts by), its extensions and who decodes it:

* ``pillow``: Pillow itself (JPEG, PNG, WebP, GIF, BMP, TIFF, AVIF, JPEG 2000, MPO, PNM);
* ``plugin``: a Pillow plugin registered on first use (HEIC/HEIF through ``pillow-heif``,
  JPEG XL through ``pillow-jxl-plugin``), so importing vlmsearch stays cheap;
* ``raw``: LibRaw through ``rawpy`` (:mod:`vlmsearch.raw_decode`), for camera RAW files.

The walk picks files by extension (:mod:`vlmsearch.sources`); the decoder then finds the
format from the content, except for camera RAW: most RAW files are TIFF containers that Pillow
would open as their small first image, so their extension sends them to LibRaw.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass

from .errors import UsageError


@dataclass(frozen=True)
class ImageFormat:
    name: str
    extensions: tuple[str, ...]
    decoder: str = "pillow"


FORMATS: tuple[ImageFormat, ...] = (
    ImageFormat("jpeg", (".jpg", ".jpeg", ".jpe", ".jfif")),
    ImageFormat("png", (".png",)),
    ImageFormat("webp", (".webp",)),
    ImageFormat("gif", (".gif",)),
    ImageFormat("bmp", (".bmp",)),
    ImageFormat("tiff", (".tif", ".tiff")),
    ImageFormat("heif", (".heic", ".heif"), "plugin"),
    ImageFormat("avif", (".avif",)),
    ImageFormat("jpeg2000", (".jp2", ".j2k", ".jpf", ".jpx")),
    ImageFormat("mpo", (".mpo",)),
    ImageFormat("pnm", (".pnm", ".pbm", ".pgm", ".ppm")),
    ImageFormat("jxl", (".jxl",), "plugin"),
    # camera RAW: one format per maker's extension, as people name them
    *(ImageFormat(ext[1:], (ext,), "raw") for ext in (
        ".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw")),
)

RAW_EXTENSIONS: frozenset[str] = frozenset(
    ext for f in FORMATS if f.decoder == "raw" for ext in f.extensions)
IMAGE_EXTENSIONS: frozenset[str] = frozenset(ext for f in FORMATS for ext in f.extensions)
_BY_EXTENSION = {ext: f.name for f in FORMATS for ext in f.extensions}
_EXTENSION = re.compile(r"\.[A-Za-z0-9][A-Za-z0-9_+-]{0,15}")


def format_name(path: str) -> str:
    """The format a file counts as, from its extension: a name from :data:`FORMATS`, the
    extension itself (``.xyz`` added with ``--ext``) or ``(none)``."""
    ext = os.path.splitext(path)[1].lower()
    return _BY_EXTENSION.get(ext, ext or "(none)")


def is_raw(path: str) -> bool:
    """Whether ``path`` names a camera RAW file (decoded by LibRaw)."""
    return os.path.splitext(path)[1].lower() in RAW_EXTENSIONS


def extension(value: str) -> str:
    """``value`` as an extension: lower case with its dot (``JPG`` and ``.jpg`` give ``.jpg``).
    Raises :class:`UsageError` for anything that is not one."""
    text = value.strip()
    candidate = text if text.startswith(".") else "." + text
    if not _EXTENSION.fullmatch(candidate):
        raise UsageError(
            f"invalid extension {value!r}: give a file name ending such as .jpg or .xyz "
            "(letters and digits, at most 16)"
        )
    return candidate.lower()


def extension_set(
    base: Iterable[str] = IMAGE_EXTENSIONS, *, add: Iterable[str] = (),
    only: Iterable[str] | None = None,
) -> frozenset[str]:
    """The extensions a run indexes: ``only`` (when given) instead of ``base``, plus ``add``;
    each value checked with :func:`extension`."""
    if only is not None:
        only = list(only)
        if not only:
            raise UsageError("--only-ext needs at least one extension (e.g. --only-ext .dng)")
        base = [extension(e) for e in only]
    return frozenset(base) | {extension(e) for e in add}
