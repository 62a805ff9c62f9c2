"""Indexes made by an earlier release open, upgrade their metadata schema in place, and keep
every vector (nothing is re-embedded)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

import numpy as np
import pytest

from tests.exifgen import photo
from tests.imagegen import make_image
from vlmsearch import Engine, Filter
from vlmsearch.decode import decode_file
from vlmsearch.encoders.fake import FakeEncoder
from vlmsearch.store.schema import SCHEMA_VERSION

V1_SCHEMA = Path(__file__).parent / "data" / "schema-v1.sql"


def make_v1_index(index: Path, photos: list[Path]) -> None:
    """An index as vlmsearch 0.1.0 wrote it: its schema (tests/data/schema-v1.sql, dumped from
    an index it made), its rows and its format-1 manifest, for these photos."""
    index.mkdir(parents=True)
    encoder = FakeEncoder("fake", dim=32)
    db = sqlite3.connect(index / "meta.sqlite")
    db.executescript(V1_SCHEMA.read_text())
    db.executemany("insert into meta (key, value) values (?, ?)",
                   [("schema_version", "1"), ("seq", "1")])
    for picture_path in photos:
        decoded = decode_file(str(picture_path), encoder.image_spec, max_pixels=10**8)
        vec = encoder.encode_images(decoded.pixels[None])[0]
        st = picture_path.stat()
        db.execute("insert or ignore into vectors (digest, vec) values (?, ?)",
                   (decoded.digest, np.asarray(vec, np.float32).tobytes()))
        db.execute("insert into files (path, size, mtime_ns, digest, width, height, status, "
                   "error, seq, indexed_at) values (?, ?, ?, ?, ?, ?, 'ok', null, 1, ?)",
                   (os.fsencode(picture_path), st.st_size, st.st_mtime_ns, decoded.digest,
                    decoded.width, decoded.height, time.time()))
    db.commit()
    db.close()
    (index / "manifest.json").write_text(json.dumps({
        "format": 1, "metric": "inner_product",
        "model": {"spec": "fake", "id": encoder.model_id, "dim": 32},
        "created": "2026-11-20T10:00:00+00:00", "updated": "2026-11-20T10:00:00+00:00",
        "vectors": {}}))


def test_a_version_1_index_is_upgraded_without_reembedding(tmp_path: Path) -> None:
    photos = [make_image(tmp_path / "photos" / f"{c}.png", c) for c in ("red", "green")]
    photos.append(photo(tmp_path / "photos" / "blue.jpg", "blue", taken="2021:05:06 07:08:09",
                        make="Nikon", model="Z 6", gps=(48.85837, 2.294481)))
    index = tmp_path / "index"
    make_v1_index(index, photos)
    with Engine.open(index, create=False) as eng:
        assert eng.search(text="green", k=1)[0].path == str(photos[1])
        assert eng.info().with_date == 0  # not read yet: no second decode at open
        report = eng.index([tmp_path / "photos"])
        assert (report.unchanged, report.encoded) == (3, 0)  # every stored vector kept
        assert report.metadata_read == 3 and report.metadata_seconds > 0
        info = eng.info()
        assert (info.unavailable, info.with_date, info.with_position, info.with_camera) == (
            0, 1, 1, 1)
        (hit,) = eng.search(where=Filter(place="Paris"))
        assert hit.path == str(photos[2]) and hit.taken == "2021-05-06T07:08:09"
        again = eng.index([tmp_path / "photos"])
        assert again.metadata_read == 0  # read once
    db = sqlite3.connect(index / "meta.sqlite")
    meta = dict(db.execute("select key, value from meta").fetchall())
    assert int(meta["schema_version"]) == SCHEMA_VERSION
    assert (meta["model_spec"], meta["dim"]) == ("fake", "32")
    columns = {row[1] for row in db.execute("pragma table_info(files)")}
    assert {"unavailable", "taken", "taken_ts", "lat", "lon", "place_metro"} <= columns
    assert "phash" in {row[1] for row in db.execute("pragma table_info(vectors)")}


def test_the_upgrade_merges_rows_that_were_one_file_under_two_spellings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = tmp_path / "Pictures"
    photos = [make_image(real / f"{c}.png", c) for c in ("red", "green")]
    (tmp_path / "pictures").symlink_to(real, target_is_directory=True)
    index = tmp_path / "index"
    # what an old release left on macOS: each photo twice, once per spelling of the folder
    make_v1_index(index, photos + [tmp_path / "pictures" / p.name for p in photos])
    monkeypatch.setenv("VLMSEARCH_PATH_KEYS", "macos")
    with Engine.open(index, create=False) as eng:
        assert eng.info().images == 2
        assert len(eng.search(text="red", k=10)) == 2
        report = eng.index([real])
        assert (report.unchanged, report.added, report.removed) == (2, 0, 0)


def test_version_5_gets_a_hash_column_filled_for_new_contents_only(tmp_path: Path) -> None:
    """Schema 6 adds ``vectors.phash``: vectors stored before keep NULL (compared by vector
    alone by `duplicates`), contents embedded afterwards get their hash."""
    photos = tmp_path / "photos"
    old = [make_image(photos / f"{c}.png", c) for c in ("red", "green")]
    index = tmp_path / "index"
    with Engine.open(index, model="fake") as eng:
        eng.index([photos])
    db = sqlite3.connect(index / "meta.sqlite")  # back to what schema 5 had
    db.execute("alter table vectors drop column phash")
    db.execute("update meta set value = '5' where key = 'schema_version'")
    db.commit()
    db.close()
    new = make_image(photos / "blue.png", "blue")
    with Engine.open(index, create=False) as eng:
        report = eng.index([photos])
        assert (report.unchanged, report.encoded) == (2, 1)  # nothing re-embedded
        eng.duplicates()  # works with a mix of hashed and unhashed contents
    db = sqlite3.connect(index / "meta.sqlite")
    meta = dict(db.execute("select key, value from meta").fetchall())
    assert int(meta["schema_version"]) == SCHEMA_VERSION == 6
    hashes = dict(db.execute("select f.path, v.phash from files f join vectors v "
                             "on v.digest = f.digest").fetchall())
    db.close()
    assert hashes[os.fsencode(new)] is not None
    assert all(hashes[os.fsencode(p)] is None for p in old)
