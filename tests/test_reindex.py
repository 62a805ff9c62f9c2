"""``--reindex``: keeps the added texts (re-embedded with the new model), re-embeds every file
even with the same model, is crash-safe (a kill leaves the old index or a resumable new one,
never vectors of two models), and long-running readers follow it."""

from __future__ import annotations

import json
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from fastapi.testclient import TestClient
from PIL import Image
from typer.testing import CliRunner

from tests.imagegen import make_image
from vlmsearch import Engine
from vlmsearch.cli import app
from vlmsearch.encoders.fake import COLOURS
from vlmsearch.store.records import ModelRecord
from vlmsearch.web import create_app

runner = CliRunner()


def _tree(root: Path, n: int) -> list[Path]:
    names = sorted(COLOURS)
    return [make_image(root / f"{i:02d}-{names[i % len(names)]}.png", names[i % len(names)],
                       size=(24 + i, 24)) for i in range(n)]  # all distinct contents


def _texts(n: int) -> list[str]:
    names = sorted(COLOURS)
    return [f"a {names[i % len(names)]} thing, number {i}" for i in range(n)]


def test_reindex_to_another_model_keeps_and_reembeds_the_texts(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    paths = _tree(root, 30)
    index = tmp_path / "index"
    assert runner.invoke(app, ["index", str(root), "--model", "fake", "--index-dir",
                               str(index)]).exit_code == 0
    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(_texts(40)) + "\n")
    assert runner.invoke(app, ["add-texts", str(texts), "--index-dir", str(index)]).exit_code == 0
    done = runner.invoke(app, ["index", str(root), "--model", "fake:48", "--reindex",
                               "--index-dir", str(index), "--json"])
    assert done.exit_code == 0, done.stderr
    report = json.loads(done.stdout)
    assert (report["encoded"], report["added"] + report["updated"]) == (30, 30)
    with Engine.open(index, create=False) as eng:
        info = eng.info()
        assert (info.model, info.dim, info.texts, info.images, info.pending) == (
            "fake:48", 48, 40, 30, 0)
        hits = eng.search(image=paths[3], target="texts", k=3)
        colour = paths[3].stem.split("-", 1)[1]
        assert all(colour in h.text for h in hits), [h.text for h in hits]
    db = sqlite3.connect(index / "meta.sqlite")
    sizes = {n for (n,) in db.execute("select length(vec) from texts")}
    assert sizes == {48 * 4}  # every text vector is the new model's


def test_reindex_with_the_same_model_reencodes_every_file(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _tree(root, 30)
    index = tmp_path / "index"
    runner.invoke(app, ["index", str(root), "--model", "fake", "--index-dir", str(index)])
    for extra in ([], ["--model", "fake"]):
        done = runner.invoke(app, ["index", str(root), "--reindex", "--index-dir", str(index),
                                   "--json", *extra])
        assert done.exit_code == 0, done.stderr
        report = json.loads(done.stdout)
        assert (report["encoded"], report["unchanged"]) == (30, 0), extra


def test_files_outside_the_reindexed_folders_wait_as_pending(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    _tree(a, 4)
    _tree(b, 3)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([a, b])
    with Engine.open(tmp_path / "index", model="fake:40", reindex=True) as eng:
        eng.index([a])
        info = eng.info()
        assert (info.images, info.pending) == (4, 3)  # b's files are kept, not forgotten
        assert all(Path(h.path).parent == a for h in eng.search(text="red", k=10))
        eng.index([b])
        assert (eng.info().images, eng.info().pending) == (7, 0)


def _ok_files(index: Path, model: str) -> int:
    """Files with a vector of ``model`` committed so far (0 while the database says another)."""
    try:
        with sqlite3.connect(f"file:{index / 'meta.sqlite'}?mode=ro", uri=True) as db:
            meta = dict(db.execute("select key, value from meta").fetchall())
            if meta.get("model_spec") != model:
                return 0
            return int(db.execute("select count(*) from files where status='ok'").fetchone()[0])
    except sqlite3.Error:
        return 0


def _model_and_vector_sizes(index: Path) -> tuple[str, set[int], set[int]]:
    with sqlite3.connect(f"file:{index / 'meta.sqlite'}?mode=ro", uri=True) as db:
        model = dict(db.execute("select key, value from meta").fetchall()).get("model_spec", "")
        images = {n for (n,) in db.execute("select length(vec) from vectors")}
        texts = {n for (n,) in db.execute("select length(vec) from texts")}
    return model, images, texts


def test_a_kill_during_a_reindex_never_mixes_two_models(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(3)
    for i in range(240):  # noise: slow enough to decode that kills land mid-run
        arr = (rng.random((160, 200, 3)) * 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{i:03d}.png", compress_level=1)
    index = tmp_path / "index"
    base = [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index)]
    assert subprocess.run([*base, "--model", "fake"], capture_output=True).returncode == 0
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(_texts(25)) + "\n")
    subprocess.run([sys.executable, "-m", "vlmsearch.cli", "add-texts", str(texts),
                    "--index-dir", str(index)], check=True, capture_output=True)
    seen: list[tuple[str, int, bool]] = []
    chance = random.Random(7)
    for n in range(6):
        # always a real switch: to the other model than the one the database names now
        current = _model_and_vector_sizes(index)[0]
        wanted = "fake" if current == "fake:48" else "fake:48"
        proc = subprocess.Popen([*base, "--model", wanted, "--reindex", "--checkpoint", "10"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if n % 2:  # at a random moment: start-up, the switch, the run
            time.sleep(chance.uniform(0.2, 2.5))
        else:  # once the new model's vectors are visibly arriving (machines differ)
            target = chance.randint(1, 200)
            deadline = time.time() + 60
            while (_ok_files(index, wanted) < target and proc.poll() is None
                   and time.time() < deadline):
                time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        model, images, text_sizes = _model_and_vector_sizes(index)
        dim = 48 if model == "fake:48" else 32
        assert model in ("fake", "fake:48"), model
        assert images <= {dim * 4} and text_sizes == {dim * 4}, (model, images, text_sizes)
        with Engine.open(index, create=False) as eng:  # opens as the database says
            info = eng.info()
            assert (info.model, info.dim, info.texts) == (model, dim, 25)
            assert info.images + info.pending == 240
            seen.append((model, info.images, model == wanted and n % 2 == 0))
            if info.images:
                assert eng.search(text="red", k=3)
    # the kills aimed at visible progress caught the new model part-way
    assert sum(1 for _, done, aimed in seen if aimed and 0 < done < 240) >= 2, seen
    # resumable: a plain run finishes the new model's index
    finish = subprocess.run([*base, "--json"], capture_output=True, text=True)
    assert finish.returncode == 0, finish.stderr
    with Engine.open(index, create=False) as eng:
        info = eng.info()
        assert (info.model, info.images, info.pending, info.texts) == (seen[-1][0], 240, 0, 25)
    print(json.dumps({"after_each_kill": seen}))


def test_a_switch_cut_short_before_the_manifest_follows_the_database(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _tree(root, 6)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([root])
        eng.add_texts(["a red square"])
        # what a kill right after the switch's transaction leaves: the database says fake:40,
        # the manifest and the FAISS files still say fake
        store = eng._handle.store
        store.switch_model(ModelRecord("fake:40", "fake-colours-v1-d40", 40),
                           {i: np.ones(40, np.float32) / np.sqrt(40)
                            for i, _ in store.texts_for_reembedding()})
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "fake"
    with Engine.open(tmp_path / "index", create=False) as eng:
        assert (eng.info().model, eng.info().dim, eng.info().pending) == ("fake:40", 40, 6)
        assert eng.search(text="blue", k=5) == []  # nothing of the old model is searched
        eng.index([root])
        assert eng.search(text="blue", k=1)[0].path.endswith("blue.png")
    manifest = json.loads((tmp_path / "index" / "manifest.json").read_text())
    assert manifest["model"]["spec"] == "fake:40"


def test_a_long_running_reader_follows_a_reindex(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    _tree(root, 12)
    with Engine.open(tmp_path / "index", model="fake") as eng:
        eng.index([root])
    with Engine.open(tmp_path / "index", create=False) as reader:
        app_ = create_app(reader)
        client = TestClient(app_)
        before = client.get("/api/search", params={"q": "blue", "k": 1}).json()
        assert before["results"][0]["path"].endswith("blue.png")
        with Engine.open(tmp_path / "index", model="fake:24", reindex=True) as writer:
            writer.index([root])
        # the server outlived the reindex: its queries use the new model, not the old one
        after = client.get("/api/search", params={"q": "blue", "k": 1})
        assert after.status_code == 200, after.text
        assert after.json()["results"][0]["path"].endswith("blue.png")
        assert client.get("/api/info").json()["model"] == "fake:24"
        hits = reader.search(text="green", k=2)
        assert hits[0].path.endswith("green.png")
