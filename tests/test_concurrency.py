"""Real processes at once: two `vlmsearch index` runs racing on one index (exactly one writes),
and a `vlmsearch serve` answering searches while an index run writes (exact and IVF indexes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.test_crash_safety import _noise_tree
from tests.test_web_api import serving

pytestmark = pytest.mark.slow

LOCK_MESSAGE = "is being updated by another process"


def _index_cmd(root: Path, index: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index),
            "--model", "fake", "--json", *extra]


@pytest.mark.parametrize("existing", [False, True], ids=["new-index", "existing-index"])
def test_two_index_runs_racing_exactly_one_writes(tmp_path: Path, existing: bool) -> None:
    root = tmp_path / "photos"
    _noise_tree(root, 300, seed=11)
    outcomes = []
    for attempt in range(3):  # until the two really overlap (a fast machine may serialise them)
        index = tmp_path / f"index-{attempt}"
        if existing:
            subprocess.run(_index_cmd(root / "d0", index), check=True, capture_output=True)
        procs = [subprocess.Popen(_index_cmd(root, index), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
        results = [(p.wait(timeout=300), *p.communicate()) for p in procs]
        codes = sorted(code for code, _, _ in results)
        outcomes.append(codes)
        if codes == [0, 0]:
            continue  # one finished before the other took the lock: no race this time
        assert codes == [0, 1], results
        (winner,) = [r for r in results if r[0] == 0]
        (loser,) = [r for r in results if r[0] == 1]
        assert LOCK_MESSAGE in loser[2] and "Traceback" not in loser[2], loser[2]
        assert loser[1] == ""  # it wrote nothing, not even a report
        report = json.loads(winner[1])
        assert report["added"] + report["unchanged"] == 300
        done = subprocess.run(_index_cmd(root, index), capture_output=True, text=True)
        assert json.loads(done.stdout)["unchanged"] == 300  # the index is whole
        return
    pytest.fail(f"the two runs never overlapped: {outcomes}")


def _hammer(url: str, stop: threading.Event, log: list[dict[str, object]]) -> None:
    queries = ["red", "green", "blue", "a dark picture", "pink"]
    n = 0
    while not stop.is_set():
        q = queries[n % len(queries)]
        n += 1
        try:
            with urllib.request.urlopen(f"{url}api/search?q={q.replace(' ', '+')}&k=10",
                                        timeout=30) as r:
                log.append({"status": r.status, "body": json.loads(r.read())})
        except Exception as exc:  # every failure is recorded, then asserted on
            log.append({"status": getattr(exc, "code", None), "error": repr(exc)})


def _check_answers(log: list[dict[str, object]]) -> int:
    failed = [entry for entry in log if entry["status"] != 200]
    assert not failed, failed[:3]
    for entry in log:
        body = entry["body"]
        assert isinstance(body, dict)
        results = body["results"]
        assert [h["rank"] for h in results] == list(range(1, len(results) + 1))
        assert len({h["id"] for h in results}) == len(results)
        assert all(os.path.exists(h["path"]) for h in results)
        scores = [h["score"] for h in results]
        assert scores == sorted(scores, reverse=True)
    return len(log)


def _colour_tree(root: Path, n: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        noise = (rng.random((48, 48, 3)) * 30).astype(np.uint8)
        arr = np.clip(np.array(colour, dtype=np.int16) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(arr).save(root / f"{i:04d}.png")


@pytest.mark.parametrize("kind", ["exact", "ivf"])
def test_serve_answers_every_search_while_an_index_run_writes(tmp_path: Path, kind: str) -> None:
    root = tmp_path / "photos"
    _colour_tree(root / "first", 60, seed=1)
    _colour_tree(root / "more", 400, seed=2)
    index = tmp_path / "index"
    limit = 100 if kind == "ivf" else 100_000
    writer = ("import sys; from vlmsearch import Engine, Settings\n"
              "with Engine.open(sys.argv[1], model='fake', settings=Settings("
              f"exact_search_limit={limit}, checkpoint_images=20)) as eng:\n"
              "    eng.index(sys.argv[2:])\n")
    subprocess.run([sys.executable, "-c", writer, str(index), str(root / "first")], check=True)
    log: list[dict[str, object]] = []
    stop = threading.Event()
    with serving(index) as url:
        threads = [threading.Thread(target=_hammer, args=(url, stop, log)) for _ in range(2)]
        try:
            for t in threads:
                t.start()
            time.sleep(0.5)
            run = subprocess.run([sys.executable, "-c", writer, str(index), str(root)],
                                 capture_output=True, text=True, timeout=600)
            assert run.returncode == 0, run.stderr
            time.sleep(0.5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
    manifest = json.loads((index / "manifest.json").read_text())
    index_type = manifest["vectors"]["image"]["index_type"]
    assert index_type.startswith("IVF") if kind == "ivf" else index_type == "Flat"
    answered = _check_answers(log)
    assert answered >= 20, answered
    grew = any("/more/" in h["path"] for e in log for h in e["body"]["results"])  # type: ignore[index]
    assert grew, "the server never saw the new images"
    print(json.dumps({"kind": kind, "searches_answered": answered, "index_type": index_type}))
