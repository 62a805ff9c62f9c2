"""Searching an IVF index among a filter's matches only, visiting only cells that hold some.

An unfiltered IVF search visits the ``nprobe`` cells nearest the query and scores every vector
in them. Among a filter's matches, the nearest of them lie farther out than the nearest of all,
so more cells must be visited; but a cell holding no match needs no visit at all. So, per query:

1. count the matching ids in each cell (:class:`CellMap`: which cell holds each id, built once
   per index from its inverted lists, 4 bytes per id);
2. take the cells holding matches, nearest the query first, until they hold
   ``margin × nprobe × (vectors per cell)`` matches: the number of vectors an unfiltered search
   scores, times the margin (``WIDEN_MARGIN`` in :mod:`vlmsearch.store.vectors`);
3. scan just those cells with FAISS, which tests each stored id against a bitmap of the matches
   and scores only those in it.

A filter with fewer matches than that target gets every cell holding one visited, so its
answer is exact (the true top-k among the matches). A filter unrelated to content visits about
``margin × nprobe / fraction`` cells (all of them for a selective filter, which is the exact
case); one that follows content (a folder of similar photos) visits only the few cells its
matches sit in. What the scan costs is the stored ids tested (about 7 ns each here, with the
memory-mapped lists' prefetch threads off; see ``VectorIndex.load``) and the matches scored.
"""

from __future__ import annotations

import math
from typing import Any

import faiss
import numpy as np

DENSE_SLACK = 4
"""Ids are the metadata store's primary keys, so nearly dense: a cell per id up to the largest
id costs 4 bytes each. Beyond ``DENSE_SLACK × count + 2**20`` ids (a collection that lost most
of its rows) the map is kept sorted and searched instead."""
COUNT_ALL_BELOW = 0.05
"""Up to this share of the collection, the matches of every cell are counted from the matches
(cost: their number); above it, only the cells nearest the query are counted, from their ids
(cost: the ids in those cells, which the scan then tests anyway)."""


class CellMap:
    """Which inverted list (cell) of an IVF index holds each id, and the cells' centroids.
    Read from the index once, so it goes stale when the index changes: the owner drops it on
    add or remove."""

    def __init__(self, ivf: Any) -> None:
        invlists = ivf.invlists
        parts: list[np.ndarray] = []
        sizes = np.zeros(ivf.nlist, dtype=np.int64)
        for cell in range(ivf.nlist):
            size = invlists.list_size(cell)
            if size:
                sizes[cell] = size
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(cell), size))
        self.ids = np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)
        """Every id, cell by cell (cell ``c``'s are ``ids[starts[c]:starts[c + 1]]``)."""
        self.starts = np.concatenate([[0], np.cumsum(sizes)])
        self.sizes = sizes
        self.centroids = np.ascontiguousarray(
            ivf.quantizer.reconstruct_n(0, ivf.nlist), dtype=np.float32)
        cells = np.repeat(np.arange(ivf.nlist, dtype=np.int32), sizes)
        self.nlist = int(ivf.nlist)
        self.count = len(self.ids)
        top = int(self.ids.max()) + 1 if len(self.ids) else 0
        self._dense: np.ndarray | None = None
        if top <= DENSE_SLACK * len(self.ids) + 2**20:
            self._dense = np.full(top, -1, dtype=np.int32)
            self._dense[self.ids] = cells
        else:
            order = np.argsort(self.ids)
            self._sorted_ids, self._sorted_cells = self.ids[order], cells[order]

    def centroid_scores(self, query: np.ndarray) -> np.ndarray:
        """Each cell's centroid · ``query``, by FAISS's single-threaded SIMD kernel: NumPy's
        BLAS would start threads for it, which on a busy 2-core machine turned 0.2 ms into 10
        (and FAISS's by-index variant took 8 ms for 1,000 cells of 512-d, the whole table
        0.9 ms)."""
        query = np.ascontiguousarray(query, dtype=np.float32)
        out = np.empty(self.nlist, dtype=np.float32)
        faiss.fvec_inner_products_ny(  # type: ignore[attr-defined]
            faiss.swig_ptr(out), faiss.swig_ptr(query), faiss.swig_ptr(self.centroids),
            len(query), self.nlist)
        return out

    def cells_of(self, ids: np.ndarray) -> np.ndarray:
        """The cell of each id, -1 for ids this index does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._dense is not None:
            inside = (ids >= 0) & (ids < len(self._dense))
            out = np.full(len(ids), -1, dtype=np.int32)
            out[inside] = self._dense[ids[inside]]
            return out
        if not len(self._sorted_ids):
            return np.full(len(ids), -1, dtype=np.int32)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == ids, self._sorted_cells[pos], -1
                        ).astype(np.int32)

    def counts(self, ids: np.ndarray) -> np.ndarray:
        """How many of ``ids`` each cell holds."""
        cells = self.cells_of(ids)
        return np.bincount(cells[cells >= 0], minlength=self.nlist)

    def counts_in(self, cells: np.ndarray, member: np.ndarray) -> np.ndarray:
        """How many of the ids in each of ``cells`` are members (``member`` is a boolean array
        indexed by id)."""
        sizes = self.sizes[cells]
        total = int(sizes.sum())
        if total == 0:
            return np.zeros(len(cells), dtype=np.int64)
        ends = np.cumsum(sizes)
        # the positions of those cells' ids in ``self.ids``, cell after cell
        pos = np.arange(total) + np.repeat(self.starts[cells] - (ends - sizes), sizes)
        ids = self.ids[pos]
        hit = np.zeros(total, dtype=np.int64)
        inside = ids < len(member)
        hit[inside] = member[ids[inside]]
        out = np.zeros(len(cells), dtype=np.int64)
        nonempty = sizes > 0
        out[nonempty] = np.add.reduceat(hit, (ends - sizes)[nonempty])
        return out


def cells_to_visit(nearest: np.ndarray, dis: np.ndarray, counts: np.ndarray, target: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Of the cells in ``nearest`` order (with their scores ``dis``, and ``counts`` matches
    each, in that order), those holding matches, up to and including the one where the matches
    they hold reach ``target``."""
    held = counts > 0
    cells, dis, counts = nearest[held], dis[held], counts[held]
    take = int(np.searchsorted(np.cumsum(counts), target)) + 1
    return cells[:take], dis[:take]


def search_among(ivf: Any, cell_map: CellMap, queries: np.ndarray, k: int, matches: np.ndarray,
                 member: np.ndarray, selector: Any, *, nprobe: int, margin: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (scores, ids) per query row among ``matches`` (see the module docstring);
    ``member`` is a boolean array indexed by id that is True for them, ``selector`` a FAISS
    selector of exactly them, held by the caller."""
    target = margin * nprobe * cell_map.count / max(1, cell_map.nlist)
    fraction = len(matches) / max(1, cell_map.count)
    every = cell_map.counts(matches) if fraction <= COUNT_ALL_BELOW else None
    held = np.flatnonzero(every) if every is not None and every.sum() <= target else None
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, query in enumerate(np.ascontiguousarray(queries, dtype=np.float32)):
        if held is not None:  # every cell holding a match is visited: no order needed
            cells, dis = held, cell_map.centroid_scores(query)[held]
        else:
            cells, dis = _nearest_cells(cell_map, query, every, member, target, fraction)
        if not len(cells):
            continue
        params = faiss.SearchParametersIVF()
        params.nprobe = len(cells)
        params.sel = selector
        assign = np.ascontiguousarray(cells, dtype=np.int64)
        coarse = np.ascontiguousarray(dis, dtype=np.float32)
        found_scores = np.empty(k, dtype=np.float32)
        found_ids = np.empty(k, dtype=np.int64)
        # the C++ call: FAISS's Python wrapper of search_preassigned takes no parameters
        ivf.search_preassigned_c(1, faiss.swig_ptr(query), k, faiss.swig_ptr(assign),
                                 faiss.swig_ptr(coarse), faiss.swig_ptr(found_scores),
                                 faiss.swig_ptr(found_ids), False, params)
        out_scores[row], out_ids[row] = found_scores, found_ids
    out_scores[out_ids < 0] = -np.inf
    return out_scores, out_ids


def _nearest_cells(cell_map: CellMap, query: np.ndarray, every: np.ndarray | None,
                   member: np.ndarray, target: float, fraction: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The cells to visit for ``query``, nearest first, with their centroid scores: counted
    from ``every`` cell's matches when given, else only the nearest cells are counted (about
    ``target / (fraction × per cell)`` of them, more while they fall short)."""
    scores = cell_map.centroid_scores(query)
    nearest = np.argsort(-scores, kind="stable")
    if every is not None:
        counts = every[nearest]
    else:
        per_cell = cell_map.count / max(1, cell_map.nlist)
        reach = min(cell_map.nlist, math.ceil(1.25 * target / max(fraction * per_cell, 1e-9)))
        counts = cell_map.counts_in(nearest[:reach], member)
        while counts.sum() < target and reach < cell_map.nlist:
            more = nearest[reach:2 * reach]
            counts = np.concatenate([counts, cell_map.counts_in(more, member)])
            reach += len(more)
        nearest = nearest[:reach]
    return cells_to_visit(nearest, scores[nearest], counts, target)
