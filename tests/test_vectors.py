"""The FAISS wrapper: exact and approximate indexes, read-only overlays, calibrated recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlmsearch.store.vectors import VectorIndex


def clustered(n: int, dim: int = 32, clusters: int = 40, seed: int = 0) -> np.ndarray:
    """Unit vectors around fixed random centres: closer to real embeddings than uniform noise.
    Different seeds draw new points around the same centres."""
    centres = np.random.default_rng(1234).standard_normal((clusters, dim))
    rng = np.random.default_rng(seed)
    x = centres[rng.integers(0, clusters, n)] + 0.6 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def exact_top(vecs: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> list[set[int]]:
    order = np.argsort(-(q @ vecs.T), axis=1)[:, :k]
    return [set(ids[row].tolist()) for row in order]


def test_small_collections_are_exact(tmp_path: Path) -> None:
    vecs = clustered(500)
    ids = np.arange(100, 600)
    index = VectorIndex.build(32, ids, vecs, exact_limit=1000)
    assert index.kind == "Flat"
    q = clustered(20, seed=1)
    _, found = index.search(q, 10)
    assert [set(r.tolist()) for r in found] == exact_top(vecs, ids, q, 10)


def test_large_collections_use_calibrated_ivf(tmp_path: Path) -> None:
    vecs = clustered(6000)
    ids = np.arange(6000) * 3 + 7
    index = VectorIndex.build(32, ids, vecs, exact_limit=1000)
    assert index.kind.startswith("IVF") and index.kind.endswith(",SQfp16")
    assert index.tuning.recall_at_10 is not None and index.tuning.recall_at_10 >= 0.95
    # held-out queries, not in the collection: new points and points between clusters
    q = clustered(200, seed=5)
    q = np.concatenate([q, (q[:100] + q[100:]) / np.linalg.norm(q[:100] + q[100:], axis=1,
                                                                 keepdims=True)])
    _, found = index.search(q, 10)
    truth = exact_top(vecs, ids, q, 10)
    recall = np.mean([len(t & set(f.tolist())) / 10 for t, f in zip(truth, found, strict=True)])
    assert recall >= 0.95
    index.save(tmp_path / "ivf.faiss")
    again = VectorIndex.load(tmp_path / "ivf.faiss", 32, writable=False, kind=index.kind,
                             tuning=index.tuning)
    np.testing.assert_array_equal(again.search(q, 10)[1], found)
    assert sorted(index.ids().tolist()) == sorted(ids.tolist())


def test_read_only_index_overlays_changes(tmp_path: Path) -> None:
    vecs = clustered(300)
    ids = np.arange(300)
    writable = VectorIndex.build(32, ids, vecs)
    writable.save(tmp_path / "flat.faiss")
    ro = VectorIndex.load(tmp_path / "flat.faiss", 32, writable=False)
    # change id 5 to a new vector, delete id 6, add id 1000
    new5, new1000 = clustered(2, seed=9)
    for index in (writable, ro):
        index.remove(np.array([5, 6]))
        index.add(np.array([5, 1000]), np.stack([new5, new1000]))
    for q in (new5, new1000, vecs[6], vecs[7]):
        w_scores, w_ids = writable.search(q[None], 5)
        r_scores, r_ids = ro.search(q[None], 5)
        np.testing.assert_array_equal(w_ids, r_ids)
        np.testing.assert_allclose(w_scores, r_scores, atol=1e-6)
    assert 6 not in ro.search(vecs[6][None], 300)[1][0]
    assert writable.count == 300 - 1 + 1


def test_empty_index_search_returns_nothing() -> None:
    index = VectorIndex(8)
    _, ids = index.search(np.ones((1, 8), np.float32) / np.sqrt(8), 5)
    assert (ids == -1).all()
