"""Duplicate groups (`vlmsearch duplicates`, `Engine.duplicates`, `/api/duplicates`) on
generated pictures with the fake model: exact copies, near duplicates (resized, recompressed,
re-exported, cropped a little), a mirrored copy that is not one, other pictures of the same
kind that are not grouped, and the perceptual hash stored at index time."""

from __future__ import annotations

import json
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image, ImageEnhance, ImageOps
from typer.testing import CliRunner

from tests.imagegen import scene
from tests.test_web_api import serving
from vlmsearch import DuplicateGroup, Engine
from vlmsearch.cli import app
from vlmsearch.decode import decode_file
from vlmsearch.distributed.workers import BlockEncoder
from vlmsearch.duplicates import DuplicateRule, find_groups
from vlmsearch.encoders.fake import FakeEncoder
from vlmsearch.phash import hamming, phash, phashes
from vlmsearch.store.records import ContentTable
from vlmsearch.web.app import create_app


def names(group: DuplicateGroup) -> list[str]:
    return sorted(Path(m.path).name for m in group.members)


@pytest.fixture
def album(tmp_path: Path) -> Path:
    """Two pictures of green hills (different pictures, same scene type), one with copies."""
    root = tmp_path / "album"
    root.mkdir()
    hills = scene("green", 1, (320, 240))
    hills.save(root / "hills.jpg", quality=92)
    shutil.copy(root / "hills.jpg", root / "hills copy.jpg")  # exact
    hills.resize((160, 120), Image.Resampling.LANCZOS).save(root / "hills small.jpg", quality=90)
    hills.save(root / "hills q40.jpg", quality=40)
    hills.save(root / "hills.png")
    hills.crop((8, 6, 312, 234)).save(root / "hills crop.jpg", quality=90)
    ImageOps.mirror(hills).save(root / "hills mirrored.jpg", quality=92)
    ImageEnhance.Brightness(hills).enhance(0.7).save(root / "hills dusk.jpg", quality=92)
    # the fake model gives every green picture the same vector, so here only the hash (28 bits
    # apart) tells the other picture apart; real models add the vector's say
    scene("green", 3, (320, 240)).save(root / "other hills.jpg", quality=92)
    scene("blue", 3, (320, 240)).save(root / "sea.jpg", quality=92)
    scene("blue", 3, (320, 240)).save(root / "sea again.jpg", quality=60)
    return root


@pytest.fixture
def engine(tmp_path: Path, album: Path) -> Iterator[Engine]:
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([album])
        yield eng


NEAR_HILLS = ["hills copy.jpg", "hills crop.jpg", "hills dusk.jpg", "hills q40.jpg",
              "hills small.jpg", "hills.jpg", "hills.png"]


def test_exact_and_near_duplicates_are_grouped_and_lookalikes_are_not(engine: Engine) -> None:
    groups = engine.duplicates()
    assert [(g.kind, names(g)) for g in groups] == [
        ("near", NEAR_HILLS),
        ("near", ["sea again.jpg", "sea.jpg"]),
    ] or [(g.kind, names(g)) for g in groups] == [
        ("near", ["sea again.jpg", "sea.jpg"]),
        ("near", NEAR_HILLS),
    ]
    for group in groups:
        assert 0.8 <= group.score <= 1.0
    grouped = {m.path for g in groups for m in g.members}
    assert not any(Path(p).name in ("hills mirrored.jpg", "other hills.jpg") for p in grouped)


def test_exact_copies_alone_form_an_exact_group(tmp_path: Path, album: Path) -> None:
    only = tmp_path / "copies"
    only.mkdir()
    shutil.copy(album / "sea.jpg", only / "a.jpg")
    shutil.copy(album / "sea.jpg", only / "b.jpg")
    shutil.copy(album / "hills.jpg", only / "c.jpg")
    with Engine.open(tmp_path / "copies-index", model="fake") as eng:
        eng.index([only])
        (group,) = eng.duplicates()
    assert (group.kind, group.score, names(group)) == ("exact", 1.0, ["a.jpg", "b.jpg"])


def test_similar_adds_the_mirrored_copy_and_min_score_tunes(engine: Engine) -> None:
    similar = engine.duplicates(similar=True)
    kinds = {g.kind for g in similar}
    assert "similar" in kinds
    hills = next(g for g in similar if "hills.jpg" in names(g))
    assert "hills mirrored.jpg" in names(hills) and hills.kind == "similar"
    # a stricter threshold drops the darker copy (cosine about 0.99 with the fake model)
    strict = engine.duplicates(min_score=0.999)
    hills_strict = next(g for g in strict if "hills.jpg" in names(g))
    assert names(hills_strict) == [n for n in NEAR_HILLS if n != "hills dusk.jpg"]
    dusk = next(g for g in engine.duplicates() if "hills.jpg" in names(g))
    assert "hills dusk.jpg" in names(dusk) and dusk.score < hills_strict.score
    with pytest.raises(Exception, match="between -1 and 1"):
        engine.duplicates(min_score=2.0)


def test_the_hash_is_stored_at_index_time_from_the_decoded_pixels(engine: Engine,
                                                                  album: Path) -> None:
    db = sqlite3.connect(engine.path / "meta.sqlite")
    stored = dict(db.execute("select digest, phash from vectors").fetchall())
    db.close()
    assert all(h is not None for h in stored.values())
    decoded = decode_file(str(album / "hills.jpg"), FakeEncoder().image_spec, max_pixels=10**8)
    assert stored[decoded.digest] == phash(decoded.pixels)


def test_vectors_without_a_hash_are_compared_by_vector_alone(engine: Engine) -> None:
    db = sqlite3.connect(engine.path / "meta.sqlite")
    db.execute("update vectors set phash = null")  # as rows stored before schema 6
    db.commit()
    db.close()
    groups = engine.duplicates()
    assert groups and all(g.kind in ("exact", "near") for g in groups)
    assert any("hills.jpg" in names(g) for g in groups)


def test_cli_json_shape_and_text_output(engine: Engine) -> None:
    runner = CliRunner()
    out = runner.invoke(app, ["duplicates", "--index-dir", str(engine.path), "--json"])
    assert out.exit_code == 0, out.output
    data = json.loads(out.stdout)
    assert isinstance(data, list) and data
    for group in data:
        assert set(group) == {"kind", "score", "members"}
        assert group["kind"] in ("exact", "near", "similar")
        assert isinstance(group["score"], float)
        assert all(set(m) == {"id", "path"} and isinstance(m["id"], int)
                   for m in group["members"])
    strict = runner.invoke(app, ["duplicates", "--index-dir", str(engine.path), "--json",
                                 "--min-score", "0.999"])
    members = {Path(m["path"]).name for g in json.loads(strict.stdout) for m in g["members"]}
    assert "hills.jpg" in members and "hills dusk.jpg" not in members
    text = runner.invoke(app, ["duplicates", "--index-dir", str(engine.path), "--similar"])
    assert text.exit_code == 0
    assert "similar (" in text.stdout and "hills mirrored.jpg" in text.stdout
    assert text.stdout.rstrip().splitlines()[-1] == ("2 groups (0 exact, 1 near, 1 similar) "
                                                     "holding 11 files")


def test_api_lists_the_groups(engine: Engine) -> None:
    client = TestClient(create_app(engine))
    data = client.get("/api/duplicates").json()
    assert data["count"] == 2 and {g["kind"] for g in data["groups"]} == {"near"}
    ids = {m["id"] for g in data["groups"] for m in g["members"]}
    assert all(client.get(f"/api/thumb/{i}").status_code == 200 for i in ids)
    assert client.get("/api/duplicates?similar=true").json()["count"] == 2  # mirrored joins
    assert {g["kind"] for g in client.get("/api/duplicates?similar=true").json()["groups"]} \
        == {"near", "similar"}
    assert client.get("/api/duplicates?min_score=3").status_code == 422
    page = client.get("/duplicates")
    assert page.status_code == 200 and b"duplicates.js" in page.content


def test_phash_separates_mirrors_and_keeps_edits_close() -> None:
    pixels = np.asarray(scene("orange", 5, (224, 224)))
    base = phash(pixels)
    brighter = np.clip(pixels.astype(np.int32) * 115 // 100, 0, 255).astype(np.uint8)
    assert hamming(base, phash(brighter)) <= 4
    assert hamming(base, phash(pixels[:, ::-1])) >= 16
    batch = phashes(np.stack([pixels, pixels[:, ::-1]]))
    assert batch.dtype == np.int64 and int(batch[0]) == base


def test_neighbour_search_above_the_exact_limit_finds_planted_pairs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import vlmsearch.duplicates as dups

    monkeypatch.setattr(dups, "EXACT_LIMIT", 100)  # the inverted-file path, on a small table
    rng = np.random.default_rng(0)
    n, dim = 2000, 32
    vecs = rng.standard_normal((n, dim)).astype(np.float32)
    vecs[1000:1050] = vecs[:50] + 0.05 * rng.standard_normal((50, dim)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    hashes = rng.integers(-2**62, 2**62, size=n).astype(np.int64)
    hashes[1000:1050] = hashes[:50]
    table = ContentTable(np.arange(1, n + 1), [f"/{i}" for i in range(n)], np.arange(n), vecs,
                         hashes, np.ones(n, dtype=bool))
    groups = find_groups(table, DuplicateRule())
    pairs = {tuple(sorted(m.id - 1 for m in g.members)) for g in groups}
    assert sum((i, 1000 + i) in pairs for i in range(50)) >= 48


def test_ray_blocks_carry_the_same_hash(tmp_path: Path, album: Path) -> None:
    """The Ray executor's encoder actor hashes the pixels it embeds (no cluster needed)."""
    paths = [str(album / "hills.jpg"), str(album / "sea.jpg")]
    block = {"i": np.arange(2), "path": np.array(paths, dtype=object)}
    actor = BlockEncoder(model_spec="fake", model_id=FakeEncoder().model_id, device="cpu",
                         batch_size=8, max_pixels=10**8)
    out = actor(block)
    spec = FakeEncoder().image_spec
    for row, path in enumerate(paths):
        decoded = decode_file(path, spec, max_pixels=10**8)
        assert int(out["phash"][row]) == phash(decoded.pixels)


CHROMIUM = Path("/usr/bin/chromium")


@pytest.mark.slow
@pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian's chromium is not at "
                    f"{CHROMIUM} (apt-get install chromium; .ci/run installs it)")
def test_the_duplicates_page_shows_groups_in_a_browser(engine: Engine) -> None:
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="Playwright is not installed (pip install -e '.[dev]')")
    from tests.test_web_browser import chromium_page

    index = engine.path
    engine.close()  # the server opens it itself
    with serving(index) as url, sync_api.sync_playwright() as p, \
            chromium_page(p) as (page, problems):
        page.goto(url)
        page.click("text=Duplicates")
        page.wait_for_selector(".dup-group")
        assert page.url.rstrip("/").endswith("/duplicates")
        groups = page.locator(".dup-group")
        assert groups.count() == 2
        assert set(page.locator(".dup-group").evaluate_all(
            "els => els.map(e => e.dataset.kind)")) == {"near"}
        first = groups.first
        assert first.locator(".dup-kind").inner_text() == "Near duplicates"
        assert "score" in first.locator(".dup-meta").inner_text()
        shown = set(page.locator(".dup-name").all_inner_texts())
        assert set(NEAR_HILLS) <= shown and "hills mirrored.jpg" not in shown
        page.wait_for_function("() => [...document.querySelectorAll('.dup-member img')]"
                               ".every(i => i.complete && i.naturalWidth > 0)")
        page.check("#similar")
        page.wait_for_function("() => document.querySelector('.dup-group.similar')")
        assert "hills mirrored.jpg" in page.locator(".dup-name").all_inner_texts()
        assert "similar=1" in page.url
        page.uncheck("#similar")
        page.wait_for_function("() => !document.querySelector('.dup-group.similar')")
        page.fill("#min-score", "0.999")  # near links below it go
        page.click("#dup-go")
        page.wait_for_function("() => ![...document.querySelectorAll('.dup-name')]"
                               ".some(n => n.textContent === 'hills dusk.jpg')")
        assert "min_score=0.999" in page.url
        page.goto(url + "api/../duplicates?min_score=5")
        page.wait_for_selector("#error:not([hidden])")
        assert "min_score" in page.locator("#error").inner_text()
    assert not problems, problems


def test_reindex_drops_the_hashes_with_the_vectors_and_remakes_both(engine: Engine,
                                                                    album: Path) -> None:
    index = engine.path
    engine.close()
    with Engine.open(index, model="fake", reindex=True) as eng:
        db = sqlite3.connect(index / "meta.sqlite")
        assert db.execute("select count(*) from vectors").fetchone()[0] == 0
        eng.index([album])
        hashes = [h for (h,) in db.execute("select phash from vectors")]
        db.close()
        assert hashes and all(h is not None for h in hashes)
        assert len(eng.duplicates()) == 2
