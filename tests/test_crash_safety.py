"""Crash safety and concurrency: SIGKILL at random moments, Ctrl-C, readers during a run, a
second writer, stale locks. The indexer runs as a real subprocess (`python -m vlmsearch.cli`)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlmsearch import Engine, IndexLockedError

pytestmark = pytest.mark.slow

N_IMAGES = 300
KILLS = 20


def _noise_tree(root: Path, n: int, seed: int = 0) -> list[Path]:
    """PNG noise over a per-image base colour: slow enough to decode that kills land mid-run."""
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        folder = root / f"d{i % 7}" / ("deep" if i % 3 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        base = rng.integers(0, 190, 3).astype(np.uint8)
        arr = (rng.random((192, 256, 3)) * 64).astype(np.uint8) + base
        path = folder / f"img {i:03d}.png"
        Image.fromarray(arr).save(path, compress_level=1)
        paths.append(path)
    return paths


def _index_cmd(root: Path, index: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index),
            "--model", "fake", "--json", *extra]


def _committed(index: Path) -> int:
    db = index / "meta.sqlite"
    if not db.exists():
        return 0
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        try:
            return int(conn.execute("select count(*) from files").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


def check_invariants(index: Path, expected_files: int) -> None:
    """Every file in the store has exactly one vector; every vector belongs to a file; the
    FAISS index holds exactly the store's ids."""
    db = index / "meta.sqlite"
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        files = conn.execute("select count(*), count(distinct path) from files "
                             "where status='ok'").fetchone()
        assert files == (expected_files, expected_files)
        orphans = conn.execute("select count(*) from files f left join vectors v "
                               "on f.digest = v.digest where f.status='ok' and v.digest is null"
                               ).fetchone()[0]
        unused = conn.execute("select count(*) from vectors v where not exists "
                              "(select 1 from files f where f.digest = v.digest)").fetchone()[0]
        assert (orphans, unused) == (0, 0)
    with Engine.open(index, create=False) as eng, eng._handle.store.read() as conn:
        vectors, _ = eng._handle.vectors.current("image", conn, writable=True, reload=True)
        np.testing.assert_array_equal(np.sort(vectors.ids()),
                                      np.sort(eng._handle.store.live_ids("image", conn)))


def test_sigkill_at_random_points_loses_nothing(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    paths = _noise_tree(root, N_IMAGES)
    index = tmp_path / "index"
    rng = random.Random(1234)
    committed = [0]
    mid_run_kills = 0
    for n in range(KILLS):
        proc = subprocess.Popen(_index_cmd(root, index, "--checkpoint", "10"),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if n % 2:  # at a random moment: start-up, decoding, committing, saving, exiting
            time.sleep(rng.uniform(0.1, 3.0))
        else:  # once the run is visibly under way, plus a random delay (machines differ)
            target = committed[-1] + rng.randint(1, N_IMAGES // 3)
            deadline = time.time() + 60
            while (_committed(index) < min(target, N_IMAGES - 1) and proc.poll() is None
                   and time.time() < deadline):
                time.sleep(0.01)
            time.sleep(rng.uniform(0.0, 0.2))
        finished = proc.poll() is not None
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        now = _committed(index)
        assert now >= committed[-1], f"committed work was lost by a kill: {committed}, {now}"
        if not finished and 0 < now < N_IMAGES:
            mid_run_kills += 1
        committed.append(now)
        if now == N_IMAGES:  # finished: check, then start over so later kills land mid-run
            check_invariants(index, N_IMAGES)
            shutil.rmtree(index)
            committed.append(0)
    before_final = _committed(index)
    done = subprocess.run(_index_cmd(root, index), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["added"] + report["unchanged"] == N_IMAGES
    assert report["encoded"] + report["reused"] <= N_IMAGES - before_final + 10
    assert mid_run_kills >= 5, f"only {mid_run_kills} kills landed mid-run: {committed}"
    check_invariants(index, N_IMAGES)
    with Engine.open(index, create=False) as eng:
        query = paths[17]
        hits = eng.search(image=query.read_bytes(), k=1)
        assert hits[0].path == str(query) and hits[0].score > 0.999
    print(json.dumps({"kills": KILLS, "mid_run_kills": mid_run_kills,
                      "committed_after_each_kill": committed,
                      "final_run_encoded": report["encoded"], "images": N_IMAGES}))


def test_sigint_leaves_a_clean_resumable_index(tmp_path: Path) -> None:
    n = 5 * N_IMAGES  # enough work that Ctrl-C lands mid-run (300 took only 0.6 s here)
    root = tmp_path / "photos"
    _noise_tree(root, n, seed=3)
    index = tmp_path / "index"
    proc = subprocess.Popen(_index_cmd(root, index, "--checkpoint", "5000"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not (index / "meta.sqlite").exists() and time.time() < deadline:
        time.sleep(0.02)
    time.sleep(0.5)  # into the run, with nothing committed yet (checkpoint of 5000)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    if out.strip():
        pytest.skip("the run finished before Ctrl-C arrived (machine too fast)")
    assert proc.returncode == 130
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert lines == ["interrupted: finished work is saved; run the same command again to "
                     "continue"], err
    kept = _committed(index)
    assert kept > 0  # the partial checkpoint was committed, not thrown away
    done = subprocess.run(_index_cmd(root, index), capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert report["unchanged"] == kept and report["added"] == n - kept
    check_invariants(index, n)


def test_queries_during_an_index_run_never_fail(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    paths = _noise_tree(root, 200, seed=5)
    index = tmp_path / "index"
    first = subprocess.run(_index_cmd(root / "d0", index), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    proc = subprocess.Popen(_index_cmd(root, index, "--checkpoint", "5"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    queries = 0
    seen_counts = set()
    try:
        with Engine.open(index, create=False) as eng:
            while proc.poll() is None:
                target = paths[queries % len(paths)]
                hits = eng.search(image=target.read_bytes(), k=5)
                assert hits, "a query during indexing returned nothing"
                assert all(os.path.exists(h.path) for h in hits)
                assert [h.rank for h in hits] == list(range(1, len(hits) + 1))
                seen_counts.add(eng.info().images)
                queries += 1
    finally:
        proc.wait(timeout=300)
    assert proc.returncode == 0
    assert queries >= 5 and len(seen_counts) >= 2  # we really saw the index grow meanwhile
    check_invariants(index, 200)


def test_second_writer_gets_a_clear_error_and_stale_locks_are_taken_over(
    tmp_path: Path,
) -> None:
    root = tmp_path / "photos"
    _noise_tree(root, 40, seed=7)
    index = tmp_path / "index"
    first = subprocess.run(_index_cmd(root, index), capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    # another process holds the write lock (exactly what a running `vlmsearch index` does)
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from vlmsearch.store.layout import IndexLayout; "
         "lock = IndexLayout(sys.argv[1]).write_lock(); lock.__enter__(); "
         "print('held', flush=True); time.sleep(600)", str(index)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        second = subprocess.run(_index_cmd(root, index), capture_output=True, text=True)
        assert second.returncode == 1
        assert f"being updated by another process (pid {holder.pid})" in second.stderr
        assert "Traceback" not in second.stderr
        with pytest.raises(IndexLockedError, match=f"pid {holder.pid}"), \
                Engine.open(index, create=False) as eng:
            eng.remove([root / "d0"])
        # readers are not blocked by a writer
        with Engine.open(index, create=False) as eng:
            assert eng.info().images == 40
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    # the killed holder left its pid in the lock file, but the kernel released the lock itself
    assert (index / "write.lock").read_text().split()[0] == str(holder.pid)
    next(root.rglob("*.png")).unlink()
    again = subprocess.run(_index_cmd(root, index), capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout)["removed"] == 1
    check_invariants(index, 39)
