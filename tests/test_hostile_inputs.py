"""Hostile and odd inputs: every file is indexed correctly or skipped with a recorded reason;
every bad query gets a clear message and a non-zero exit; disk full and read-only folders leave
the index as it was."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from typer.testing import CliRunner

from tests.imagegen import jpeg_bytes, make_image, picture
from vlmsearch import Engine, UsageError
from vlmsearch.cli import app

runner = CliRunner()


def _png_bomb(width: int, height: int) -> bytes:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b""))


def build_hostile_tree(root: Path) -> dict[str, str]:
    """Write the corpus; returns {relative path: "ok" | "skip"} (what must happen to it)."""
    expect: dict[str, str] = {}

    def put(rel: str, data: bytes, outcome: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        expect[rel] = outcome

    def encoded(img: Image.Image, fmt: str, **kwargs: object) -> bytes:
        buf = io.BytesIO()
        img.save(buf, format=fmt, **kwargs)
        return buf.getvalue()

    put("zero-byte.jpg", b"", "skip")
    put("truncated.jpg", jpeg_bytes(picture("red", (300, 200)))[:-600], "skip")
    png = bytearray(encoded(picture("green", (80, 60)), "PNG"))
    idat = png.index(b"IDAT")
    png[idat + 8: idat + 40] = b"\x13" * 32
    put("corrupt-chunk.png", bytes(png), "skip")
    put("bomb.png", _png_bomb(60_000, 60_000), "skip")
    put("text-file.jpg", b"just some notes, not a picture\n", "skip")
    put("jpeg-named.png", jpeg_bytes(picture("blue")), "ok")
    put("cmyk.jpg", jpeg_bytes(picture("red").convert("CMYK")), "ok")
    put("gray16.png", encoded(Image.fromarray(np.full((50, 70), 50000, np.uint16)), "PNG"), "ok")
    palette = picture("purple").convert("RGBA")
    palette.putpixel((0, 0), (0, 0, 0, 0))
    put("palette-alpha.png", encoded(palette.convert("P"), "PNG", transparency=0), "ok")
    frames = [picture(c) for c in ("yellow", "blue", "green")]
    put("animated.gif", encoded(frames[0], "GIF", save_all=True, append_images=frames[1:]), "ok")
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        put(f"exif/orientation-{orientation}.jpg",
            encoded(picture("orange", (90, 30)), "JPEG", exif=exif), "ok")
    put("name with spaces.png", encoded(picture("white"), "PNG"), "ok")
    put("ünïcödé 写真 📷.png", encoded(picture("pink"), "PNG"), "ok")
    put("new\nline.png", encoded(picture("gray"), "PNG"), "ok")
    bad_utf8 = os.fsdecode(b"caf\xe9-latin1.png")
    put(bad_utf8, encoded(picture("black"), "PNG"), "ok")
    deep = "/".join(f"level{i}" for i in range(60))
    put(f"{deep}/deep.png", encoded(picture("green"), "PNG"), "ok")
    (root / "loop").symlink_to(root, target_is_directory=True)
    return expect


def _index(eng: Engine, root: Path) -> dict[str, dict[str, object]]:
    eng.index([root])
    out: dict[str, dict[str, object]] = {}
    for rec in eng._handle.store.file_states().values():
        rel = os.path.relpath(rec.path, root)
        out[rel] = {"status": rec.status}
    for rec in eng.failed():
        out[os.path.relpath(rec.path, root)]["error"] = rec.error
    return out


def test_hostile_corpus_is_indexed_or_skipped_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "hostile"
    expect = build_hostile_tree(root)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        report = eng.index([root])
        known = eng._handle.store.file_states().values()
        states = {os.path.relpath(s.path, root): s for s in known}
        errors = {os.path.relpath(r.path, root): r.error for r in eng.failed()}
        for rel, outcome in expect.items():
            assert rel in states, f"{rel!r} was not seen"
            assert states[rel].status == ("ok" if outcome == "ok" else "failed"), rel
            if outcome == "skip":
                assert errors[rel], f"{rel!r} skipped without a reason"
        assert report.skipped == sum(v == "skip" for v in expect.values())
        assert report.added == sum(v == "ok" for v in expect.values())
        assert any("loop" in p or "already walked" in r for p, r in report.walk_problems)
        # every EXIF orientation is stored upright: 90x30 pixels are 30x90 after 5..8
        hits = {os.path.relpath(h.path, root): h for h in eng.search(text="orange", k=100)}
        for orientation in range(1, 9):
            hit = hits[f"exif/orientation-{orientation}.jpg"]
            assert (hit.width, hit.height) == ((30, 90) if orientation >= 5 else (90, 30))
        reasons = " ".join(str(e) for e in errors.values())
        assert "max-pixels" in reasons and "empty file" in reasons and "not an image" in reasons


def test_symlinks_outside_the_root_follow_the_flag(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "elsewhere"
    make_image(root / "inside.png", "red")
    make_image(outside / "outside.png", "blue")
    (root / "link-dir").symlink_to(outside, target_is_directory=True)
    (root / "link-file.png").symlink_to(outside / "outside.png")
    code = runner.invoke(app, ["index", str(root), "--model", "fake", "--index", "a",
                               "--no-follow-symlinks", "--json"])
    assert json.loads(code.stdout)["added"] == 1
    code = runner.invoke(app, ["index", str(root), "--model", "fake", "--index", "b", "--json"])
    assert json.loads(code.stdout)["added"] == 3


def test_file_deleted_between_listing_and_reading(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import vlmsearch.pipeline as pipeline

    root = tmp_path / "p"
    for c in ("red", "green", "blue"):
        make_image(root / f"{c}.png", c)
    real = pipeline.decode_file

    def vanishing(path: str, *args: object, **kwargs: object) -> object:
        if path.endswith("green.png"):
            os.unlink(path)
        return real(path, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline, "decode_file", vanishing)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        report = eng.index([root])
        assert (report.added, report.skipped) == (2, 0)
        assert eng.info().images == 2 and not eng.failed()


# --- queries ----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    base = tmp_path_factory.mktemp("q")
    for c in ("red", "green", "blue", "yellow"):
        make_image(base / "photos" / f"{c}.png", c)
    with Engine.open(base / "index", model="fake") as eng:
        eng.index([base / "photos"])
    yield base


@settings(max_examples=150, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=300))
def test_any_unicode_query_gives_results_or_a_usage_error(small_index: Path, text: str) -> None:
    with Engine.open(small_index / "index", create=False) as eng:
        try:
            hits = eng.search(text=text, k=3)
        except UsageError as exc:
            assert not text.strip() and "empty" in str(exc)
        else:
            assert len(hits) == 3 and text.strip()


@pytest.mark.parametrize(
    "args, message",
    [
        (["query", ""], "empty"),
        (["query", " \t\n "], "empty"),
        (["query", "--image", "NOTES"], "not an image"),
        (["query", "--image", "BOMB"], "too large"),
        (["query", "--image", "ZERO"], "empty file"),
        (["query", "--image", "MISSING"], "No such file"),
        (["query", "red", "-k", "0"], "--top-k"),
    ],
)
def test_bad_queries_get_a_message_and_nonzero_exit(
    small_index: Path, args: list[str], message: str, tmp_path: Path
) -> None:
    files = {"NOTES": tmp_path / "notes.png", "BOMB": tmp_path / "bomb.png",
             "ZERO": tmp_path / "zero.jpg", "MISSING": tmp_path / "missing.jpg"}
    files["NOTES"].write_text("hello")
    files["BOMB"].write_bytes(_png_bomb(50_000, 50_000))
    files["ZERO"].write_bytes(b"")
    args = [str(files[a]) if a in files else a for a in args]
    result = runner.invoke(app, [*args, "--index-dir", str(small_index / "index")])
    assert result.exit_code != 0
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_long_query_is_truncated_with_a_note(tiny_clip_spec: str, tmp_path: Path) -> None:
    make_image(tmp_path / "photos" / "a.png", "red")
    result = runner.invoke(app, ["index", str(tmp_path / "photos"), "--model", tiny_clip_spec,
                                 "--index-dir", str(tmp_path / "i")])
    assert result.exit_code == 0, result.stderr
    long_text = "a very long description of a red square " * 250  # 10,000 characters
    result = runner.invoke(app, ["query", long_text, "--index-dir", str(tmp_path / "i"),
                                 "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)[0]["path"].endswith("a.png")
    assert "note: the query text is longer than the model reads (77 tokens)" in result.stderr


# --- disk full and read-only folders ----------------------------------------------------------
def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True)
    return done.returncode == 0


@pytest.mark.slow
def test_disk_full_while_indexing_leaves_the_index_as_it_was(tmp_path: Path) -> None:
    disk = tmp_path / "small-disk"
    if not _mount_tmpfs(disk, "700k"):
        pytest.skip("needs root to mount a small tmpfs")
    try:
        root = tmp_path / "photos"
        for i in range(5):
            make_image(root / "first" / f"{i}.png", (40 * i, 100, 200))
        index = disk / "index"
        ok = runner.invoke(app, ["index", str(root), "--model", "fake:256", "--index-dir",
                                 str(index), "--json"])
        assert ok.exit_code == 0, ok.stderr
        rng = np.random.default_rng(0)
        for i in range(600):
            make_image(root / "more" / f"{i}.png", tuple(int(c) for c in rng.integers(0, 255, 3)),
                       size=(16, 16))
        full = runner.invoke(app, ["index", str(root), "--index-dir", str(index),
                                   "--checkpoint", "100000"])
        assert full.exit_code == 1
        assert "disk" in full.stderr.lower() and "Traceback" not in full.stderr
        with Engine.open(index, create=False) as eng:
            assert eng.info().images == 5
            assert eng.search(text="x", k=10)
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _as_nobody(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
         sys.executable, "-m", "vlmsearch.cli", *args],
        capture_output=True, text=True, cwd=cwd, env={**os.environ, "HOME": str(cwd)},
    )


@pytest.fixture
def world_dir() -> Iterator[Path]:
    """A folder under /tmp that an unprivileged user can enter (pytest's tmp_path is 0700)."""
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("needs root and setpriv to act as an unprivileged user")
    path = Path(tempfile.mkdtemp(prefix="vlmsearch-perm-", dir="/tmp"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
def test_unreadable_files_and_read_only_index_as_an_ordinary_user(world_dir: Path) -> None:
    photos = world_dir / "photos"
    for c in ("red", "green"):
        make_image(photos / f"{c}.png", c)
    secret = make_image(photos / "secret.png", "blue")
    secret.chmod(0o000)
    for p in (photos, photos / "red.png", photos / "green.png"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    writable = world_dir / "mine"
    writable.mkdir()
    os.chown(writable, 65534, 65534)
    done = _as_nobody(["index", str(photos), "--model", "fake", "--index-dir",
                       str(writable / "index"), "--json"], world_dir)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["added"], report["skipped"]) == (2, 1)
    assert "permission denied" in report["skipped_files"][0]["reason"]
    # an index folder the user cannot write: indexing fails clearly, querying still works
    index = world_dir / "root-index"
    ok = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "index", str(photos), "--model",
                         "fake", "--index-dir", str(index)], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for p in [index, *index.iterdir()]:
        p.chmod(0o755 if p.is_dir() else 0o644)
    before = {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}
    refused = _as_nobody(["index", str(photos), "--index-dir", str(index)], world_dir)
    assert refused.returncode == 1
    assert "cannot write" in refused.stderr or "read-only" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    after = {p.name: p.read_bytes() for p in index.iterdir() if p.is_file()}
    assert after == before
    query = _as_nobody(["query", "green", "--index-dir", str(index), "--paths-only"], world_dir)
    assert query.returncode == 0, query.stderr
    assert query.stdout.splitlines()[0].endswith("green.png")
