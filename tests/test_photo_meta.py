"""Reading what photos say about themselves: dates with offsets, cameras, GPS, containers
other than JPEG, and hostile blocks that must never crash anything."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import PngImagePlugin

from tests.exifgen import exif_block, photo
from tests.imagegen import picture
from vlmsearch.photo_meta import PhotoMeta, read_file_meta
from vlmsearch.places import fold, place_for

EIFFEL = (48.85837, 2.294481)


@pytest.mark.parametrize("suffix", [".jpg", ".png", ".webp", ".tif", ".heic", ".avif"])
def test_exif_date_offset_camera_lens_and_gps_in_every_container(tmp_path: Path,
                                                                  suffix: str) -> None:
    path = photo(tmp_path / f"p{suffix}", taken="2023:07:14 18:03:22", offset="+02:00",
                 make="FUJIFILM", model="X-T4", lens="XF16-55mmF2.8 R LM WR",
                 gps=(38.7223, -9.1393))
    meta = read_file_meta(str(path))
    assert meta.taken == "2023-07-14T18:03:22+02:00"
    assert meta.taken_ts == pytest.approx(1689357802.0)  # local wall-clock time, not UTC
    assert (meta.camera_make, meta.camera_model, meta.camera) == ("FUJIFILM", "X-T4",
                                                                  "FUJIFILM X-T4")
    assert meta.lens == "XF16-55mmF2.8 R LM WR"
    assert meta.lat == pytest.approx(38.7223, abs=1e-4)
    assert meta.lon == pytest.approx(-9.1393, abs=1e-4)


def test_camera_model_that_repeats_the_make_is_not_doubled(tmp_path: Path) -> None:
    meta = read_file_meta(str(photo(tmp_path / "c.jpg", make="Canon", model="Canon EOS R5")))
    assert meta.camera == "Canon EOS R5"


def test_dates_fall_back_to_the_container_never_to_mtime(tmp_path: Path) -> None:
    info = PngImagePlugin.PngInfo()
    info.add_text("Creation Time", "2021-03-04T05:06:07")
    png = tmp_path / "made.png"
    picture("blue").save(png, pnginfo=info)
    assert read_file_meta(str(png)).taken == "2021-03-04T05:06:07"
    bare = tmp_path / "bare.png"
    picture("blue").save(bare)
    assert read_file_meta(str(bare)) == PhotoMeta()  # its mtime is not a date taken


def test_southern_and_western_hemispheres(tmp_path: Path) -> None:
    meta = read_file_meta(str(photo(tmp_path / "s.jpg", gps=(-33.8568, 151.2153))))
    assert (round(meta.lat or 0, 3), round(meta.lon or 0, 3)) == (-33.857, 151.215)
    meta = read_file_meta(str(photo(tmp_path / "w.jpg", gps=(40.7484, -73.9857))))
    assert (round(meta.lat or 0, 3), round(meta.lon or 0, 3)) == (40.748, -73.986)


@pytest.mark.parametrize("taken", ["0000:00:00 00:00:00", "9999:12:31 23:59:59",
                                   "2023:02:30 10:00:00", "garbage", "2023:07:14 25:61:00",
                                   "    ", "\x00\x00\x00"])
def test_impossible_dates_are_no_date(tmp_path: Path, taken: str) -> None:
    meta = read_file_meta(str(photo(tmp_path / "d.jpg", taken=taken)))
    assert meta.taken is None and meta.taken_ts is None


def test_hostile_blocks_never_crash(tmp_path: Path) -> None:
    cases = {
        "wrong types": exif_block(extra={0x010F: 12345, 0x0110: (1, 2, 3)}),
        "huge strings": exif_block(make="A" * 100_000, model="B" * 100_000),
        "bad gps": exif_block(gps=None, extra={0x8825: {1: "N", 2: "nope", 4: (1e308, 1e308)}}),
    }
    for name, exif in cases.items():
        path = tmp_path / f"{name}.jpg"
        try:
            picture("red").save(path, exif=exif.tobytes())
        except Exception:
            continue  # Pillow refused to write it: nothing to read
        meta = read_file_meta(str(path))
        assert meta.lat is None and meta.lon is None, name
        assert meta.camera_make is None or len(meta.camera_make) <= 120, name
    # a truncated EXIF block and an EXIF block of random bytes
    for blob in (exif_block(make="Canon", taken="2020:01:01 10:00:00").tobytes()[:20],
                 b"Exif\x00\x00" + bytes(range(256)) * 20):
        data = io.BytesIO()
        picture("red").save(data, "JPEG", exif=blob)
        path = tmp_path / "broken.jpg"
        path.write_bytes(data.getvalue())
        read_file_meta(str(path))  # any answer, never an exception
    null_island = read_file_meta(str(photo(tmp_path / "z.jpg", gps=(0.0, 0.0))))
    assert (null_island.lat, null_island.lon) == (None, None)


def test_places_are_named_as_people_search_for_them() -> None:
    eiffel = place_for(*EIFFEL)
    assert eiffel.metro == "Paris" and eiffel.country == "France"
    assert eiffel.city != "Paris"  # the nearest GeoNames entry is a neighbouring town
    assert "ile-de-france" in [fold(n) for n in eiffel.names()]
    assert place_for(38.7223, -9.1393).metro == "Lisbon"
    assert place_for(-20.0, -140.0).names() == []  # the middle of the Pacific: no names


def test_an_image_that_cannot_be_opened_has_no_metadata(tmp_path: Path) -> None:
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8\xff" + b"\x00" * 50)
    assert read_file_meta(str(junk)) == PhotoMeta()
    assert read_file_meta(str(tmp_path / "missing.jpg")) == PhotoMeta()
