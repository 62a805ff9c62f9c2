"""The engine with its metadata in PostgreSQL (``--db postgresql+psycopg://...``) behaves exactly
like the default SQLite: the same scenarios run against both backends, on a real server started
for the session (see tests/pg.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa

from tests.imagegen import make_image
from tests.pg import PASSWORD, PgServer, pg_missing_reason, running_server
from vlmsearch import Engine, Settings, StorageError, UsageError
from vlmsearch.store.schema import FILES, VECTORS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pg_server() -> Iterator[PgServer]:
    reason = pg_missing_reason()
    if reason:
        pytest.skip(reason)
    with running_server() as server:
        yield server


@pytest.fixture
def pg_url(pg_server: PgServer) -> str:
    """URL (with password) of a new empty database on the test server."""
    return pg_server.url(pg_server.create_database())


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str | None]:
    """None for the default SQLite, else the URL (with password) of a new PostgreSQL database.
    PGPASSWORD is set, as a user would, so indexes reopen from their recorded URL."""
    if request.param == "sqlite":
        yield None
        return
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    yield request.getfixturevalue("pg_url")


def _open(tmp_path: Path, db: str | None, **kwargs: object) -> Engine:
    return Engine.open(tmp_path / "index", model="fake", db=db, **kwargs)  # type: ignore[arg-type]


def _bump_mtime(path: Path) -> None:
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))


def check_store_invariants(index: Path, expected_files: int) -> None:
    """Every file has exactly one vector, every vector belongs to a file, and the FAISS index
    holds exactly the store's ids (as tests/test_crash_safety.py, for any database)."""
    with Engine.open(index, create=False) as eng, eng._handle.store.read() as conn:
        ok = FILES.c.status == "ok"
        files, distinct = conn.execute(
            sa.select(sa.func.count(), sa.func.count(sa.distinct(FILES.c.path))).where(ok)
        ).one()
        assert (files, distinct) == (expected_files, expected_files)
        orphans = conn.execute(
            sa.select(sa.func.count()).select_from(
                FILES.outerjoin(VECTORS, FILES.c.digest == VECTORS.c.digest))
            .where(ok, VECTORS.c.digest.is_(None))
        ).scalar_one()
        unused = conn.execute(
            sa.select(sa.func.count()).select_from(VECTORS).where(
                ~sa.exists().where(FILES.c.digest == VECTORS.c.digest))
        ).scalar_one()
        assert (orphans, unused) == (0, 0)
        vectors, _ = eng._handle.vectors.current("image", conn, writable=True, reload=True)
        np.testing.assert_array_equal(np.sort(vectors.ids()),
                                      np.sort(eng._handle.store.live_ids("image", conn)))


# --- the engine scenarios, on both backends ----------------------------------------------------
def test_index_search_and_failed_files(tmp_path: Path, colour_tree: Path, db: str | None) -> None:
    with _open(tmp_path, db) as eng:
        report = eng.index([colour_tree])
        assert (report.added, report.skipped, report.encoded) == (6, 2, 6)
        assert eng._handle.store.dialect == ("postgresql" if db else "sqlite")
        for colour, name in [("red", "red.jpg"), ("yellow", "ünïcode 黄色.webp"),
                             ("purple", "purple.bmp")]:
            assert Path(eng.search(text=f"a {colour} picture", k=3)[0].path).name == name
        failed = {Path(r.path).name: r.error for r in eng.failed()}
        assert set(failed) == {"broken.jpg", "notes.jpg"}
        assert "not an image" in (failed["notes.jpg"] or "")
        hit = next(h for h in eng.search(text="orange", k=10) if h.path.endswith("rotated.jpg"))
        assert (hit.width, hit.height) == (40, 80)
        info = eng.info()
        assert (info.images, info.failed) == (6, 2)
    check_store_invariants(tmp_path / "index", 6)


def test_incremental_add_change_delete_rename_duplicate(
    tmp_path: Path, colour_tree: Path, db: str | None
) -> None:
    with _open(tmp_path, db) as eng:
        eng.index([colour_tree])
        again = eng.index([colour_tree])
        assert (again.added, again.updated, again.unchanged, again.encoded) == (0, 0, 6, 0)
        make_image(colour_tree / "new" / "pink.png", "pink")
        make_image(colour_tree / "red.jpg", "black")
        _bump_mtime(colour_tree / "red.jpg")
        (colour_tree / "green.png").unlink()
        (colour_tree / "holiday" / "blue sky.jpg").rename(colour_tree / "moved.jpg")
        shutil.copy(colour_tree / "rotated.jpg", colour_tree / "copy of rotated.jpg")
        report = eng.index([colour_tree])
        assert (report.added, report.updated, report.removed, report.unchanged) == (3, 1, 2, 3)
        assert (report.encoded, report.reused) == (2, 2)
        assert eng.search(text="black", k=1)[0].path.endswith("red.jpg")
        names = {Path(h.path).name for h in eng.search(text="blue", k=20)}
        assert "moved.jpg" in names and "blue sky.jpg" not in names
        assert eng.info().images == 7
    check_store_invariants(tmp_path / "index", 7)


def test_image_to_text_and_image_queries(
    tmp_path: Path, colour_tree: Path, db: str | None
) -> None:
    make_image(colour_tree / "red2.png", (200, 40, 40))
    with _open(tmp_path, db) as eng:
        eng.index([colour_tree])
        hits = eng.search(image=colour_tree / "red.jpg", k=3)
        assert hits[0].path.endswith("red2.png")
        assert all(not h.path.endswith("red.jpg") for h in hits)
        report = eng.add_texts(["a red square", "a blue sky", "green grass", "a red square"])
        assert (report.added, report.existing) == (3, 0)
        assert eng.add_texts(["a blue sky", "new"]).added == 1
        top = eng.search(image=colour_tree / "holiday" / "blue sky.jpg", target="texts", k=1)
        assert top[0].text == "a blue sky"
        assert eng.clear_texts() == 4


def test_remove_files_and_folders(tmp_path: Path, colour_tree: Path, db: str | None) -> None:
    """Folder removal is a byte-wise range query on the raw path (bytea in PostgreSQL)."""
    with _open(tmp_path, db) as eng:
        eng.index([colour_tree])
        assert eng.remove([colour_tree / "holiday"]) == 2  # includes the unicode name
        assert eng.remove([colour_tree / "red.jpg", colour_tree / "nothing.jpg"]) == 1
        assert eng.remove([colour_tree / "deep"]) == 1
        names = {Path(h.path).name for h in eng.search(text="x", k=50)}
        assert names == {"green.png", "rotated.jpg"}
    check_store_invariants(tmp_path / "index", 2)


def test_reindex_switches_model(tmp_path: Path, colour_tree: Path, db: str | None) -> None:
    with _open(tmp_path, db) as eng:
        eng.index([colour_tree])
    with Engine.open(tmp_path / "index", model="fake:48", reindex=True) as eng:
        assert eng.info().images == 0 and eng.info().dim == 48
        assert eng._handle.store.dialect == ("postgresql" if db else "sqlite")
        report = eng.index([colour_tree])
        assert (report.added, report.encoded) == (6, 6)
        assert eng.search(text="red", k=1)[0].path.endswith("red.jpg")


def test_approximate_index_on_both_backends(tmp_path: Path, db: str | None) -> None:
    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for i in range(200):
        dark = (int(rng.integers(0, 90)), int(rng.integers(0, 200)), int(rng.integers(0, 200)))
        make_image(root / f"{i:03d}.png", dark, size=(24, 24))
    make_image(root / "target.png", "pink", size=(24, 24))
    settings = Settings(exact_search_limit=100, checkpoint_images=37)
    with _open(tmp_path, db, settings=settings) as eng:
        eng.index([root])
        assert eng.info().index_type.startswith("IVF")
        assert eng.search(text="pink", k=1)[0].path.endswith("target.png")
    check_store_invariants(tmp_path / "index", 201)


def _noise_tree(root: Path, n: int) -> None:
    from tests.test_crash_safety import _noise_tree as make

    make(root, n)


def test_sigkill_mid_run_then_resume(tmp_path: Path, db: str | None) -> None:
    """The crash-safety invariant on both backends: kill -9 mid-run, run again, nothing lost,
    nothing duplicated."""
    root = tmp_path / "photos"
    _noise_tree(root, 120)
    index = tmp_path / "index"
    cmd = [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index),
           "--model", "fake", "--json", "--checkpoint", "10"]
    if db:
        cmd += ["--db", db]
    mid_run = []
    for target in (20, 60):  # kill once that much is committed, as the SQLite kill test does
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while (_committed(index, db) < target and proc.poll() is None
               and time.time() < deadline):
            time.sleep(0.01)
        running = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _committed(index, db)
        mid_run.append(running and target <= now < 120)
    assert all(mid_run), f"a kill landed after the run ended: {mid_run}"
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] + report["unchanged"] == 120
    check_store_invariants(index, 120)


def _committed(index: Path, db: str | None) -> int:
    """Files committed so far by a run in another process (0 before its database exists)."""
    url = db or f"sqlite:///file:{index / 'meta.sqlite'}?mode=ro&uri=true"
    if db is None and not (index / "meta.sqlite").exists():
        return 0
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            return int(conn.execute(sa.text("select count(*) from files")).scalar_one())
    except sa.exc.SQLAlchemyError:
        return 0
    finally:
        engine.dispose()


# --- PostgreSQL specifics ----------------------------------------------------------------------
def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "vlmsearch.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def test_cli_records_the_database_without_password(
    tmp_path: Path, colour_tree: Path, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = pg_server.create_database()
    index = tmp_path / "index"
    env = {k: v for k, v in os.environ.items() if k != "PGPASSWORD"}
    done = _cli("index", str(colour_tree), "--index-dir", str(index), "--model", "fake",
                "--db", pg_server.url(name), "--json", env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["added"] == 6
    manifest = json.loads((index / "manifest.json").read_text())
    assert manifest["database"] == pg_server.url(name, password=False)
    assert PASSWORD not in (index / "manifest.json").read_text()
    assert manifest["format"] == 2
    assert not (index / "meta.sqlite").exists()

    # without a password anywhere: a message that says where to put it
    failed = _cli("info", "--index-dir", str(index), env={**env, "HOME": str(tmp_path)})
    assert failed.returncode == 1
    assert "PGPASSWORD" in failed.stderr and "Traceback" not in failed.stderr
    assert pg_server.url(name, password=False).split("@")[1] in failed.stderr

    # with PGPASSWORD, query and info open the index unchanged
    env["PGPASSWORD"] = PASSWORD
    info = _cli("info", "--index-dir", str(index), "--json", env=env)
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["images"] == 6
    query = _cli("query", "green", "--index-dir", str(index), "--json", env=env)
    assert json.loads(query.stdout)[0]["path"].endswith("green.png")
    # the library too, and --db may be repeated (with its password) but not changed
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with Engine.open(index, create=False) as eng:
        assert eng._handle.store.dialect == "postgresql" and eng.info().images == 6
    with Engine.open(index, create=False, db=pg_server.url(name)) as eng:
        assert eng.info().images == 6
    with pytest.raises(UsageError, match="leave out --db"):
        Engine.open(index, create=False, db=pg_server.url("another"))
    with pytest.raises(UsageError, match="leave out --db"):
        Engine.open(tmp_path / "sqlite-index", model="fake").close()
        Engine.open(tmp_path / "sqlite-index", db=pg_server.url(name))


def test_a_database_serves_one_index(
    tmp_path: Path, colour_tree: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PGPASSWORD", PASSWORD)
    with Engine.open(tmp_path / "a", model="fake", db=pg_url) as eng:
        eng.index([colour_tree])
    with pytest.raises(UsageError, match="already holds a vlmsearch index"):
        Engine.open(tmp_path / "b", model="fake", db=pg_url)
    assert not (tmp_path / "b" / "manifest.json").exists()


def test_unreachable_server_names_the_address(tmp_path: Path, pg_server: PgServer) -> None:
    url = f"postgresql+psycopg://someone:pw@127.0.0.1:{pg_server.port + 1}/nothing"
    with pytest.raises(StorageError, match=r"127\.0\.0\.1:\d+/nothing.*server runs") as err:
        Engine.open(tmp_path / "index", model="fake", db=url)
    assert ":pw@" not in str(err.value)
    with pytest.raises(UsageError, match="invalid database URL"):
        Engine.open(tmp_path / "index2", model="fake", db="not a url")
