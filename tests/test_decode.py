from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.imagegen import jpeg_bytes, make_image, picture
from vlmsearch.decode import DecodeError, ImageSpec, decode_bytes, decode_file, open_image, prepare

SPEC = ImageSpec(size=32, resize=32, interpolation="bilinear")


def _png(img: Image.Image, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def test_exif_orientations_all_come_out_upright() -> None:
    # An asymmetric picture: left half red, right half blue, 60x30 upright.
    upright = Image.new("RGB", (60, 30), (255, 0, 0))
    upright.paste((0, 0, 255), (30, 0, 60, 30))
    # The stored pixels for each orientation are the inverse transform of the upright picture.
    inverse = {
        1: lambda im: im,
        2: lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
        3: lambda im: im.transpose(Image.Transpose.ROTATE_180),
        4: lambda im: im.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        5: lambda im: im.transpose(Image.Transpose.TRANSPOSE),
        6: lambda im: im.transpose(Image.Transpose.ROTATE_90),
        7: lambda im: im.transpose(Image.Transpose.TRANSVERSE),
        8: lambda im: im.transpose(Image.Transpose.ROTATE_270),
    }
    for orientation, to_stored in inverse.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        data = _png(to_stored(upright), exif=exif)
        img, size = open_image(data, max_pixels=10**6)
        assert size == (60, 30), orientation
        arr = np.asarray(img)
        assert arr[15, 5, 0] > 200 and arr[15, 5, 2] < 50, f"{orientation}: left not red"
        assert arr[15, 55, 2] > 200, f"orientation {orientation}: right not blue"


def test_format_is_found_from_content_not_name(tmp_path: Path) -> None:
    jpeg_named_png = tmp_path / "photo.png"
    jpeg_named_png.write_bytes(jpeg_bytes(picture("red")))
    assert decode_file(str(jpeg_named_png), SPEC, max_pixels=10**6).pixels.shape == (32, 32, 3)
    text_named_jpg = tmp_path / "notes.jpg"
    text_named_jpg.write_text("hello")
    with pytest.raises(DecodeError, match="not an image"):
        decode_file(str(text_named_jpg), SPEC, max_pixels=10**6)


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "empty file"),
        (jpeg_bytes(picture("red", (200, 200)))[:300], "(?i)truncated"),
        (jpeg_bytes(picture("red", (200, 200)))[:-400], "(?i)truncated"),
        (b"GIF89a" + b"\x00" * 10, "."),
    ],
)
def test_bad_bytes_raise_decode_error(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_bytes(data, SPEC, max_pixels=10**6)


def test_corrupt_png_chunk_is_refused() -> None:
    data = bytearray(_png(picture("green", (64, 64))))
    idat = data.index(b"IDAT")
    data[idat + 10: idat + 30] = b"\xff" * 20
    with pytest.raises(DecodeError):
        decode_bytes(bytes(data), SPEC, max_pixels=10**6)


def test_decompression_bomb_refused_before_decoding() -> None:
    # A PNG header declaring 100000 x 100000 pixels (10 gigapixels), with almost no data.
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 100)) + chunk(b"IEND", b""))
    with pytest.raises(DecodeError, match=r"too large|refused"):
        decode_bytes(data, SPEC, max_pixels=50_000_000)
    # and the configurable limit applies to ordinary images too
    with pytest.raises(DecodeError, match="--max-pixels"):
        decode_bytes(jpeg_bytes(picture("red", (100, 100))), SPEC, max_pixels=5_000)


def test_odd_modes_become_rgb() -> None:
    cases = {
        "cmyk": jpeg_bytes(picture("red").convert("CMYK")),
        "gray16": _png(Image.fromarray(np.full((40, 40), 40000, dtype=np.uint16))),
        "palette_alpha": _png(picture("blue").convert("P")),
        "rgba": _png(Image.new("RGBA", (40, 40), (255, 0, 0, 0))),
        "la": _png(Image.new("LA", (40, 40), (10, 255))),
        "bilevel": _png(Image.new("1", (40, 40), 1)),
    }
    for name, data in cases.items():
        out = decode_bytes(data, SPEC, max_pixels=10**6)
        assert out.pixels.shape == (32, 32, 3), name
        assert out.pixels.dtype == np.uint8, name
    cmyk = decode_bytes(cases["cmyk"], SPEC, max_pixels=10**6).pixels
    assert cmyk[2, 2, 0] > 150 and cmyk[2, 2, 2] < 100  # still red
    gray = decode_bytes(cases["gray16"], SPEC, max_pixels=10**6).pixels
    assert 150 <= gray[0, 0, 0] <= 160  # 40000/65535 of full scale, not clipped to white
    transparent = decode_bytes(cases["rgba"], SPEC, max_pixels=10**6).pixels
    assert transparent.min() == 255  # transparency is composited over white


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (40, 40), c) for c in [(255, 0, 0), (0, 0, 255)]]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=100)
    out = decode_bytes(buf.getvalue(), SPEC, max_pixels=10**6).pixels
    assert out[0, 0, 0] > 200 and out[0, 0, 2] < 50


def test_prepare_matches_torchvision_resize_and_center_crop() -> None:
    torchvision = pytest.importorskip("torchvision")
    from torchvision import transforms

    img = picture((120, 60, 200), (97, 61))
    spec = ImageSpec(size=32, resize=40, interpolation="bicubic")
    ours = prepare(img, spec)
    pipeline = transforms.Compose([
        transforms.Resize(40, interpolation=transforms.InterpolationMode.BICUBIC),
        transforms.CenterCrop(32),
    ])
    theirs = np.asarray(pipeline(img))
    assert torchvision is not None
    np.testing.assert_array_equal(ours, theirs)


def test_draft_decoding_records_full_size_and_keeps_content(tmp_path: Path) -> None:
    big = make_image(tmp_path / "big.jpg", "green", size=(2000, 1500))
    out = decode_file(str(big), ImageSpec(size=224, resize=224), max_pixels=10**8)
    assert (out.width, out.height) == (2000, 1500)
    assert out.pixels.shape == (224, 224, 3)
    assert abs(int(out.pixels[5, 5, 1]) - 170) < 12  # the background is still the same green


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(DecodeError) as info:
        decode_file(str(tmp_path / "gone.jpg"), SPEC, max_pixels=10**6)
    assert info.value.vanished
    locked = make_image(tmp_path / "locked.jpg", "red")
    locked.chmod(0)
    try:
        if not _can_read(locked):
            with pytest.raises(DecodeError, match="permission"):
                decode_file(str(locked), SPEC, max_pixels=10**6)
    finally:
        locked.chmod(0o644)


def _can_read(path: Path) -> bool:
    try:
        path.read_bytes()
        return True
    except PermissionError:
        return False


def test_digest_identifies_content() -> None:
    data = jpeg_bytes(picture("red"))
    a = decode_bytes(data, SPEC, max_pixels=10**6)
    b = decode_bytes(data, SPEC, max_pixels=10**6)
    c = decode_bytes(jpeg_bytes(picture("blue")), SPEC, max_pixels=10**6)
    assert a.digest == b.digest != c.digest


def test_heic_photos_are_read(tmp_path: Path) -> None:
    pillow_heif = pytest.importorskip("pillow_heif")
    pillow_heif.register_heif_opener()
    path = tmp_path / "phone.heic"
    picture("red", (120, 80)).save(path, quality=90)
    out = decode_file(str(path), SPEC, max_pixels=10**6)
    assert (out.width, out.height) == (120, 80)
    assert out.pixels[2, 2, 0] > 150 and out.pixels[2, 2, 2] < 100
