"""A peer-style corpus of every format vlmsearch lists: a few files each, in the variants photo
folders hold (colour, grey, alpha, 16-bit, EXIF-rotated, animated or multi-picture, small and
photo-sized, camera RAW with and without a big preview, plus the odd TIFFs that make libtiff
print). Then ``vlmsearch index --json`` over it, and the counts by format.

    python -m bench.format_corpus FOLDER [--index-dir DIR] [--model fake]

prints one JSON object: files written per format, the index run's summary and
``info --formats``. Deterministic: same seed, same files.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import random
import struct
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from bench.corpus import _photo
from vlmsearch.formats import format_name

REPO = Path(__file__).resolve().parent.parent


def _exif(orientation: int) -> bytes:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return exif.tobytes()


def _g4_tiff(garbled: bool) -> bytes:
    img = Image.new("1", (640, 480), 1)
    img.paste(0, (100, 100, 400, 300))
    buf = io.BytesIO()
    img.save(buf, "TIFF", compression="group4")
    data = bytearray(buf.getvalue())
    if garbled:  # libtiff prints "Fax4Decode: Bad code word ..." and decodes what it can
        ifd = struct.unpack("<I", data[4:8])[0]
        strip = size = 0
        for n in range(struct.unpack("<H", data[ifd:ifd + 2])[0]):
            tag, _, _, value = struct.unpack("<HHII", data[ifd + 2 + 12 * n:ifd + 14 + 12 * n])
            strip, size = (value, size) if tag == 273 else (strip, value if tag == 279 else size)
        rng = random.Random(7)
        for i in range(strip, strip + size):
            data[i] = rng.randrange(256)
    return bytes(data)


def build(folder: Path, seed: int = 0) -> Counter[str]:
    """Write the corpus; return files per format."""
    import pillow_heif
    import pillow_jxl  # noqa: F401 - registers the JXL writer

    sys.path.insert(0, str(REPO))
    from tests.rawgen import make_dng

    pillow_heif.register_heif_opener()
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    photo = _photo(rng, 1600, 1200)
    small = _photo(rng, 320, 240)
    grey = small.convert("L")
    alpha = small.convert("RGBA")
    alpha.putalpha(Image.linear_gradient("L").resize(small.size))
    deep = Image.fromarray((np.asarray(grey, dtype=np.uint16) * 257).astype(np.uint16))
    frames = [small, _photo(rng, 320, 240), _photo(rng, 320, 240)]

    def save(name: str, img: Image.Image, fmt: str, **kw: object) -> None:
        img.save(folder / name, fmt, **kw)

    for ext, fmt in [("jpg", "JPEG"), ("png", "PNG"), ("webp", "WEBP"), ("avif", "AVIF"),
                     ("heic", "HEIF"), ("jxl", "JXL"), ("jp2", "JPEG2000"),
                     ("j2k", "JPEG2000"), ("tif", "TIFF")]:
        save(f"photo.{ext}", photo, fmt)
        save(f"small.{ext}", small, fmt)
        save(f"grey.{ext}", grey, fmt)
        if fmt in ("JPEG", "WEBP", "AVIF", "HEIF", "JXL", "TIFF", "PNG"):
            save(f"rotated.{ext}", small, fmt, exif=_exif(6))
        if fmt in ("PNG", "WEBP", "AVIF", "HEIF", "JXL", "TIFF", "JPEG2000"):
            save(f"alpha.{ext}", alpha, fmt)
    save("deep.png", deep, "PNG")
    save("deep.tif", deep, "TIFF")
    save("deep.pgm", deep, "PPM")
    save("lzw.tiff", small, "TIFF", compression="tiff_lzw")
    save("multipage.tiff", frames[0], "TIFF", save_all=True, append_images=frames[1:])
    (folder / "fax.tif").write_bytes(_g4_tiff(garbled=False))
    (folder / "fax-garbled.tif").write_bytes(_g4_tiff(garbled=True))
    save("photo.jpf", photo, "JPEG2000")
    save("small.jpx", small, "JPEG2000")
    save("animated.gif", frames[0], "GIF", save_all=True, append_images=frames[1:])
    save("small.gif", small, "GIF")
    save("small.bmp", small, "BMP")
    save("animated.webp", frames[0], "WEBP", save_all=True, append_images=frames[1:])
    save("photo.jpeg", photo, "JPEG", quality=80)
    save("small.jfif", small, "JPEG")
    save("stereo.mpo", photo, "MPO", save_all=True, append_images=[photo.transpose(
        Image.Transpose.FLIP_LEFT_RIGHT)])
    save("rotated.mpo", small, "MPO", save_all=True, append_images=[small], exif=_exif(8))
    save("small.ppm", small, "PPM")
    save("small.pnm", small, "PPM")
    save("grey.pgm", grey, "PPM")
    save("bilevel.pbm", small.convert("1"), "PPM")
    save("heif-named.heif", small, "HEIF")
    for ext in (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        make_dng(folder / f"camera{ext}", colour=colour, preview=(1024, 768), orientation=1)
        make_dng(folder / f"portrait{ext}", colour=colour, preview=(1024, 768), orientation=6)
        make_dng(folder / f"no-preview{ext}", colour=colour, preview=None, size=(640, 480))
        make_dng(folder / f"tiny-preview{ext}", colour=colour, preview=(160, 120),
                 size=(640, 480))
    return Counter(format_name(p.name) for p in folder.iterdir() if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--index-dir", type=Path)
    parser.add_argument("--model", default="fake")
    args = parser.parse_args()
    written = build(args.folder)
    index_dir = args.index_dir or Path(tempfile.mkdtemp(prefix="format-corpus-")) / "index"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run = subprocess.run(
        [sys.executable, "-m", "vlmsearch.cli", "index", str(args.folder), "--index-dir",
         str(index_dir), "--model", args.model, "--json"], capture_output=True, text=True,
        env=env, check=False)
    report = json.loads(run.stdout)
    formats = json.loads(subprocess.run(
        [sys.executable, "-m", "vlmsearch.cli", "info", "--index-dir", str(index_dir),
         "--formats", "--json"], capture_output=True, text=True, env=env, check=True).stdout)
    print(json.dumps({
        "files_written": sum(written.values()),
        "written_by_format": dict(sorted(written.items())),
        "index": {k: report[k] for k in ("added", "skipped", "encoded", "reused", "seconds")},
        "skipped_files": report["skipped_files"],
        "index_exit_code": run.returncode,
        "index_stderr": run.stderr,
        "indexed_by_format": formats,
    }, indent=2))


if __name__ == "__main__":
    main()
