"""Where images are decoded: bytes → an upright RGB picture → the pixels a model wants.

One safe decoder serves the indexer, query images and (later) uploads:

* the format is found from the content, not the file name (a JPEG named ``.png`` works, a text
  file named ``.jpg`` is refused);
* images that declare more than ``max_pixels`` pixels are refused before any pixel is decoded
  (decompression bombs);
* JPEGs are decoded in draft mode straight to just above the size the model needs (the DCT
  scaling in libjpeg costs a fraction of a full decode), JPEG 2000 files at a reduced
  resolution level likewise;
* EXIF orientation is applied; palette, alpha, 16-bit, CMYK and other modes become 8-bit RGB
  (transparency is composited over white); animated images and MPO files (stereo and
  multi-picture JPEGs) use their first image;
* camera RAW files go to LibRaw (:mod:`vlmsearch.raw_decode`: the embedded preview when it is
  big enough, else a half-size demosaic); JPEG XL and HEIC/HEIF come from Pillow plugins
  registered on first use; the formats and their extensions are listed in
  :mod:`vlmsearch.formats`;
* what decoder libraries print (libtiff, LibRaw, libjxl) is captured, never shown, and kept in
  the reason of a file that fails (:mod:`vlmsearch.native_output`).

Everything that can go wrong with one file is turned into :class:`DecodeError` with a short
reason for the metadata store. This module uses Pillow, NumPy and (for RAW, imported on first
use) rawpy, so it runs in worker threads or processes without importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import logging
import re
import threading
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from . import native_output
from .errors import describe
from .formats import is_raw
from .photo_meta import NO_META, PhotoMeta, read_photo_meta
from .raw_decode import RawError, read_raw

log = logging.getLogger("vlmsearch.decode")

# We enforce our own, configurable pixel limit (``max_pixels``) before decoding; Pillow's
# warning for large images would only add noise. Its hard error is still caught below.
warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)

_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "lanczos": Image.Resampling.LANCZOS,
    "nearest": Image.Resampling.NEAREST,
}


class DecodeError(Exception):
    """One file could not be turned into pixels; ``reason`` is short and meant for people."""

    def __init__(self, reason: str, *, vanished: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.vanished = vanished
        """The file no longer exists: there is nothing to record."""


@dataclass(frozen=True)
class ImageSpec:
    """The pixels an image tower expects, ``size``×``size`` RGB. ``resize_mode``:
    ``shortest`` resizes the shorter side to ``resize`` and center-crops; ``squash`` resizes the
    whole image to ``size``×``size``; ``longest`` fits the longer side and pads with black.
    Normalising with ``mean``/``std`` is done by the encoder, in float."""

    size: int = 224
    resize: int = 224
    interpolation: str = "bicubic"
    resize_mode: str = "shortest"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        if self.interpolation not in _RESAMPLE:
            raise ValueError(f"unknown interpolation {self.interpolation!r}")
        if self.resize < self.size:
            raise ValueError("resize must be at least the crop size")
        if self.resize_mode not in ("shortest", "squash", "longest"):
            raise ValueError(f"unknown resize mode {self.resize_mode!r}")


@dataclass(frozen=True)
class DecodedImage:
    """A decoded file: model-ready uint8 pixels (size×size×3), original upright size, digest,
    and what its metadata says (:mod:`vlmsearch.photo_meta`)."""

    pixels: np.ndarray
    width: int
    height: int
    digest: str
    meta: PhotoMeta = NO_META


_openers_registered = False
_jxl_registered = False
_openers_lock = threading.Lock()


def _register_optional_openers(data: bytes = b"", *, everything: bool = False) -> None:
    """HEIC/HEIF support comes from pillow-heif, registered on the first decode; JPEG XL from
    pillow-jxl-plugin, registered on the first JPEG XL content (or when ``everything`` is
    asked for), so runs without one never import it. Not at import time: importing them costs
    tens of milliseconds each. Under a lock, so a second decoder thread never opens a file
    before its plugin is there."""
    global _openers_registered, _jxl_registered
    jxl = everything or _is_jxl(data)
    if _openers_registered and (_jxl_registered or not jxl):
        return
    with _openers_lock:
        if not _openers_registered:
            try:
                from pillow_heif import register_heif_opener
            except ImportError:  # pragma: no cover - optional dependency
                pass
            else:
                register_heif_opener()
            _openers_registered = True
        if jxl and not _jxl_registered:
            with contextlib.suppress(ImportError):  # a core dependency
                import pillow_jxl  # noqa: F401 - registers the JXL plugin with Pillow
            _jxl_registered = True


def _is_jxl(data: bytes) -> bool:
    """A JPEG XL codestream or container."""
    return data[:2] == b"\xff\x0a" or data[:12] == _JXL_BOX


def content_digest(data: bytes) -> str:
    """The content hash used to recognise moved and duplicate files."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def open_image(
    data: bytes, *, max_pixels: int, min_side: int | None = None, name: str | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode ``data`` to an upright 8-bit RGB image; also return the full-resolution upright
    size (draft decoding may make the image itself smaller).

    ``min_side``: when set, JPEGs are decoded in draft mode at the smallest DCT scale whose
    shorter side is still at least ``min_side`` pixels (after orientation); camera RAW files
    use their embedded preview when it is at least that big.
    ``name``: the file's name, when there is one: a camera RAW extension sends the bytes to
    LibRaw (:mod:`vlmsearch.raw_decode`); otherwise the format is found from the content.
    What decoder libraries print goes to the reason of a failure, never to the terminal
    (:mod:`vlmsearch.native_output`).
    Raises :class:`DecodeError`.
    """
    return _open(data, max_pixels=max_pixels, min_side=min_side, name=name)[:2]


def _open(
    data: bytes, *, max_pixels: int, min_side: int | None, name: str | None,
) -> tuple[Image.Image, tuple[int, int], bytes | None]:
    """:func:`open_image`, and the JPEG preview a RAW file's picture came from (its EXIF
    describes the photo when the RAW's own headers cannot be read)."""
    if not data:
        raise DecodeError("empty file (0 bytes)")
    _register_optional_openers(data)
    notes = native_output.Notes()
    try:
        with native_output.decoding(notes):
            if name is not None and is_raw(name):
                return _open_raw(data, max_pixels=max_pixels, min_side=min_side)
            if _prints(data):
                with native_output.native_call():  # libtiff and libjxl print
                    return (*_open_pillow(data, max_pixels=max_pixels, min_side=min_side),
                            None)
            return (*_open_pillow(data, max_pixels=max_pixels, min_side=min_side), None)
    except DecodeError as exc:
        said = notes.summary()
        if not said:
            raise
        raise DecodeError(f"{exc.reason} ({said})", vanished=exc.vanished) from None
    finally:
        if notes:
            log.debug("decoding %s: %s", name or "an image", notes.summary(lines=10))


_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")  # classic and BigTIFF
_JXL_BOX = b"\x00\x00\x00\x0cJXL \r\n\x87\n"


def _prints(data: bytes) -> bool:
    """Whether the decoder of this content writes to the terminal itself (libtiff, libjxl)."""
    return data[:4] in _TIFF_MAGIC or _is_jxl(data)


def _open_raw(data: bytes, *, max_pixels: int, min_side: int | None
              ) -> tuple[Image.Image, tuple[int, int], bytes | None]:
    try:
        raw = read_raw(data, max_pixels=max_pixels, min_side=min_side)
    except RawError as exc:
        if not exc.unsupported:
            raise DecodeError(exc.reason) from None
        try:  # an ordinary image with a RAW extension?
            return (*_open_pillow(data, max_pixels=max_pixels, min_side=min_side), None)
        except DecodeError:
            raise DecodeError(f"{exc.reason} (nor an image Pillow knows)") from None
    if raw.preview is not None:
        img, _ = _open_pillow(raw.preview, max_pixels=max_pixels, min_side=min_side,
                              orientation=raw.orientation)
        return img, raw.size, raw.preview
    assert raw.image is not None
    return _to_rgb(raw.image), raw.size, None


def _open_pillow(
    data: bytes, *, max_pixels: int, min_side: int | None, orientation: int | None = None,
) -> tuple[Image.Image, tuple[int, int]]:
    """Pillow's part of :func:`open_image`. ``orientation``: the one to apply when the image's
    EXIF has none (a RAW file's preview)."""
    img: Image.Image
    try:
        img = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except UnidentifiedImageError:
        raise DecodeError("not an image (unrecognised format)") from None
    except Exception as exc:  # Pillow raises many types for corrupt headers
        raise DecodeError(f"unreadable image header: {_short(exc)}") from None
    try:
        width, height = img.size
        if width <= 0 or height <= 0:
            raise DecodeError("image has no pixels")
        if width * height > max_pixels:
            raise DecodeError(
                f"too large: {width}×{height} = {width * height:,} pixels exceeds the limit of "
                f"{max_pixels:,} (possible decompression bomb; raise it with --max-pixels)"
            )
        if getattr(img, "n_frames", 1) > 1:
            img.seek(0)  # animations, and MPO (stereo or multi-picture JPEG): the first image
        if min_side and img.format in ("JPEG", "MPO"):
            shorter = min(width, height)
            scale = shorter / min_side
            if scale >= 2:
                img.draft("RGB", (max(1, int(width / scale)), max(1, int(height / scale))))
        if min_side and img.format == "JPEG2000" and min(width, height) >= 2 * min_side:
            img = _load_reduced_jpeg2000(img, data, min(width, height) // min_side)
        img.load()
        exif = img.getexif()
        if orientation not in (None, 1) and 0x0112 not in exif:
            exif[0x0112] = orientation  # exif_transpose reads it from here
        orient = exif.get(0x0112, 1)
        upright = (height, width) if orient in (5, 6, 7, 8) else (width, height)
        img = ImageOps.exif_transpose(img) or img
        return _to_rgb(img), upright
    except DecodeError:
        raise
    except Image.DecompressionBombError as exc:
        raise _bomb(exc, max_pixels) from None
    except MemoryError:
        raise DecodeError("not enough memory to decode this image") from None
    except Exception as exc:
        raise DecodeError(f"corrupt or truncated image: {_short(exc)}") from None


def _load_reduced_jpeg2000(img: Image.Image, data: bytes, scale: int) -> Image.Image:
    """JPEG 2000's counterpart of JPEG draft mode: decode at 1/2^n of the size (OpenJPEG's
    ``reduce``; 30× faster for a 4000×3000 photo needing 224 px). A codestream with fewer
    resolution levels refuses a big ``n``: the next smaller one is tried, then a full decode."""
    for level in range(min(scale.bit_length() - 1, 5), 0, -1):
        img.reduce = level  # type: ignore[assignment, method-assign]
        try:
            img.load()
            return img
        except Exception:
            img = Image.open(io.BytesIO(data))
    return img


def _to_rgb(img: Image.Image) -> Image.Image:
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        peak = float(arr.max()) if arr.size else 0.0
        if mode == "F" and peak <= 1.0:
            arr = arr * 255.0
        elif peak > 255.0:
            arr = arr / 257.0
        gray = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        return Image.fromarray(gray).convert("RGB")
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
        mode = "RGBA"
    if mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def prepare(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """Resize and crop as ``spec`` says, with the same arithmetic as torchvision's
    ``Resize(int)`` + ``CenterCrop`` (and open_clip's other modes) so results match open_clip."""
    width, height = img.size
    resample = _RESAMPLE[spec.interpolation]
    if spec.resize_mode == "squash":
        if img.size != (spec.size, spec.size):
            img = img.resize((spec.size, spec.size), resample)
        return np.asarray(img, dtype=np.uint8)
    if spec.resize_mode == "longest":
        scale = spec.size / max(width, height)
        new_w, new_h = max(1, round(width * scale)), max(1, round(height * scale))
        canvas = Image.new("RGB", (spec.size, spec.size), (0, 0, 0))
        canvas.paste(img.resize((new_w, new_h), resample),
                     ((spec.size - new_w) // 2, (spec.size - new_h) // 2))
        return np.asarray(canvas, dtype=np.uint8)
    short, long = (width, height) if width <= height else (height, width)
    new_short, new_long = spec.resize, int(spec.resize * long / short)
    new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
    if (new_w, new_h) != (width, height):
        img = img.resize((new_w, new_h), resample)
    top = round((new_h - spec.size) / 2.0)
    left = round((new_w - spec.size) / 2.0)
    if (new_w, new_h) != (spec.size, spec.size):
        img = img.crop((left, top, left + spec.size, top + spec.size))
    return np.asarray(img, dtype=np.uint8)


def decode_bytes(
    data: bytes, spec: ImageSpec, *, max_pixels: int, name: str | None = None
) -> DecodedImage:
    """Decode in-memory bytes into model-ready pixels (``name``: see :func:`open_image`).
    Raises :class:`DecodeError`."""
    img, (width, height), preview = _open(data, max_pixels=max_pixels, min_side=spec.resize,
                                          name=name)
    try:
        pixels = prepare(img, spec)
    except Exception as exc:
        raise DecodeError(f"could not resize image: {_short(exc)}") from None
    meta = read_bytes_meta(data)
    if preview is not None and meta == NO_META:  # a RAW whose headers Pillow cannot parse
        meta = read_bytes_meta(preview)
    return DecodedImage(pixels, width, height, content_digest(data), meta)


def read_bytes_meta(data: bytes) -> PhotoMeta:
    """The metadata in a file's headers (parsed again, not decoded: microseconds). For camera
    RAW files that are TIFF containers (most of them) these are the RAW's own headers."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return read_photo_meta(img)
    except Exception:
        return PhotoMeta()


def register_optional_openers() -> None:
    """Make every optional format Pillow can be taught (HEIC/HEIF, JPEG XL) openable."""
    _register_optional_openers(everything=True)


def decode_file(path: str, spec: ImageSpec, *, max_pixels: int) -> DecodedImage:
    """Read and decode one file. Raises :class:`DecodeError` (never anything else for I/O)."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except FileNotFoundError:
        raise DecodeError("file disappeared before it could be read", vanished=True) from None
    except PermissionError:
        raise DecodeError("permission denied (check the file's permissions)") from None
    except IsADirectoryError:
        raise DecodeError("is a folder, not a file") from None
    except OSError as exc:
        raise DecodeError(f"could not read file: {exc.strerror or _short(exc)}") from None
    return decode_bytes(data, spec, max_pixels=max_pixels, name=path)


def _bomb(exc: Exception, max_pixels: int) -> DecodeError:
    """Pillow's own hard limit (about 179 megapixels) fired before ours could."""
    found = re.search(r"\((\d+) pixels\)", str(exc))
    declared = f"{int(found.group(1)):,} pixels" if found else "too many pixels"
    return DecodeError(
        f"too large: {declared} exceeds the limit of {max_pixels:,} (possible decompression "
        "bomb; --max-pixels can raise the limit up to Pillow's own 178,956,970)"
    )


def _short(exc: BaseException) -> str:
    return describe(exc, 200)

