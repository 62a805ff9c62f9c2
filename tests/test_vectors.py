"""The FAISS wrapper: exact and approximate indexes, read-only overlays, calibrated recall."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

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


def _recall(found: np.ndarray, truth: list[set[int]]) -> float:
    return float(np.mean([len(t & set(f.tolist())) / max(1, min(10, len(t)))
                          for t, f in zip(truth, found, strict=True)]))


def _ivf_and_mapped_copy(folder: Path, ids: np.ndarray, vecs: np.ndarray
                         ) -> tuple[VectorIndex, VectorIndex]:
    """An IVF index of ``vecs`` built in memory, and the same index saved to ``folder`` and
    memory-mapped read-only, as a query process opens it."""
    built = VectorIndex.build(32, ids, vecs, exact_limit=1000)
    built.save(folder / "ivf.faiss")
    mapped = VectorIndex.load(folder / "ivf.faiss", 32, writable=False, kind=built.kind,
                              tuning=built.tuning)
    return built, mapped


def test_filtered_ivf_search_is_the_top_k_among_the_matches(tmp_path: Path) -> None:
    vecs = clustered(8000, clusters=60)
    ids = np.arange(8000) * 2 + 1
    _, index = _ivf_and_mapped_copy(tmp_path, ids, vecs)
    q = clustered(60, clusters=60, seed=3)
    rng = np.random.default_rng(0)
    # few matches (fewer than the cells' worth the rule wants): every cell holding one is
    # visited, so the answer is exact, whatever the query
    few = np.sort(rng.choice(ids, 40, replace=False))
    pick = np.isin(ids, few)
    _, found = index.search(q, 10, allowed=few)
    assert [set(r.tolist()) for r in found] == exact_top(vecs[pick], ids[pick], q, 10)
    # a filter unrelated to content, and one that follows it (the points nearest one centre,
    # as a folder of similar photos is): the matches' own top 10 either way
    uniform = np.sort(rng.choice(ids, 800, replace=False))
    near_one = ids[np.argsort(-(vecs @ vecs[0]))[:600]]
    for allowed in (uniform, np.sort(near_one)):
        pick = np.isin(ids, allowed)
        _, found = index.search(q, 10, allowed=allowed)
        assert set(found.ravel().tolist()) - {-1} <= set(allowed.tolist())
        assert _recall(found, exact_top(vecs[pick], ids[pick], q, 10)) >= 0.95
    # most ids match: the unmatched ones (each query's own nearest 5) never come back, and a
    # filter leaving out just the region near the query still finds the matches' own top 10
    for allowed in (np.setdiff1d(ids, [ids[i] for row in np.argsort(-(q @ vecs.T), axis=1)
                                       for i in row[:5]]),
                    np.setdiff1d(ids, ids[np.argsort(-(vecs @ q[0]))[:3500]])):
        pick = np.isin(ids, allowed)
        _, found = index.search(q, 10, allowed=allowed)
        assert set(found.ravel().tolist()) - {-1} <= set(allowed.tolist())
        assert _recall(found, exact_top(vecs[pick], ids[pick], q, 10)) >= 0.95
    # ids the filter names but the index lacks are no trouble; an empty match set is empty
    _, found = index.search(q[:1], 10, allowed=np.array([10**7, 3, 5]))
    assert set(found[0].tolist()) - {-1} == {3, 5}
    assert (index.search(q[:1], 5, allowed=np.zeros(0, np.int64))[1] == -1).all()


def test_filtered_search_follows_changes_to_the_index(tmp_path: Path) -> None:
    vecs = clustered(3000)
    ids = np.arange(3000)
    writable, ro = _ivf_and_mapped_copy(tmp_path, ids, vecs)
    allowed = np.arange(0, 3000, 7)
    for index in (writable, ro):
        index.search(vecs[:1], 10, allowed=allowed)  # builds what filtered search keeps
        index.remove(np.array([0, 7]))                # 0 and 7 match: they must not return
        index.add(np.array([5000]), vecs[7][None])    # a new matching copy of vector 7
    with_new = np.append(allowed, 5000)
    for index in (writable, ro):
        _, found = index.search(vecs[[0, 7]], 3, allowed=with_new)
        assert 0 not in found and 7 not in found
        assert found[1][0] == 5000


def test_cell_counts_agree_whichever_way_they_are_taken() -> None:
    import faiss

    from vlmsearch.store.filtered_ivf import CellMap

    vecs = clustered(3000)
    ids = np.arange(3000) * 5 + 2
    index = VectorIndex.build(32, ids, vecs, exact_limit=1000)
    cell_map = CellMap(faiss.downcast_index(index._base))
    matches = np.random.default_rng(2).choice(ids, 700, replace=False)
    member = np.zeros(ids.max() + 1, dtype=bool)
    member[matches] = True
    every = cell_map.counts(matches)
    assert every.sum() == 700
    some = np.random.default_rng(3).permutation(cell_map.nlist)[:40]
    np.testing.assert_array_equal(cell_map.counts_in(some, member), every[some])
    assert (cell_map.cells_of(np.array([1, 10**9])) == -1).all()


def test_scoring_matches_from_their_codes_equals_scanning_their_cells(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A selective filter's matches are scored from their codes read in place; that must give
    what FAISS's scan of their cells gives, in memory and memory-mapped alike."""
    from vlmsearch.store import filtered_ivf

    vecs = clustered(8000, clusters=60)
    ids = np.arange(8000) * 3 + 2
    built, mapped = _ivf_and_mapped_copy(tmp_path, ids, vecs)
    q = clustered(30, clusters=60, seed=4)
    rng = np.random.default_rng(1)
    filters = [np.sort(rng.choice(ids, 40, replace=False)),
               np.sort(rng.choice(ids, 150, replace=False)),
               np.sort(ids[np.argsort(-(vecs @ vecs[3]))[:120]])]
    for index in (built, mapped):
        for allowed in filters:
            answers = []
            for share in (0.0, 2.0):  # never / always from the codes
                monkeypatch.setattr(filtered_ivf, "DIRECT_BELOW", share)
                answers.append(index.search(q, 10, allowed=allowed))
            (scan_scores, scan_ids), (code_scores, code_ids) = answers
            np.testing.assert_array_equal(code_ids, scan_ids)
            np.testing.assert_allclose(code_scores, scan_scores, atol=1e-5)
            assert set(code_ids.ravel().tolist()) - {-1} <= set(allowed.tolist())
        cell_map = index._cells
        assert cell_map is not None and cell_map.codes is not None  # the codes path ran
