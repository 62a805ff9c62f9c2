"""Every format vlmsearch lists: generated here, indexed, found by colour with the fake model,
upright; camera RAW through both of its branches; --ext/--only-ext; info --formats; and what
decoder libraries print kept off the terminal."""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from PIL import Image
from typer.testing import CliRunner

from tests.imagegen import picture
from tests.rawgen import make_dng
from vlmsearch import Engine, UsageError
from vlmsearch.cli import app
from vlmsearch.decode import DecodeError, ImageSpec, decode_file, open_image
from vlmsearch.encoders.fake import COLOURS
from vlmsearch.formats import IMAGE_EXTENSIONS, extension, extension_set, format_name

REPO = Path(__file__).resolve().parent.parent
runner = CliRunner()


def _exif(orientation: int | None) -> dict[str, bytes]:
    if orientation is None:
        return {}
    exif = Image.Exif()
    exif[0x0112] = orientation
    return {"exif": exif.tobytes()}


def _halves(colour: str, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """The colour on the left half, white on the right: which way it was turned shows."""
    img = Image.new("RGB", size, COLOURS["white"])
    img.paste(COLOURS[colour], (0, 0, size[0] // 2, size[1]))
    return img


def _pillow(fmt: str, **extra: object) -> Callable[[Path, str, int | None], None]:
    def write(path: Path, colour: str, orientation: int | None) -> None:
        img = picture(colour, (96, 64)) if orientation is None else _halves(colour)
        if fmt == "L":
            img.convert("L").save(path)
        elif fmt == "1":
            img.convert("1").save(path)
        else:
            img.save(path, fmt, **extra, **_exif(orientation))
    return write


def _mpo(path: Path, colour: str, orientation: int | None) -> None:
    first = picture(colour, (96, 64)) if orientation is None else _halves(colour)
    second = picture("green", (96, 64))  # the second picture of a stereo pair: never used
    first.save(path, "MPO", save_all=True, append_images=[second], **_exif(orientation))


def _jxl(path: Path, colour: str, orientation: int | None) -> None:
    import pillow_jxl  # noqa: F401 - registers the writer

    _pillow("JXL", lossless=True)(path, colour, orientation)


def _dng(path: Path, colour: str, orientation: int | None) -> None:
    make_dng(path, colour=COLOURS[colour], orientation=orientation or 1)


def _dng_demosaic(path: Path, colour: str, orientation: int | None) -> None:
    make_dng(path, colour=COLOURS[colour], orientation=orientation or 1, preview=None)


# (extension, writer, whether the format carries an orientation the writer can set)
FORMATS: list[tuple[str, Callable[[Path, str, int | None], None], bool]] = [
    (".avif", _pillow("AVIF", quality=95), True),
    (".jp2", _pillow("JPEG2000"), False),
    (".j2k", _pillow("JPEG2000"), False),
    (".jpf", _pillow("JPEG2000"), False),
    (".jpx", _pillow("JPEG2000"), False),
    (".mpo", _mpo, True),
    (".ppm", _pillow("PPM"), False),
    (".pnm", _pillow("PPM"), False),
    (".jxl", _jxl, True),
    (".dng", _dng, True),
]
GREY_FORMATS = [(".pgm", _pillow("L")), (".pbm", _pillow("1"))]
RAW_EXTENSIONS = [".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf", ".pef", ".srw"]


def _index(root: Path, tmp_path: Path, **kwargs: object) -> Engine:
    eng = Engine.open(tmp_path / "index", model="fake")
    report = eng.index([root], **kwargs)  # type: ignore[arg-type]
    assert report.skipped == 0, report.skipped_files
    return eng


@pytest.mark.parametrize("ext,write,_", FORMATS, ids=[f[0] for f in FORMATS])
def test_each_format_is_indexed_and_found_by_colour(
    tmp_path: Path, ext: str, write: Callable[[Path, str, int | None], None], _: bool
) -> None:
    assert ext in IMAGE_EXTENSIONS
    root = tmp_path / "photos"
    root.mkdir()
    for colour in ("red", "blue", "yellow"):
        write(root / f"{colour}{ext}", colour, None)
    with _index(root, tmp_path) as eng:
        assert eng.info().images == 3
        for colour in ("red", "blue", "yellow"):
            hits = eng.search(text=colour, k=3)
            assert Path(hits[0].path).name == f"{colour}{ext}", (colour, hits)
            assert hits[0].score is not None and hits[0].score > hits[1].score  # type: ignore


@pytest.mark.parametrize("ext,write", GREY_FORMATS, ids=[f[0] for f in GREY_FORMATS])
def test_grey_and_bilevel_pnm_files_are_indexed(
    tmp_path: Path, ext: str, write: Callable[[Path, str, int | None], None]
) -> None:
    root = tmp_path / "scans"
    root.mkdir()
    write(root / f"white{ext}", "white", None)
    write(root / f"black{ext}", "black", None)
    with _index(root, tmp_path) as eng:
        assert eng.info().images == 2
        assert Path(eng.search(text="black", k=1)[0].path).name == f"black{ext}"


@pytest.mark.parametrize("ext,write", [(e, w) for e, w, turns in FORMATS if turns],
                         ids=[f[0] for f in FORMATS if f[2]])
def test_orientation_is_honoured(
    tmp_path: Path, ext: str, write: Callable[[Path, str, int | None], None]
) -> None:
    """Orientation 6 (turn 90° clockwise): the left (red) half ends on top, and the upright
    size stored is portrait."""
    path = tmp_path / f"turned{ext}"
    write(path, "red", 6)
    img, upright = open_image(path.read_bytes(), max_pixels=10**8, name=str(path))
    w, h = img.size
    assert h > w and upright[1] > upright[0]
    top, bottom = img.getpixel((w // 2, h // 8)), img.getpixel((w // 2, h * 7 // 8))
    assert top[0] > 180 and top[2] < 80, top  # red
    assert min(bottom) > 200, bottom  # white
    root = tmp_path / "photos"
    root.mkdir()
    path.rename(root / path.name)
    with _index(root, tmp_path) as eng:
        hit = eng.search(text="red", k=1)[0]
        assert hit.width is not None and hit.height is not None and hit.height > hit.width


def test_mpo_uses_its_first_picture(tmp_path: Path) -> None:
    path = tmp_path / "pair.mpo"
    _mpo(path, "red", None)
    with Image.open(path) as mpo:
        assert mpo.format == "MPO" and mpo.n_frames == 2
    img, _ = open_image(path.read_bytes(), max_pixels=10**8)
    r, g, _ = img.getpixel((2, 2))
    assert r > 180 and g < 80  # red, not the second (green) picture


# --- camera RAW ------------------------------------------------------------------------------
def test_raw_uses_the_preview_when_it_is_big_enough(tmp_path: Path) -> None:
    """The preview (blue) and the sensor data (red) differ, so the pixels tell the branch:
    a 320×240 preview serves a model needing 224 px, not one needing 256."""
    path = make_dng(tmp_path / "shot.dng", colour=COLOURS["red"], preview=(320, 240),
                    preview_colour=COLOURS["blue"])
    data = path.read_bytes()
    small, size = open_image(data, max_pixels=10**8, min_side=224, name=str(path))
    assert small.getpixel((2, 2))[2] > 180  # the blue preview (left half)
    assert size == (64, 48)  # the full picture's size, not the preview's
    big, _ = open_image(data, max_pixels=10**8, min_side=256, name=str(path))
    assert big.size == (32, 24)  # half-size demosaic of the 64×48 mosaic
    r, _, b = big.getpixel((5, 5))
    assert r > 180 and b < 120  # the red sensor data


def test_raw_orientation_in_both_branches(tmp_path: Path) -> None:
    path = make_dng(tmp_path / "portrait.dng", colour=COLOURS["red"], orientation=6)
    img, upright = open_image(path.read_bytes(), max_pixels=10**8, min_side=32,
                              name=str(path))
    assert upright == (48, 64) and img.size[1] > img.size[0]
    assert img.getpixel((img.size[0] // 2, 5))[2] < 80  # red half on top after the turn
    assert min(img.getpixel((img.size[0] // 2, img.size[1] - 5))) > 200
    demosaiced, upright = open_image(path.read_bytes(), max_pixels=10**8, min_side=1000,
                                     name=str(path))
    assert upright == (48, 64) and demosaiced.size == (24, 32)


def test_raw_preview_orientation_of_its_own_wins(tmp_path: Path) -> None:
    """A preview whose EXIF says 8 (turn 90° counter-clockwise): the left half ends at the
    bottom, whatever LibRaw's flip says (here 0)."""
    path = make_dng(tmp_path / "own.dng", colour=COLOURS["red"], preview_exif_orientation=8)
    img, _ = open_image(path.read_bytes(), max_pixels=10**8, min_side=32, name=str(path))
    w, h = img.size
    assert h > w
    assert img.getpixel((w // 2, h - 5))[2] < 80 and min(img.getpixel((w // 2, 5))) > 200


def test_raw_metadata_and_pixel_limit(tmp_path: Path) -> None:
    path = make_dng(tmp_path / "meta.dng")
    decoded = decode_file(str(path), ImageSpec(size=32, resize=32), max_pixels=10**8)
    assert decoded.meta.camera == "Testcam R1" and decoded.meta.taken == "2024-07-14T18:30:00"
    with pytest.raises(DecodeError, match="too large"):
        decode_file(str(path), ImageSpec(size=32, resize=32), max_pixels=1000)


def test_raw_extensions_and_impostors(tmp_path: Path) -> None:
    root = tmp_path / "card"
    root.mkdir()
    for ext in RAW_EXTENSIONS:  # LibRaw finds the format from the content
        make_dng(root / f"red{ext}", colour=COLOURS["red"])
    picture("blue").save(root / "actually-a-jpeg.nef", "JPEG")  # renamed by someone
    (root / "notes.cr2").write_text("not a picture")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        report = eng.index([root])
        assert report.added == len(RAW_EXTENSIONS) + 1
        failed = {Path(r.path).name: r.error for r in eng.failed()}
        assert set(failed) == {"notes.cr2"}
        assert "RAW" in (failed["notes.cr2"] or "")
        assert Path(eng.search(text="blue", k=1)[0].path).name == "actually-a-jpeg.nef"
        formats = eng.info().formats
        assert {k: formats[k] for k in ("nef", "cr3", "raf")} == {"nef": 2, "cr3": 1, "raf": 1}


# --- which files: --ext, --only-ext, info --formats -------------------------------------------
def test_extension_values_are_checked() -> None:
    assert extension("JPG") == ".jpg" and extension(".Xyz") == ".xyz"
    for bad in ("", ".", "a/b", "*.jpg", ". jpg", "x" * 20):
        with pytest.raises(UsageError, match="invalid extension"):
            extension(bad)
    assert extension_set(add=[".xyz"]) == IMAGE_EXTENSIONS | {".xyz"}
    assert extension_set(only=["png", ".JPG"]) == {".png", ".jpg"}
    with pytest.raises(UsageError, match="at least one"):
        extension_set(only=[])
    assert format_name("/a/b.JPEG") == "jpeg" and format_name("x.xyz") == ".xyz"


def test_ext_and_only_ext_from_the_library(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    picture("red").save(root / "red.xyz", "PNG")
    picture("blue").save(root / "blue.jpg", "JPEG")
    picture("green").save(root / "green.png", "PNG")
    with Engine.open(tmp_path / "index", model="fake") as eng:
        with pytest.raises(UsageError, match="invalid extension"):
            eng.index([root], add_extensions=["x/y"])
        assert eng.index([root]).added == 2  # .xyz is not an image extension
        report = eng.index([root], add_extensions=[".xyz"])
        assert (report.added, report.unchanged) == (1, 2)
        assert Path(eng.search(text="red", k=1)[0].path).name == "red.xyz"
        # only PNGs: the JPEG and the .xyz file indexed before are left as they are
        report = eng.index([root], only_extensions=["png"])
        assert (report.added, report.unchanged, report.removed) == (0, 1, 0)
        assert eng.info().images == 3
        assert eng.info().formats == {".xyz": 1, "jpeg": 1, "png": 1}
        (root / "green.png").unlink()
        assert eng.index([root], only_extensions=["png"]).removed == 1


def test_cli_ext_options_and_info_formats(tmp_path: Path) -> None:
    root = tmp_path / "mixed"
    root.mkdir()
    picture("red").save(root / "red.xyz", "PNG")
    picture("blue").save(root / "blue.avif", "AVIF")
    make_dng(root / "raw.dng")
    result = runner.invoke(app, ["index", str(root), "--model", "fake", "--ext", "xyz",
                                 "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["added"] == 3
    result = runner.invoke(app, ["info", "--formats", "--json"])
    assert json.loads(result.stdout) == {".xyz": 1, "avif": 1, "dng": 1}
    result = runner.invoke(app, ["info", "--formats"])
    assert result.exit_code == 0 and "dng" in result.stdout and "avif" in result.stdout
    info = json.loads(runner.invoke(app, ["info", "--json"]).stdout)
    assert info["formats"] == {".xyz": 1, "avif": 1, "dng": 1}
    result = runner.invoke(app, ["index", str(root), "--model", "fake", "--only-ext", "*.png"])
    assert result.exit_code != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "invalid extension '*.png'" in lines[0], result.stderr


def test_optional_decoders_are_not_imported_with_vlmsearch() -> None:
    code = ("import sys, vlmsearch, vlmsearch.decode, vlmsearch.engine; "
            "print(sorted(m for m in ('rawpy', 'pillow_jxl', 'pillow_heif') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(REPO)}, check=True).stdout
    assert out.strip() == "[]"


# --- what decoder libraries print ------------------------------------------------------------
def _g4_tiff(*, garbled: bool = False, far_strip: bool = False) -> bytes:
    """A CCITT Group 4 TIFF (decoded by libtiff): with ``garbled`` its strip is random bytes
    (libtiff prints "Fax4Decode: Bad code word ..." and decodes anyway); with ``far_strip``
    the strip lies past the end of the file (libtiff prints "TIFFFillStrip: Read error ..."
    and the decode fails)."""
    import random

    img = Image.new("1", (64, 48), 1)
    img.paste(0, (10, 10, 40, 30))
    buf = io.BytesIO()
    img.save(buf, "TIFF", compression="group4")
    data = bytearray(buf.getvalue())
    ifd = struct.unpack("<I", data[4:8])[0]
    entries = struct.unpack("<H", data[ifd:ifd + 2])[0]
    strip_at = strip_len = 0
    for n in range(entries):
        at = ifd + 2 + 12 * n
        tag, _, _, value = struct.unpack("<HHII", data[at:at + 12])
        if tag == 273:
            strip_at = value
            if far_strip:
                data[at + 8:at + 12] = struct.pack("<I", 10_000)
        elif tag == 279:
            strip_len = value
    if garbled:
        rng = random.Random(1)
        for i in range(strip_at, strip_at + strip_len):
            data[i] = rng.randrange(256)
    return bytes(data)


def test_libtiff_messages_never_reach_the_terminal(tmp_path: Path) -> None:
    """A real `vlmsearch index` in a subprocess: libtiff's messages are captured (the control
    run shows that the same files do make libtiff print), the failing file's reason keeps
    what libtiff said, and stderr stays clean."""
    root = tmp_path / "scans"
    root.mkdir()
    (root / "garbled.tif").write_bytes(_g4_tiff(garbled=True))
    (root / "far.tif").write_bytes(_g4_tiff(far_strip=True))
    (root / "fine.png").write_bytes(b"")
    picture("red").save(root / "fine.png")
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLMSEARCH_HOME": str(tmp_path / "home")}
    control = subprocess.run(
        [sys.executable, "-c", "import sys; from PIL import Image\n"
         "for p in sys.argv[1:]:\n"
         "    try: Image.open(p).load()\n"
         "    except Exception: pass", str(root / "garbled.tif"), str(root / "far.tif")],
        capture_output=True, text=True, env=env)
    assert "Fax4Decode" in control.stderr and "TIFFFillStrip" in control.stderr

    result = subprocess.run(
        [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--model", "fake",
         "--json"], capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    report = json.loads(result.stdout)
    assert report["added"] == 2  # the garbled scan decodes (libtiff's best effort)
    reasons = {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]}
    assert set(reasons) == {"far.tif"}
    assert "TIFFFillStrip: Read error on strip 0" in reasons["far.tif"]

    # without --json: the skipped-file lines (written by Python) still reach the terminal
    (root / "far.tif").write_bytes(_g4_tiff(far_strip=True) + b"\0")  # changed: read again
    shown = subprocess.run(
        [sys.executable, "-m", "vlmsearch.cli", "index", str(root)], capture_output=True,
        text=True, env=env, timeout=120)
    assert "skipped" in shown.stderr and "far.tif" in shown.stderr
    assert "Fax4Decode" not in shown.stderr + shown.stdout


def test_capture_keeps_python_output_and_attributes_native_output() -> None:
    code = """
import os, sys, threading, warnings
from vlmsearch import native_output as no
with no.capturing():
    print("python line", file=sys.stderr)
    notes = no.Notes()
    def decode():
        with no.decoding(notes):
            with no.native_call():
                os.write(2, b"libfoo: bad thing at line 3\\n")
            warnings.warn("odd header")
    t = threading.Thread(target=decode); t.start(); t.join()
    os.write(2, b"stray native line\\n")
print("notes:", notes.summary(), file=sys.stderr)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    assert "python line" in result.stderr
    assert "stray native line" not in result.stderr
    assert "notes: libfoo: bad thing at line 3; UserWarning: odd header" in result.stderr
    assert result.stderr.count("libfoo") == 1


def test_the_test_dng_reads_as_a_dng_elsewhere(tmp_path: Path) -> None:
    """An independent reader (tifffile) sees what a camera writes: a JPEG preview in IFD 0
    and the 16-bit CFA mosaic in its sub-IFD, with the DNG version tag."""
    tifffile = pytest.importorskip("tifffile")
    path = make_dng(tmp_path / "check.dng", orientation=6)
    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        assert bytes(page.tags["DNGVersion"].value) == b"\x01\x04\x00\x00"
        assert page.compression == 7 and page.tags["Orientation"].value == 6
        raw = page.pages[0]
        assert raw.photometric == 32803 and raw.shape == (48, 64) and raw.dtype.name == "uint16"
        assert raw.asarray()[0, 0] == 4095 and raw.asarray()[1, 1] == 0  # R and B sites of red


def test_photo_metadata_of_every_format_never_fails(tmp_path: Path) -> None:
    """Header-only reads: a date and camera where the format carries them (the DNG's own TIFF
    headers), empty fields otherwise, never an exception."""
    from vlmsearch.photo_meta import read_file_meta

    for ext, write, _ in FORMATS:
        path = tmp_path / f"meta{ext}"
        write(path, "red", None)
        meta = read_file_meta(str(path))
        if ext == ".dng":
            assert meta.camera == "Testcam R1" and meta.taken == "2024-07-14T18:30:00"
    (tmp_path / "junk.cr3").write_bytes(b"\0\0\0\x18ftypcrx " + bytes(100))
    assert read_file_meta(str(tmp_path / "junk.cr3")).camera is None


def test_jpeg2000_is_decoded_at_a_reduced_level_when_big(tmp_path: Path) -> None:
    img = _halves("red", (2000, 1500))
    # 1/8 when the file has the levels; only 2 reductions in it: 1/4; none: full size
    for levels, expected in ((6, (250, 188)), (3, (500, 375)), (1, (2000, 1500))):
        buf = io.BytesIO()
        img.save(buf, "JPEG2000", num_resolutions=levels)
        decoded, upright = open_image(buf.getvalue(), max_pixels=10**8, min_side=180)
        assert upright == (2000, 1500) and decoded.size == expected, (levels, decoded.size)
        assert decoded.getpixel((5, 5))[0] > 180


def test_the_web_page_shows_raw_files_through_libraw(tmp_path: Path) -> None:
    """A DNG opened by Pillow alone is its TIFF container's first image (here an 8×8
    placeholder, as in many cameras' files a tiny thumbnail); the page gets the picture LibRaw
    gives (here demosaiced, turned upright), as JPEG."""
    from fastapi.testclient import TestClient

    from vlmsearch.web import create_app

    root = tmp_path / "card"
    root.mkdir()
    make_dng(root / "portrait.dng", colour=COLOURS["red"], orientation=6, preview=None)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([root])
        ident = eng.search(text="red", k=1)[0].id
        client = TestClient(create_app(eng))
        full = client.get(f"/api/image/{ident}")
        assert full.status_code == 200 and full.headers["content-type"] == "image/jpeg"
        shown = Image.open(io.BytesIO(full.content))
        assert shown.size == (24, 32)  # the 64×48 mosaic at half size, turned by the flip
        thumb = client.get(f"/api/thumb/{ident}")
        assert thumb.status_code == 200
        small = Image.open(io.BytesIO(thumb.content))
        assert small.size[1] > small.size[0]
