"""Camera RAW files (DNG, CR2, CR3, NEF, ARW, ORF, RW2, RAF, PEF, SRW) through LibRaw (rawpy).

Two ways to pixels, chosen per file:

* **the embedded preview**: nearly every camera stores a JPEG of the finished picture inside
  the RAW file. When its shorter side is at least what the model needs (``min_side``), it is
  used as it is: no demosaicing, and the JPEG itself is decoded by the same Pillow path as any
  JPEG (draft mode), outside the lock of :func:`vlmsearch.native_output.native_call`;
* **a half-size demosaic** otherwise (LibRaw's ``half_size``: each 2×2 Bayer cell becomes one
  pixel, 4× less work than a full demosaic, still more pixels than a model uses), with the
  camera's white balance, 8 bits per channel.

Orientation: LibRaw reads the camera's orientation into ``sizes.flip``; its demosaic applies
it. For the preview, its own EXIF orientation wins when it has one (LibRaw gives the preview an
EXIF block carrying ``flip`` when the camera's JPEG had none at its start); a preview without
one is turned by ``flip``.

rawpy is imported on first use. What LibRaw prints goes to the file's notes
(:mod:`vlmsearch.native_output`).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image

from .errors import describe
from .native_output import native_call

FLIP_TO_EXIF = {0: 1, 1: 2, 2: 4, 3: 3, 4: 5, 5: 8, 6: 6, 7: 7}
"""LibRaw's (dcraw's) ``flip`` as an EXIF orientation."""


class RawError(Exception):
    """LibRaw could not use the file; ``unsupported``: it is not a RAW file LibRaw knows (it
    may still be an ordinary image with a RAW extension)."""

    def __init__(self, reason: str, *, unsupported: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.unsupported = unsupported


@dataclass(frozen=True)
class RawPixels:
    """What LibRaw gave: an embedded JPEG ``preview`` (bytes, decoded by the caller, with
    ``orientation`` to apply when its EXIF has none), or ``image``, an upright demosaiced
    picture. ``size``: the full picture's upright size."""

    size: tuple[int, int]
    orientation: int = 1
    preview: bytes | None = None
    image: Image.Image | None = None


def read_raw(data: bytes, *, max_pixels: int, min_side: int | None) -> RawPixels:
    """Open a RAW file's bytes and take its preview or demosaic it (see the module docstring).
    Raises :class:`RawError`."""
    try:
        import rawpy
    except ImportError:  # pragma: no cover - a core dependency
        raise RawError("camera RAW files need the rawpy package (pip install rawpy)") from None
    with native_call():
        try:
            raw = rawpy.imread(io.BytesIO(data))
        except rawpy.LibRawFileUnsupportedError:
            raise RawError("not a RAW file LibRaw can read", unsupported=True) from None
        except Exception as exc:
            raise RawError(f"unreadable RAW file: {_why(exc)}") from None
        try:
            return _pixels(rawpy, raw, max_pixels=max_pixels, min_side=min_side)
        finally:
            raw.close()


def _pixels(rawpy: Any, raw: Any, *, max_pixels: int, min_side: int | None) -> RawPixels:
    sizes = raw.sizes
    flip = int(sizes.flip) if sizes.flip in FLIP_TO_EXIF else 0
    width, height = int(sizes.width), int(sizes.height)
    if width <= 0 or height <= 0:
        raise RawError("RAW file has no pixels")
    if width * height > max_pixels:
        raise RawError(
            f"too large: {width}×{height} = {width * height:,} pixels exceeds the limit of "
            f"{max_pixels:,} (raise it with --max-pixels)")
    upright = (height, width) if flip & 4 else (width, height)
    orientation = FLIP_TO_EXIF[flip]
    preview = _preview(rawpy, raw, min_side or 0, orientation)
    if preview is not None:
        return RawPixels(upright, orientation, preview=preview[0], image=preview[1])
    try:
        rgb = raw.postprocess(half_size=True, use_camera_wb=True, output_bps=8)
    except MemoryError:
        raise RawError("not enough memory to decode this RAW file") from None
    except Exception as exc:
        raise RawError(f"corrupt or truncated RAW data: {_why(exc)}") from None
    return RawPixels(upright, orientation, image=Image.fromarray(np.ascontiguousarray(rgb)))


def _preview(rawpy: Any, raw: Any, min_side: int, orientation: int
             ) -> tuple[bytes | None, Image.Image | None] | None:
    """The embedded preview when it is big enough: (JPEG bytes, None) or (None, an upright
    bitmap); None to demosaic instead."""
    try:
        thumb = raw.extract_thumb()
    except Exception:  # no preview, or an unreadable one: demosaic
        return None
    if thumb.format == rawpy.ThumbFormat.JPEG:
        data = bytes(thumb.data)
        try:
            with Image.open(io.BytesIO(data)) as jpeg:
                size = jpeg.size
        except Exception:
            return None
        return (data, None) if min(size) >= min_side else None
    if thumb.format == rawpy.ThumbFormat.BITMAP:
        pixels = np.ascontiguousarray(thumb.data)
        if pixels.ndim != 3 or min(pixels.shape[:2]) < min_side:
            return None
        bitmap = Image.fromarray(pixels[..., :3].astype(np.uint8))
        turn = _TRANSPOSE.get(orientation)
        return None, (bitmap.transpose(turn) if turn is not None else bitmap)
    return None


_T = Image.Transpose
_TRANSPOSE = {2: _T.FLIP_LEFT_RIGHT, 3: _T.ROTATE_180, 4: _T.FLIP_TOP_BOTTOM, 5: _T.TRANSPOSE,
              6: _T.ROTATE_270, 7: _T.TRANSVERSE, 8: _T.ROTATE_90}
"""EXIF orientation → the transpose that makes the picture upright (as ImageOps does)."""


def _why(exc: BaseException) -> str:
    text = describe(exc, 160)
    return text.replace("b'", "").replace("'", "") if text.startswith("b'") else text
