"""Camera RAW files for tests: a DNG written by hand (a TIFF with the DNG tags).

``make_dng`` writes what a camera writes, in miniature: IFD0 holds an embedded JPEG preview
(``NewSubFileType`` 1, JPEG-compressed, with the camera's make, model and orientation), and a
sub-IFD holds the sensor's Bayer mosaic (RGGB, 16-bit, uncompressed) with the colour tags LibRaw
needs to demosaic it. LibRaw (through rawpy) opens these files: ``extract_thumb`` returns the
preview and ``postprocess`` demosaics the mosaic. (tifffile can write the mosaic, but not an
already-encoded JPEG strip without the optional ``imagecodecs`` package, hence the hand
writer.)
"""

from __future__ import annotations

import io
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BYTE, ASCII, SHORT, LONG, RATIONAL, SRATIONAL = 1, 2, 3, 4, 5, 10
_SIZES = {BYTE: 1, ASCII: 1, SHORT: 2, LONG: 4, RATIONAL: 8, SRATIONAL: 8}
_FORMATS = {BYTE: "B", ASCII: "B", SHORT: "H", LONG: "I", RATIONAL: "II", SRATIONAL: "ii"}


@dataclass
class _Blob:
    """Bytes stored apart; the entry holds their offset (StripOffsets)."""

    data: bytes


@dataclass
class _Sub:
    """The offset of another IFD of the file (SubIFDs)."""

    index: int


Entry = tuple[int, int, object]


def _packed(kind: int, values: object) -> tuple[int, bytes]:
    if kind == ASCII:
        raw = str(values).encode("ascii") + b"\0"
        return len(raw), raw
    seq = list(values) if isinstance(values, (list, tuple)) else [values]
    fmt = "<" + _FORMATS[kind]
    if kind in (RATIONAL, SRATIONAL):
        return len(seq), b"".join(struct.pack(fmt, *v) for v in seq)
    return len(seq), b"".join(struct.pack(fmt, v) for v in seq)


def build_tiff(ifds: list[list[Entry]]) -> bytes:
    """A little-endian TIFF whose IFD 0 is the main chain's only IFD; the others are reached
    through ``_Sub`` entries. Entry values: numbers, tuples, strings, ``_Blob``, ``_Sub``."""
    # sizes first: every IFD's table and overflow area, then the blobs
    def section_size(entries: list[Entry]) -> int:
        size = 2 + 12 * len(entries) + 4
        for _, kind, value in entries:
            if isinstance(value, (_Blob, _Sub)):
                continue
            _, raw = _packed(kind, value)
            if len(raw) > 4:
                size += len(raw) + (len(raw) & 1)
        return size

    offsets, pos = [], 8
    for entries in ifds:
        offsets.append(pos)
        pos += section_size(entries)
    blob_at: dict[int, int] = {}
    blobs = bytearray()
    for entries in ifds:
        for _, _, value in entries:
            if isinstance(value, _Blob):
                blob_at[id(value)] = pos + len(blobs)
                blobs += value.data + b"\0" * (len(value.data) & 1)
    out = bytearray(b"II*\0" + struct.pack("<I", offsets[0]))
    for n, entries in enumerate(ifds):
        table = bytearray(struct.pack("<H", len(entries)))
        extra = bytearray()
        extra_at = offsets[n] + 2 + 12 * len(entries) + 4
        for tag, kind, value in sorted(entries, key=lambda e: e[0]):
            if isinstance(value, _Blob):
                count, raw = 1, struct.pack("<I", blob_at[id(value)])
            elif isinstance(value, _Sub):
                count, raw = 1, struct.pack("<I", offsets[value.index])
            else:
                count, raw = _packed(kind, value)
            if len(raw) > 4:
                field = struct.pack("<I", extra_at + len(extra))
                extra += raw + b"\0" * (len(raw) & 1)
            else:
                field = raw.ljust(4, b"\0")
            table += struct.pack("<HHI", tag, kind, count) + field
        table += struct.pack("<I", 0)
        out += table + extra
    out += blobs
    return bytes(out)


def mosaic(rgb: tuple[int, int, int], size: tuple[int, int] = (64, 48), peak: int = 4095
           ) -> np.ndarray:
    """An RGGB Bayer mosaic of a flat colour (``rgb`` in 0..255), 16-bit, height×width."""
    width, height = size
    r, g, b = (round(c / 255 * peak) for c in rgb)
    cfa = np.empty((height, width), np.uint16)
    cfa[0::2, 0::2], cfa[0::2, 1::2], cfa[1::2, 0::2], cfa[1::2, 1::2] = r, g, g, b
    return cfa


def make_dng(
    path: str | Path, *, colour: tuple[int, int, int] = (255, 0, 0),
    preview: tuple[int, int] | None = (320, 240),
    preview_colour: tuple[int, int, int] | None = None,
    orientation: int = 1, size: tuple[int, int] = (64, 48), make: str = "Testcam",
    model: str = "Testcam R1", preview_exif_orientation: int | None = None,
) -> Path:
    """Write a DNG: a ``size`` mosaic of ``colour``, with a JPEG preview of ``preview`` pixels
    (None: no preview) of ``preview_colour`` (default: ``colour``), TIFF orientation
    ``orientation`` (LibRaw's ``sizes.flip``); the preview JPEG carries EXIF orientation
    ``preview_exif_orientation`` when given. Half the preview (left) is the colour and the
    right half white, so a test can tell which way it was turned."""
    path = Path(path)
    cfa = mosaic(colour, size)
    raw_ifd: list[Entry] = [
        (254, LONG, 0),  # NewSubFileType: the main image
        (256, LONG, size[0]), (257, LONG, size[1]),
        (258, SHORT, 16), (259, SHORT, 1), (262, SHORT, 32803),  # CFA
        (273, LONG, _Blob(cfa.astype("<u2").tobytes())), (277, SHORT, 1),
        (278, LONG, size[1]), (279, LONG, cfa.nbytes),
        (33421, SHORT, (2, 2)), (33422, BYTE, (0, 1, 1, 2)),  # CFARepeatPatternDim, RGGB
        (50717, LONG, 4095),  # WhiteLevel
    ]
    ifd0: list[Entry] = [
        (271, ASCII, make), (272, ASCII, model), (274, SHORT, orientation),
        (306, ASCII, "2024:07:14 18:30:00"),
        (50706, BYTE, (1, 4, 0, 0)), (50707, BYTE, (1, 1, 0, 0)),  # DNG version
        (50708, ASCII, model),  # UniqueCameraModel
        (50721, SRATIONAL, [(1, 1), (0, 1), (0, 1), (0, 1), (1, 1), (0, 1), (0, 1), (0, 1),
                            (1, 1)]),  # ColorMatrix1: identity
        (50728, RATIONAL, [(1, 1), (1, 1), (1, 1)]),  # AsShotNeutral
        (330, LONG, _Sub(1)),  # SubIFDs
    ]
    if preview is not None:
        jpeg = preview_jpeg(preview, preview_colour or colour, preview_exif_orientation)
        ifd0 += [
            (254, LONG, 1),  # a reduced-resolution copy
            (256, LONG, preview[0]), (257, LONG, preview[1]), (258, SHORT, (8, 8, 8)),
            (259, SHORT, 7), (262, SHORT, 6), (273, LONG, _Blob(jpeg)), (277, SHORT, 3),
            (278, LONG, preview[1]), (279, LONG, len(jpeg)),
        ]
    else:
        ifd0 += [(254, LONG, 1), (256, LONG, 8), (257, LONG, 8), (258, SHORT, (8, 8, 8)),
                 (259, SHORT, 1), (262, SHORT, 2), (273, LONG, _Blob(bytes(192))),
                 (277, SHORT, 3), (278, LONG, 8), (279, LONG, 192)]
    path.write_bytes(build_tiff([ifd0, raw_ifd]))
    return path


def preview_jpeg(size: tuple[int, int], colour: tuple[int, int, int],
                 exif_orientation: int | None = None) -> bytes:
    img = Image.new("RGB", size, (255, 255, 255))
    img.paste(colour, (0, 0, size[0] // 2, size[1]))
    buf = io.BytesIO()
    if exif_orientation is None:
        img.save(buf, "JPEG", quality=90)
    else:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        img.save(buf, "JPEG", quality=90, exif=exif.tobytes())
        data = buf.getvalue()
        if data[2:4] == b"\xff\xe0":  # drop the JFIF segment: cameras put Exif first
            length = int.from_bytes(data[4:6], "big")
            data = data[:2] + data[4 + length:]
        return data
    return buf.getvalue()
