"""Damaged index files give one clear line (or are repaired from the database, the source of
truth), never a traceback; SQLite without write-ahead logging is an error, not silence; and
tombstones are pruned once the FAISS files reflect them."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.imagegen import make_image
from vlmsearch import Engine, IndexFormatError, StorageError
from vlmsearch.cli import app
from vlmsearch.store.metadata import MetadataStore

runner = CliRunner()


@pytest.fixture
def index(tmp_path: Path, colour_tree: Path) -> Path:
    folder = tmp_path / "index"
    done = runner.invoke(app, ["index", str(colour_tree), "--model", "fake", "--index-dir",
                               str(folder)])
    assert done.exit_code == 0, done.stderr
    return folder


def _faiss_file(index: Path) -> Path:
    """The image FAISS file the manifest names."""
    manifest = json.loads((index / "manifest.json").read_text())
    return index / manifest["vectors"]["image"]["file"]


def _query(index: Path, text: str = "red") -> tuple[int, str, str]:
    done = runner.invoke(app, ["query", text, "--index-dir", str(index), "--paths-only"])
    return done.exit_code, done.stdout, done.stderr


def test_a_database_that_is_not_a_database_is_one_clear_line(index: Path) -> None:
    (index / "meta.sqlite").write_bytes(b"this is not SQLite at all " * 100)
    for side in ("meta.sqlite-wal", "meta.sqlite-shm"):
        (index / side).unlink(missing_ok=True)
    code, out, err = _query(index)
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "meta.sqlite is damaged" in lines[0], err
    assert "Traceback" not in out + err
    with pytest.raises(IndexFormatError, match="restore it from a backup"):
        Engine.open(index, create=False)


def test_a_truncated_manifest_is_rebuilt_from_the_database(index: Path) -> None:
    manifest = index / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])
    code, out, err = _query(index)
    assert code == 0, err
    assert out.splitlines()[0].endswith("red.jpg")
    repaired = json.loads(manifest.read_text())
    assert (repaired["model"]["spec"], repaired["model"]["dim"]) == ("fake", 32)


def test_an_unreadable_manifest_without_a_database_says_what_to_do(tmp_path: Path) -> None:
    folder = tmp_path / "index"
    folder.mkdir()
    (folder / "manifest.json").write_text("{not json")
    code, _, err = _query(folder)
    assert code == 1 and "delete the folder and index again" in err
    assert "Traceback" not in err


def test_a_faiss_file_of_the_wrong_size_is_rebuilt(index: Path) -> None:
    faiss_file = _faiss_file(index)
    data = faiss_file.read_bytes()
    faiss_file.write_bytes(data[: len(data) // 2])  # a copy cut short
    code, out, err = _query(index)
    assert code == 0, err
    assert out.splitlines()[0].endswith("red.jpg")
    again = runner.invoke(app, ["index", str(index.parent / "photos"), "--index-dir", str(index),
                                "--json"])
    assert again.exit_code == 0, again.stderr
    rewritten = _faiss_file(index)  # the writer wrote a whole one again
    assert len(rewritten.read_bytes()) == len(data) and not faiss_file.exists()


def test_sqlite_refusing_write_ahead_logging_is_an_error(tmp_path: Path) -> None:
    # SQLite's "unix-none" file system layer has no shared memory, so WAL is refused
    url = f"sqlite:///file:{tmp_path / 'meta.sqlite'}?vfs=unix-none&uri=true"
    with pytest.raises(StorageError, match="write-ahead logging"):
        MetadataStore(url, dim=32)


def _tombstones(index: Path) -> int:
    with sqlite3.connect(index / "meta.sqlite") as db:
        return int(db.execute("select count(*) from tombstones").fetchone()[0])


def test_tombstones_are_pruned_once_the_faiss_files_reflect_them(
    tmp_path: Path, colour_tree: Path
) -> None:
    with Engine.open(tmp_path / "index", model="fake") as eng, \
            Engine.open(tmp_path / "index", create=False) as reader:
        eng.index([colour_tree])
        eng.add_texts(["a red square", "a blue sky"])
        assert reader.search(text="blue", k=1)[0].path.endswith("blue sky.jpg")  # old copy
        assert eng.remove([colour_tree / "holiday"]) == 2
        eng.clear_texts()
        assert _tombstones(tmp_path / "index") == 0  # both FAISS files reflect the deletions
        # a reader holding a copy from before the pruning still never returns a deleted id
        names = {Path(h.path).name for h in reader.search(text="blue", k=10)}
        assert "blue sky.jpg" not in names and len(names) == 4
        assert reader.search(image=colour_tree / "red.jpg", target="texts") == []
    make_image(colour_tree / "new.png", "pink")
    (colour_tree / "green.png").unlink()
    with Engine.open(tmp_path / "index", create=False) as eng:
        eng.index([colour_tree])
        assert _tombstones(tmp_path / "index") == 0
        assert eng.search(text="pink", k=1)[0].path.endswith("new.png")
