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

4. Except when the matches are a thin share of those cells' vectors (under ``DIRECT_BELOW``):
   then only their codes are gathered, straight from the inverted lists' memory (their
   positions are known from the cell map), and scored by FAISS's own scanner for that index
   type, so the ids in between are never read. At 1 % matching that cut the FAISS part of a
   query from about 4.4 ms to under 2 (1M vectors, 512-d half-precision codes).
"""

from __future__ import annotations

import ctypes
import functools
import math
from typing import Any

import faiss
import numpy as np

DENSE_SLACK = 4
"""Ids are the metadata store's primary keys, so nearly dense: a position per id up to the
largest id costs 4 bytes each. Beyond ``DENSE_SLACK × count + 2**20`` ids (a collection that
lost most of its rows) the map is kept sorted and searched instead."""
DIRECT_BELOW = 0.04
"""When the matches are fewer than this share of the vectors in the cells to visit, their codes
are gathered and scored (about 0.5 us each) instead of the cells being scanned (about 10 ns per
stored id plus 0.2 us per match)."""
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
        self.cell_at = np.repeat(np.arange(ivf.nlist, dtype=np.int32), sizes)
        """The cell of each position in ``ids``."""
        self.nlist = int(ivf.nlist)
        self.count = len(self.ids)
        top = int(self.ids.max()) + 1 if len(self.ids) else 0
        positions = np.arange(self.count, dtype=np.int32 if self.count < 2**31 else np.int64)
        self._dense: np.ndarray | None = None
        if top <= DENSE_SLACK * len(self.ids) + 2**20:
            self._dense = np.full(top, -1, dtype=positions.dtype)
            self._dense[self.ids] = positions
        else:
            order = np.argsort(self.ids)
            self._sorted_ids, self._sorted_pos = self.ids[order], positions[order]
        self.codes = CodeRows.of(ivf, self)
        """The stored codes by position, when they can be read in place (else None)."""

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

    def positions_of(self, ids: np.ndarray) -> np.ndarray:
        """The position in ``ids`` of each id, -1 for ids this index does not hold."""
        ids = np.asarray(ids, dtype=np.int64)
        if self._dense is not None:
            inside = (ids >= 0) & (ids < len(self._dense))
            out = np.full(len(ids), -1, dtype=np.int64)
            out[inside] = self._dense[ids[inside]]
            return out
        if not len(self._sorted_ids):
            return np.full(len(ids), -1, dtype=np.int64)
        pos = np.minimum(np.searchsorted(self._sorted_ids, ids), len(self._sorted_ids) - 1)
        return np.where(self._sorted_ids[pos] == ids, self._sorted_pos[pos], -1)

    def cells_of(self, ids: np.ndarray) -> np.ndarray:
        """The cell of each id, -1 for ids this index does not hold."""
        pos = self.positions_of(ids)
        return np.where(pos >= 0, self.cell_at[np.maximum(pos, 0)] if self.count else -1, -1
                        ).astype(np.int32)

    def counts(self, ids: np.ndarray) -> np.ndarray:
        """How many of ``ids`` each cell holds."""
        pos = self.positions_of(ids)
        return self.counts_at(pos[pos >= 0])

    def counts_at(self, positions: np.ndarray) -> np.ndarray:
        """How many of the ids at ``positions`` (in :attr:`ids`) each cell holds."""
        return np.bincount(self.cell_at[positions], minlength=self.nlist)

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


class CodeRows:
    """The codes an IVF index stores, one row per position of :attr:`CellMap.ids`, read in
    place: a NumPy view over the inverted lists' own memory (the memory-mapped file of a
    read-only index, or the in-memory lists), so gathering some rows reads only those.

    Only for inverted lists whose codes stay where they are while the index is unchanged (in
    memory, or memory-mapped; FAISS's other kinds may hand out temporary copies), and for index
    types whose scanner scores inner products, to which a residual code's cell score is added
    (:meth:`score`). The view is valid while the index is unchanged: the cell map that owns it
    is dropped on every add or remove."""

    def __init__(self, ivf: Any, offsets: np.ndarray, rows: np.ndarray) -> None:
        self._ivf = ivf  # keeps the lists (and so the memory viewed) alive
        self._offsets = offsets
        self._rows = rows
        self._by_residual = bool(getattr(ivf, "by_residual", False))

    @classmethod
    def of(cls, ivf: Any, cell_map: CellMap) -> CodeRows | None:
        lists = faiss.downcast_InvertedLists(ivf.invlists)
        kind = faiss.downcast_index(ivf)
        if (not isinstance(lists, (faiss.ArrayInvertedLists, faiss.OnDiskInvertedLists))
                or not isinstance(kind, (faiss.IndexIVFScalarQuantizer, faiss.IndexIVFFlat))
                or ivf.metric_type != faiss.METRIC_INNER_PRODUCT or not cell_map.count):
            return None
        code_size = int(ivf.code_size)
        filled = np.flatnonzero(cell_map.sizes)
        starts = np.zeros(ivf.nlist, dtype=np.int64)
        starts[filled] = [int(lists.get_codes(int(c))) for c in filled]  # SWIG pointer → address
        base = int(starts[filled].min())
        end = int((starts[filled] + cell_map.sizes[filled] * code_size).max())
        within = np.arange(cell_map.count, dtype=np.int64) - cell_map.starts[cell_map.cell_at]
        offsets = starts[cell_map.cell_at] - base + within * code_size
        memory = memoryview((ctypes.c_uint8 * (end - base)).from_address(base))
        # row i is the code_size bytes from byte i on: one row per possible start, so a code
        # is one element wherever it lies, and gathering some is one copy each
        rows = np.ndarray(shape=(end - base - code_size + 1,), strides=(1,), buffer=memory,
                          dtype=np.dtype((np.void, code_size)))
        rows.flags.writeable = False
        return cls(ivf, offsets, rows)

    def score(self, query: np.ndarray, positions: np.ndarray, cell_scores: np.ndarray
              ) -> np.ndarray:
        """``query`` · the stored vector at each of ``positions`` (their cells' centroid scores
        ``cell_scores`` are added for residual codes), by FAISS's scanner for the index type."""
        n = len(positions)
        codes = self._rows[self._offsets[positions]].view(np.uint8)
        scanner = self._ivf.get_InvertedListScanner(False, None, None)
        scanner.set_query(faiss.swig_ptr(query))
        scanner.set_list(0, 0.0)
        local = np.arange(n, dtype=np.int64)
        dis = np.full(n, -np.inf, dtype=np.float32)
        labels = np.full(n, -1, dtype=np.int64)
        # a heap as large as the input keeps every score; its order does not matter here
        scanner.scan_codes(n, faiss.swig_ptr(codes), faiss.swig_ptr(local), faiss.swig_ptr(dis),
                           faiss.swig_ptr(labels), n)
        out = np.empty(n, dtype=np.float32)
        out[labels] = dis
        return out + cell_scores if self._by_residual else out


def cells_to_visit(nearest: np.ndarray, dis: np.ndarray, counts: np.ndarray, target: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Of the cells in ``nearest`` order (with their scores ``dis``, and ``counts`` matches
    each, in that order), those holding matches, up to and including the one where the matches
    they hold reach ``target``."""
    held = counts > 0
    cells, dis, counts = nearest[held], dis[held], counts[held]
    take = int(np.searchsorted(np.cumsum(counts), target)) + 1
    return cells[:take], dis[:take]


class MatchBitmap:
    """A filter's matches (non-negative ids) as a bitmap, made on first use: a boolean array
    indexed by id (:attr:`member`) and a FAISS selector over the same bits (:attr:`selector`,
    a constant-time test per candidate). Made in about a millisecond for a million ids, which
    a query whose matches are scored from their codes never needs."""

    def __init__(self, ids: np.ndarray) -> None:
        self.ids = np.asarray(ids, dtype=np.int64)

    @functools.cached_property
    def member(self) -> np.ndarray:
        bits = np.zeros(int(self.ids.max()) + 1 if len(self.ids) else 0, dtype=bool)
        bits[self.ids] = True
        return bits

    @functools.cached_property
    def selector(self) -> Any:
        self._packed = np.packbits(self.member, bitorder="little")  # FAISS reads it: keep it
        return faiss.IDSelectorBitmap(len(self._packed), faiss.swig_ptr(self._packed))


def search_among(ivf: Any, cell_map: CellMap, queries: np.ndarray, k: int, matches: np.ndarray,
                 bitmap: MatchBitmap, *, nprobe: int, margin: float
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Top ``k`` (scores, ids) per query row among ``matches`` (see the module docstring),
    with ``bitmap`` the same set, held by the caller while FAISS uses its selector."""
    target = margin * nprobe * cell_map.count / max(1, cell_map.nlist)
    fraction = len(matches) / max(1, cell_map.count)
    direct = cell_map.codes is not None and fraction < DIRECT_BELOW
    at = None  # the matches' positions in the cell map, when the counts or the codes need them
    if fraction <= COUNT_ALL_BELOW or direct:
        at = cell_map.positions_of(matches)
        at = at[at >= 0]
    every = cell_map.counts_at(at) if at is not None and fraction <= COUNT_ALL_BELOW else None
    held = np.flatnonzero(every) if every is not None and every.sum() <= target else None
    scorable = (at, cell_map.cell_at[at]) if at is not None and direct else None
    out_scores = np.full((len(queries), k), -np.inf, dtype=np.float32)
    out_ids = np.full((len(queries), k), -1, dtype=np.int64)
    for row, query in enumerate(np.ascontiguousarray(queries, dtype=np.float32)):
        if held is not None:  # every cell holding a match is visited: no order needed
            cells, dis = held, cell_map.centroid_scores(query)[held]
        else:
            cells, dis = _nearest_cells(cell_map, query, every, bitmap, target, fraction)
        if not len(cells):
            continue
        if scorable and (scored := _score_directly(cell_map, query, *scorable, cells, dis, k)):
            out_scores[row, :len(scored[0])], out_ids[row, :len(scored[0])] = scored
            continue
        params = faiss.SearchParametersIVF()
        params.nprobe = len(cells)
        params.sel = bitmap.selector
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


def _score_directly(cell_map: CellMap, query: np.ndarray, at: np.ndarray, at_cells: np.ndarray,
                    cells: np.ndarray, dis: np.ndarray, k: int
                    ) -> tuple[np.ndarray, np.ndarray] | None:
    """Top ``k`` among the matches (at positions ``at``, in cells ``at_cells``) that lie in
    ``cells``, scored from their codes alone; None when they are not a thin enough share of
    those cells' vectors for that to beat scanning the cells."""
    assert cell_map.codes is not None
    cell_score = np.zeros(cell_map.nlist, dtype=np.float32)
    visited = np.zeros(cell_map.nlist, dtype=bool)
    visited[cells] = True
    cell_score[cells] = dis
    chosen = visited[at_cells]
    inside = at[chosen]
    if len(inside) >= DIRECT_BELOW * int(cell_map.sizes[cells].sum()):
        return None
    scores = cell_map.codes.score(query, inside, cell_score[at_cells[chosen]])
    top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
    top = top[np.argsort(-scores[top], kind="stable")]
    return scores[top], cell_map.ids[inside[top]]


def _nearest_cells(cell_map: CellMap, query: np.ndarray, every: np.ndarray | None,
                   bitmap: MatchBitmap, target: float, fraction: float
                   ) -> tuple[np.ndarray, np.ndarray]:
    """The cells to visit for ``query``, nearest first, with their centroid scores: counted
    from ``every`` cell's matches when given, else only the nearest cells are counted (about
    ``target / (fraction × per cell)`` of them, more while they fall short)."""
    scores = cell_map.centroid_scores(query)
    per_cell = cell_map.count / max(1, cell_map.nlist)
    reach = min(cell_map.nlist, math.ceil(1.25 * target / max(fraction * per_cell, 1e-9)))
    nearest = _nearest_first(scores, reach)
    if every is not None:
        counts = every[nearest]
        if counts.sum() < target and reach < cell_map.nlist:  # matches sit farther out
            nearest = _nearest_first(scores, cell_map.nlist)
            counts = every[nearest]
    else:
        member = bitmap.member
        counts = cell_map.counts_in(nearest, member)
        while counts.sum() < target and reach < cell_map.nlist:
            reach = min(cell_map.nlist, 2 * reach)
            nearest = _nearest_first(scores, reach)
            counts = np.concatenate([counts, cell_map.counts_in(nearest[len(counts):], member)])
    return cells_to_visit(nearest, scores[nearest], counts, target)


def _nearest_first(scores: np.ndarray, m: int) -> np.ndarray:
    """The ``m`` cells of highest ``scores``, highest first (ties by cell number): a partial
    sort, which is what a query needs when the matches fill ``target`` in a few cells."""
    if m >= len(scores):
        return np.argsort(-scores, kind="stable")
    top = np.argpartition(-scores, m - 1)[:m]
    return top[np.lexsort((top, -scores[top]))]
