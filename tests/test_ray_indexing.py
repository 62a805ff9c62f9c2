"""``vlmsearch index --engine ray`` on a real two-node Ray cluster on this machine (a head and a
worker node, one CPU each, started with ``ray start``): the result equals the local path's,
incremental updates work, a killed worker is retried, the IVF index is built from shards."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.imagegen import make_image
from tests.test_crash_safety import _noise_tree
from tests.test_postgres import check_store_invariants
from vlmsearch import Engine, Settings
from vlmsearch.store.vectors import VectorIndex, fill_shard, train_ivf

RAY_BIN = Path(sys.executable).with_name("ray")
# A loopback test cluster without token authentication (see docs/scale.md for real ones).
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_DISABLE_USAGE_STATS": "1",
           "RAY_USAGE_STATS_ENABLED": "0"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster_pids(temp_dir: str) -> set[int]:
    """Every process of our cluster: the daemons (their command lines name our temp dir) and
    their descendants (the workers)."""
    procs: dict[int, tuple[int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        procs[int(entry.name)] = (ppid, cmd)
    ours = {pid for pid, (_, cmd) in procs.items() if temp_dir in cmd}
    grew = True
    while grew:
        kids = {pid for pid, (ppid, _) in procs.items() if ppid in ours and pid not in ours}
        ours |= kids
        grew = bool(kids)
    return ours


class RayCluster:
    def __init__(self) -> None:
        self.temp_dir = tempfile.mkdtemp(prefix="vlmray")
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**os.environ, **RAY_ENV}

    def start(self) -> None:
        common = ["--num-cpus=1", "--object-store-memory=200000000",
                  "--node-ip-address=127.0.0.1", "--disable-usage-stats"]
        subprocess.run([str(RAY_BIN), "start", "--head", f"--port={self.port}",
                        "--include-dashboard=false", f"--temp-dir={self.temp_dir}", *common],
                       check=True, capture_output=True, env=self.env, timeout=180)
        subprocess.run([str(RAY_BIN), "start", f"--address={self.address}", *common],
                       check=True, capture_output=True, env=self.env, timeout=180)

    def actor_pids(self) -> list[int]:
        found = []
        for pid in _cluster_pids(self.temp_dir):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith("ray::") and "BlockEncoder" in cmd:
                found.append(pid)
        return found

    def stop(self) -> None:
        """Kill exactly the processes of this cluster, by pid (``ray stop`` would stop every
        Ray on the machine)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            pids = _cluster_pids(self.temp_dir)
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(1.0 if pids else 0)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RayCluster]:
    pytest.importorskip("ray", reason="Ray is not installed: pip install 'vlmsearch[scale]'")
    if not RAY_BIN.exists():
        pytest.skip(f"the ray command is not at {RAY_BIN}")
    c = RayCluster()
    try:
        c.start()
        yield c
    finally:
        c.stop()


@pytest.fixture
def ray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in RAY_ENV.items():
        monkeypatch.setenv(key, value)


def _index(root: Path, index: Path, *extra: str, env: dict[str, str] | None = None,
           model: str = "fake") -> dict[str, object]:
    cmd = [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index),
           "--model", model, "--json", *extra]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                          env={**os.environ, **RAY_ENV, **(env or {})})
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout)  # type: ignore[no-any-return]


def _snapshot(index: Path) -> dict[str, tuple[object, ...]]:
    """Per path: status, error, digest, size in pixels and the vector."""
    out: dict[str, tuple[object, ...]] = {}
    with Engine.open(index, create=False) as eng, eng._handle.store.read() as conn:
        states = eng._handle.store.file_states()
        recs = eng._handle.store.records([s.id for s in states.values()], conn)
        vecs = eng._handle.store.image_vectors(list(recs), conn)
        for rec in recs.values():
            out[rec.path] = (rec.status, rec.error, rec.digest, rec.width, rec.height,
                             vecs.get(rec.id))
    return out


def _assert_same(a: dict[str, tuple[object, ...]], b: dict[str, tuple[object, ...]]) -> None:
    assert sorted(a) == sorted(b)
    for path, row in a.items():
        other = b[path]
        assert row[:5] == other[:5], path
        if row[5] is None:
            assert other[5] is None, path
        else:
            np.testing.assert_allclose(row[5], other[5], atol=1e-5, err_msg=path)  # type: ignore[arg-type]


def _bad_files(root: Path) -> None:
    broken = root / "bad" / "truncated.jpg"
    make_image(broken, "white")
    broken.write_bytes(broken.read_bytes()[:200])
    (root / "bad" / "notes.jpg").write_text("not an image\n")


# --- no cluster needed ---------------------------------------------------------------------------
def test_ivf_from_shards_equals_the_single_build() -> None:
    rng = np.random.default_rng(0)
    vecs = rng.normal(size=(3000, 32)).astype(np.float32)
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    ids = np.arange(10, 3010, dtype=np.int64)
    single = VectorIndex.build(32, ids, vecs, exact_limit=1000)
    trained = train_ivf(vecs)
    shards = [fill_shard(trained, ids[a:a + 700], vecs[a:a + 700]) for a in range(0, 3000, 700)]
    merged = VectorIndex.from_shards(32, trained, shards, ids, vecs)
    assert merged.kind == single.kind and merged.kind.startswith("IVF")
    assert merged.tuning == single.tuning and merged.tuning.recall_at_10 is not None
    np.testing.assert_array_equal(np.sort(merged.ids()), ids)
    s1, i1 = single.search(vecs[:50], 10)
    s2, i2 = merged.search(vecs[:50], 10)
    np.testing.assert_allclose(s1, s2, atol=1e-6)
    assert (i1[:, 0] == i2[:, 0]).all()


def test_local_runs_never_import_ray(tmp_path: Path, colour_tree: Path) -> None:
    code = ("import sys; from vlmsearch.cli import main; sys.argv = ['vlmsearch', 'index', "
            f"{str(colour_tree)!r}, '--index-dir', {str(tmp_path / 'i')!r}, '--model', 'fake'];"
            "\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
            "assert 'ray' not in sys.modules, 'ray was imported'\n"
            "assert 'vlmsearch.distributed.indexer' not in sys.modules")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ray_options_need_engine_ray(tmp_path: Path, colour_tree: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "index", str(colour_tree),
                           "--index-dir", str(tmp_path / "i"), "--model", "fake",
                           "--ray-workers", "2"], capture_output=True, text=True)
    assert done.returncode == 2 and "need --engine ray" in done.stderr


# --- on the cluster ------------------------------------------------------------------------------
@pytest.mark.slow
def test_ray_index_equals_local_and_updates_incrementally(
    tmp_path: Path, cluster: RayCluster
) -> None:
    root = tmp_path / "photos"
    paths = _noise_tree(root, 300, seed=11)
    shutil.copy(paths[0], root / "duplicate of 0.png")
    _bad_files(root)
    ray_args = ("--engine", "ray", "--ray-address", cluster.address, "--ray-workers", "2",
                "--checkpoint", "50")
    local = _index(root, tmp_path / "local")
    on_ray = _index(root, tmp_path / "ray", *ray_args)
    # not "reused": the local indexer counts a duplicate inside one batch as neither encoded
    # nor reused (its first copy is encoded); the Ray path counts it as reused
    for key in ("added", "updated", "unchanged", "removed", "skipped", "encoded"):
        assert local[key] == on_ray[key], key
    assert on_ray["added"] == 301 and on_ray["skipped"] == 2 and on_ray["reused"] == 1
    assert set(on_ray) == set(local)
    _assert_same(_snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray"))
    check_store_invariants(tmp_path / "ray", 301)

    # queries through the CLI and the library open it unchanged and agree with the local index
    for target in paths[5:300:60]:
        with Engine.open(tmp_path / "local", create=False) as a, \
                Engine.open(tmp_path / "ray", create=False) as b:
            top_a = [h.path for h in a.search(image=target.read_bytes(), k=5)]
            top_b = [h.path for h in b.search(image=target.read_bytes(), k=5)]
            assert top_a == top_b and top_a[0] == str(target)
    query = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "query", "red", "--index-dir",
                            str(tmp_path / "ray"), "--json"], capture_output=True, text=True)
    assert query.returncode == 0 and len(json.loads(query.stdout)) == 10

    # incremental: add, change, delete, move; both paths report the same
    make_image(root / "new" / "pink.png", "pink")
    make_image(paths[1], "black")
    st = paths[1].stat()
    os.utime(paths[1], ns=(st.st_atime_ns, st.st_mtime_ns + 5_000_000_000))
    paths[2].unlink()
    paths[3].rename(root / "moved.png")
    local2 = _index(root, tmp_path / "local")
    ray2 = _index(root, tmp_path / "ray", *ray_args)
    for key in ("added", "updated", "unchanged", "removed", "skipped", "reused", "encoded"):
        assert local2[key] == ray2[key], key
    assert (ray2["added"], ray2["updated"], ray2["removed"], ray2["encoded"]) == (2, 1, 2, 2)
    _assert_same(_snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray"))
    check_store_invariants(tmp_path / "ray", 301)


@pytest.mark.slow
def test_killed_worker_is_retried_and_the_index_is_complete(
    tmp_path: Path, cluster: RayCluster
) -> None:
    root = tmp_path / "photos"
    _noise_tree(root, 400, seed=12)
    index = tmp_path / "index"
    cmd = [sys.executable, "-m", "vlmsearch.cli", "index", str(root), "--index-dir", str(index),
           "--model", "fake", "--json", "--engine", "ray", "--ray-address", cluster.address,
           "--ray-workers", "2", "--checkpoint", "20"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **RAY_ENV})
    killed: list[int] = []
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline and not killed:
        actors = cluster.actor_pids()
        if actors and _committed(index) >= 20:
            os.kill(actors[0], signal.SIGKILL)
            killed.append(actors[0])
        time.sleep(0.2)
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert killed, "no encoder actor was running to kill (the run finished too fast)"
    assert out.lstrip().startswith("{"), f"stdout is not the JSON summary: {out[:2000]!r}"
    report = json.loads(out)
    assert report["added"] == 400 and report["skipped"] == 0
    check_store_invariants(index, 400)
    assert killed[0] not in cluster.actor_pids()


def _committed(index: Path) -> int:
    import sqlite3

    db = index / "meta.sqlite"
    if not db.exists():
        return 0
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return int(conn.execute("select count(*) from files").fetchone()[0])
    except sqlite3.Error:
        return 0


@pytest.mark.slow
def test_large_collection_gets_a_sharded_ivf_index(
    tmp_path: Path, cluster: RayCluster, ray_env: None
) -> None:
    from vlmsearch.distributed import RayOptions

    rng = np.random.default_rng(0)
    root = tmp_path / "many"
    for i in range(300):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        make_image(root / f"{i:03d}.png", colour, size=(24, 24))
    settings = Settings(exact_search_limit=100)
    options = RayOptions(address=cluster.address, workers=2, block_size=32)
    with Engine.open(tmp_path / "ray", model="fake", settings=settings) as eng:
        eng.index([root], ray=options)
        state = eng.info()
        assert state.index_type.startswith("IVF") and state.recall_at_10 is not None
    with Engine.open(tmp_path / "local", model="fake", settings=settings) as eng:
        eng.index([root])
        local_state = eng.info()
    assert state.index_type == local_state.index_type
    manifest = json.loads((tmp_path / "ray" / "manifest.json").read_text())
    assert manifest["vectors"]["image"]["recall_at_10"] == state.recall_at_10
    with Engine.open(tmp_path / "ray", create=False, settings=settings) as a, \
            Engine.open(tmp_path / "local", create=False, settings=settings) as b:
        for q in ("red", "green", "blue"):
            assert a.search(text=q, k=1)[0].path == b.search(text=q, k=1)[0].path


@pytest.mark.slow
def test_real_open_clip_model_on_ray_matches_local(
    tmp_path: Path, cluster: RayCluster, tiny_clip_spec: str
) -> None:
    root = tmp_path / "photos"
    _noise_tree(root, 40, seed=13)
    _index(root, tmp_path / "local", model=tiny_clip_spec)
    report = _index(root, tmp_path / "ray", "--engine", "ray", "--ray-address",
                    cluster.address, "--ray-workers", "2", model=tiny_clip_spec)
    assert report["encoded"] == 40
    _assert_same(_snapshot(tmp_path / "local"), _snapshot(tmp_path / "ray"))


@pytest.mark.slow
def test_unreachable_cluster_says_which_address(tmp_path: Path, colour_tree: Path) -> None:
    pytest.importorskip("ray")
    address = f"127.0.0.1:{_free_port()}"
    done = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "index", str(colour_tree),
                           "--index-dir", str(tmp_path / "i"), "--model", "fake", "--engine",
                           "ray", "--ray-address", address], capture_output=True, text=True,
                          timeout=120, env={**os.environ, **RAY_ENV})
    assert done.returncode == 1
    assert f"could not connect to the Ray cluster at {address}" in done.stderr
    assert "Traceback" not in done.stderr
