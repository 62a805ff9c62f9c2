"""Where vectors are searched: a FAISS index with 64-bit ids (the metadata store's primary keys).

Vectors are unit length and compared by inner product, so a score is a cosine similarity.

The index type follows the collection size:

* up to ``exact_limit`` vectors (default 100,000): exact search, ``IDMap2,Flat``;
* above it: ``IVF{nlist},SQfp16`` (an inverted file over k-means cells storing half-precision
  codes: half the memory of float32; 8-bit codes were tried and capped recall@10 near 0.96 on
  hard data, whatever the number of cells visited), trained on the data. Its ``nprobe`` (cells
  visited per query) is *calibrated* when the index is built: the smallest value whose recall@10
  against exact search, measured on a sample of the collection's own vectors, reaches
  ``TARGET_RECALL``, then doubled as a margin for text queries (which sit in a different region
  of the space than images). The measured recall is kept with the index.

A :class:`VectorIndex` is either *writable* (loaded in memory; adds and removes change the
FAISS index) or *read-only* (memory-mapped, so opening is instant and only touched pages cost
memory; changes go to a small exact overlay and a set of hidden ids, merged at search time).
The FAISS file is a derived copy of the vectors in the metadata store (see ``store.sync``): it is
rewritten atomically, and a crash can leave it stale but never wrong.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import StorageError
from .atomic import replace_atomically
from .filtered_ivf import CellMap, MatchBitmap, search_among

EXACT_LIMIT = 100_000
TARGET_RECALL = 0.97
CALIBRATION_QUERIES = 200
WIDEN_MARGIN = 2.0
"""Among a filter's matches, an IVF index visits cells until they hold ``WIDEN_MARGIN ×
nprobe`` cells' worth of matches: the best matches of a filter that is unrelated to content
lie farther from the query than the best of all, so more than an unfiltered search's share is
scored. Measured (recall@10 against an exact search of the matches): at 1M vectors with
filters of 0.1–10 %, margins 1.5, 2 and 3 all gave 1.0 (2 costs a third less than 3 at 1 %); on
60,000 noisier 32- and 128-d vectors with filters of 0.2–30 %, margin 1 already gave ≥ 0.999
(the calibrated nprobe carries its own factor 2). 2 is kept for collections whose matches lie
farther out than these."""
MOSTLY = 0.5
"""A filter matching at least this share of the vectors is answered from a wider unfiltered
search (``VectorIndex._mostly_matching``)."""


@dataclass(frozen=True)
class SearchTuning:
    """How an approximate index is searched, and the recall measured for it."""

    nprobe: int = 1
    recall_at_10: float | None = None


ShardFiller = Callable[[Any, Iterator[tuple[np.ndarray, np.ndarray]]], Iterator[Any]]
"""Turns a trained empty IVF index and the collection's chunks into filled shards (clones of
the trained index), e.g. by sending the chunks to a cluster; :meth:`VectorIndex.build_streaming`
merges them as they arrive."""


def _exact(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


class VectorIndex:
    """See the module docstring."""

    def __init__(
        self,
        dim: int,
        base: Any = None,
        *,
        writable: bool = True,
        tuning: SearchTuning | None = None,
    ) -> None:
        self.dim = dim
        self._base = base if base is not None else _exact(dim)
        if self._base.d != dim:
            raise ValueError(f"index dimension {self._base.d} != {dim}")
        self.writable = writable
        self.tuning = tuning or SearchTuning()
        self._overlay = _exact(dim)
        self._hidden: set[int] = set()
        self._selector_cache: Any = None  # kept alive while FAISS uses it
        self._cells: CellMap | None = None  # which cell holds each id (IVF bases), on first use

    # --- building, reading and writing ------------------------------------------------
    @classmethod
    def build(
        cls,
        dim: int,
        ids: np.ndarray,
        vectors: np.ndarray,
        *,
        exact_limit: int = EXACT_LIMIT,
        seed: int = 0,
    ) -> VectorIndex:
        """A new writable index of the type suited to ``len(ids)`` vectors held in memory."""
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), dim)
        return cls.build_streaming(dim, len(ids), lambda: [(ids, vecs)], (ids, vecs),
                                   exact_limit=exact_limit, seed=seed)

    @classmethod
    def build_streaming(
        cls,
        dim: int,
        n: int,
        chunks: Callable[[], Iterable[tuple[np.ndarray, np.ndarray]]],
        sample: tuple[np.ndarray, np.ndarray] | Callable[[], tuple[np.ndarray, np.ndarray]],
        *,
        exact_limit: int = EXACT_LIMIT,
        seed: int = 0,
        fill: ShardFiller | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> VectorIndex:
        """A new writable index of ``n`` vectors that arrive in ``chunks`` (ids, vectors), so
        the collection never needs to be in memory at once: an exact index is filled chunk by
        chunk; an IVF index is trained on ``sample`` (ids and vectors of part of the
        collection, asked for only when needed), filled chunk by chunk (or in shards made by
        ``fill``, e.g. on a cluster), and calibrated against exact answers gathered from the
        same chunks as they pass. Peak memory: the finished index, the sample and one chunk."""
        report = progress or (lambda done, total: None)
        if n <= exact_limit:
            index = cls(dim)
            done = 0
            for ids, vecs in chunks():
                index.add(ids, vecs)
                done += len(ids)
                report(done, n)
            if index.count != n:
                raise ValueError(f"the collection streamed {index.count} vectors, expected {n}")
            return index
        sample_ids, sample_vecs = sample() if callable(sample) else sample
        trained = train_ivf(sample_vecs, n_total=n, seed=seed)
        calibration = Calibration(sample_ids, sample_vecs, np.random.default_rng(seed + 1))
        del sample_ids, sample_vecs  # the calibration keeps its queries; the rest can go
        streamed = [0]

        def observed() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for ids, vecs in chunks():
                calibration.observe(ids, vecs)
                streamed[0] += len(ids)
                report(streamed[0], n if fill is not None else 2 * n)
                yield ids, vecs

        if fill is not None:
            return cls.from_shards(dim, trained, fill(trained, observed()), n=n,
                                   calibration=calibration)
        # Two passes over the collection: the first finds each vector's cell (and the exact
        # answers for calibration), so every inverted list can be given its final size before
        # the second adds the vectors. Lists grown one chunk at a time would reallocate
        # geometrically and leave the heap up to twice the index's size.
        merged: Any = faiss.clone_index(trained)
        order: list[np.ndarray] = []
        cells: list[np.ndarray] = []
        for ids, vecs in observed():
            order.append(np.ascontiguousarray(ids, dtype=np.int64))
            cells.append(merged.quantizer.assign(np.ascontiguousarray(vecs, np.float32), 1)
                         .ravel().astype(np.int64))
        all_ids, all_cells = np.concatenate(order), np.concatenate(cells)
        del order, cells
        _reserve(merged, np.bincount(all_cells, minlength=merged.nlist))
        at = 0
        for ids, vecs in chunks():
            m = len(ids)
            if not np.array_equal(ids, all_ids[at:at + m]):
                raise ValueError("the collection changed between the two passes of a rebuild")
            x = np.ascontiguousarray(vecs, dtype=np.float32)
            xids = np.ascontiguousarray(ids, dtype=np.int64)
            cell = np.ascontiguousarray(all_cells[at:at + m])
            merged.add_core(m, faiss.swig_ptr(x), faiss.swig_ptr(xids), faiss.swig_ptr(cell))
            at += m
            report(n + at, 2 * n)
        return cls._calibrated(dim, merged, n, calibration)

    @classmethod
    def from_shards(
        cls,
        dim: int,
        trained: Any,
        shards: Iterable[Any],
        ids: np.ndarray | None = None,
        vectors: np.ndarray | None = None,
        *,
        seed: int = 0,
        n: int | None = None,
        calibration: Calibration | None = None,
    ) -> VectorIndex:
        """An approximate index merged from ``shards``: each an empty clone of ``trained`` (see
        :func:`train_ivf`) filled by :func:`fill_shard` with part of the collection, possibly
        on another machine. Shards are merged into a clone of ``trained`` (and emptied) one at
        a time, so a caller may pass a generator that receives them as they are finished.
        ``ids``/``vectors`` (the whole collection) calibrate nprobe, as :meth:`build` does: the
        result equals :meth:`build`'s up to the order of entries within a cell. (Streaming
        builds pass ``n`` and a ``calibration`` that saw every vector instead.)"""
        if calibration is None:
            if ids is None or vectors is None:
                raise ValueError("from_shards needs ids and vectors, or n and a calibration")
            ids = np.ascontiguousarray(ids, dtype=np.int64)
            vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), dim)
            calibration = Calibration(ids, vecs, np.random.default_rng(seed + 1))
            calibration.observe(ids, vecs)
            n = len(ids)
        merged = faiss.clone_index(trained)
        for shard in shards:
            merged.merge_from(shard, 0)
        return cls._calibrated(dim, merged, int(n or 0), calibration)

    @classmethod
    def _calibrated(cls, dim: int, merged: Any, n: int, calibration: Calibration) -> VectorIndex:
        if merged.ntotal != n:
            raise ValueError(f"the shards hold {merged.ntotal} vectors, expected {n}")
        return cls(dim, merged, tuning=calibration.tune(merged))

    @classmethod
    def load(
        cls, path: str | os.PathLike[str], dim: int, *, writable: bool, kind: str = "Flat",
        tuning: SearchTuning | None = None,
    ) -> VectorIndex:
        """Read a FAISS file: into memory when ``writable``, else memory-mapped (FAISS maps
        flat codes and inverted lists with different flags, so the ``kind`` recorded in the
        manifest picks the flag)."""
        if writable:
            base = faiss.read_index(os.fspath(path))
        else:
            flag = faiss.IO_FLAG_MMAP if kind.startswith("IVF") else faiss.IO_FLAG_MMAP_IFC
            try:
                base = faiss.read_index(os.fspath(path), flag)
            except RuntimeError:  # not mappable after all: read it into memory
                base = faiss.read_index(os.fspath(path))
            _no_prefetch(base)
        return cls(dim, base, writable=writable, tuning=tuning)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file in the same folder, fsync, rename."""
        if not self.writable:
            raise RuntimeError("a read-only (memory-mapped) index cannot be saved")
        target = Path(path)
        try:
            with replace_atomically(target) as tmp:
                faiss.write_index(self._base, os.fspath(tmp))
        except (OSError, RuntimeError) as exc:
            raise StorageError(
                f"could not write {target}: {exc}. The previous file is unchanged; "
                "free some disk space or check the folder's permissions, then run again."
            ) from exc

    # --- contents --------------------------------------------------------------------------
    @property
    def base_count(self) -> int:
        """Vectors in the FAISS index proper (what the file holds)."""
        return int(self._base.ntotal)

    @property
    def count(self) -> int:
        """Number of live vectors (exact for writable indexes; an upper bound otherwise)."""
        return int(self._base.ntotal) + int(self._overlay.ntotal)

    @property
    def kind(self) -> str:
        """A FAISS index-factory style name: ``Flat`` or ``IVF4096,SQfp16``."""
        ivf = _ivf(self._base)
        if ivf is None:
            return "Flat"
        codes = ("SQfp16" if isinstance(faiss.downcast_index(ivf),
                                        faiss.IndexIVFScalarQuantizer)
                 else "Flat")
        return f"IVF{ivf.nlist},{codes}"

    def ids(self) -> np.ndarray:
        """Every live id (writable indexes only)."""
        if not self.writable:
            raise RuntimeError("ids() needs a writable index")
        ivf = _ivf(self._base)
        if ivf is None:
            return faiss.vector_to_array(self._base.id_map).astype(np.int64)
        invlists = ivf.invlists
        parts = []
        for lst in range(ivf.nlist):
            size = invlists.list_size(lst)
            if size:
                parts.append(faiss.rev_swig_ptr(invlists.get_ids(lst), size).copy())
        return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, np.int64)

    def needs_rebuild(self, exact_limit: int = EXACT_LIMIT) -> bool:
        """True when the collection has outgrown (or shrunk below) the current index type."""
        ivf = _ivf(self._base)
        n = self.count
        if ivf is None:
            return n > exact_limit
        # nlist was picked as about 4·sqrt(n): rebuild once n has grown fourfold
        return n <= exact_limit // 2 or n > ivf.nlist ** 2 // 4

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        id_arr = np.ascontiguousarray(ids, dtype=np.int64)
        if self.writable:
            self._base.add_with_ids(vecs, id_arr)
            self._cells = None
        else:
            self._overlay.add_with_ids(vecs, id_arr)

    def remove(self, ids: np.ndarray) -> None:
        if len(ids) == 0:
            return
        id_arr = np.ascontiguousarray(ids, dtype=np.int64)
        if self.writable:
            self._base.remove_ids(id_arr)
            self._cells = None
        else:
            self._overlay.remove_ids(id_arr)
            self._hidden.update(int(i) for i in id_arr)
            self._selector_cache = None

    def search(
        self, queries: np.ndarray, k: int, *, allowed: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, ids) per query row, best first; missing slots have id -1.

        ``allowed``: only these ids may be returned (a filter's matches). The answer is then
        the top ``k`` *among them*, not the allowed part of an unfiltered top ``k``: FAISS
        tests each id it scans against a bitmap of the matches, and an IVF index visits only
        cells holding matches, nearest first, until they hold ``WIDEN_MARGIN × nprobe`` cells'
        worth of them (every such cell for a selective filter, which makes it exact; the rule
        is in :mod:`vlmsearch.store.filtered_ivf`)."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, k)
        keep = None
        if allowed is None:
            scores, ids = self._base.search(
                q, k, params=self._params(self._selector(None), self.tuning.nprobe))
        else:
            matches = self._visible(np.asarray(allowed, dtype=np.int64))
            if len(matches) == 0:
                return (np.full((len(q), k), -np.inf, dtype=np.float32),
                        np.full((len(q), k), -1, dtype=np.int64))
            found = self._mostly_matching(q, k, matches)
            if found is not None:
                return found
            keep = MatchBitmap(matches)
            scores, ids = self._base_among(q, k, matches, keep)
        if self._overlay.ntotal == 0:
            return scores, ids
        overlay_params = None
        if keep is not None:
            overlay_params = faiss.SearchParameters()
            overlay_params.sel = keep.selector
        o_scores, o_ids = self._overlay.search(q, k, params=overlay_params)
        all_scores = np.concatenate([scores, o_scores], axis=1)
        all_ids = np.concatenate([ids, o_ids], axis=1)
        all_scores[all_ids < 0] = -np.inf
        order = np.argsort(-all_scores, axis=1, kind="stable")[:, :k]
        return (np.take_along_axis(all_scores, order, axis=1),
                np.take_along_axis(all_ids, order, axis=1))

    def _visible(self, ids: np.ndarray) -> np.ndarray:
        """``ids`` less those hidden from a read-only copy (so one bitmap says it all)."""
        if not self._hidden or not len(ids):
            return ids
        return ids[~np.isin(ids, np.fromiter(self._hidden, dtype=np.int64))]

    def _mostly_matching(self, q: np.ndarray, k: int, matches: np.ndarray
                         ) -> tuple[np.ndarray, np.ndarray] | None:
        """When most vectors match, the top ``k`` among the matches are the matching part of
        an unfiltered top ``2k / fraction``: searched so (no bitmap to build), or None when
        that holds fewer than ``k`` matches for some query (the filter then follows content,
        away from the query) or too few vectors match."""
        fraction = len(matches) / max(1, self.count)
        if fraction < MOSTLY:
            return None
        wide = min(self.count, math.ceil(2 * k / fraction))
        scores, ids = self.search(q, wide)
        if len(matches) > 1 and bool((matches[1:] >= matches[:-1]).all()):  # as columns give
            pos = np.minimum(np.searchsorted(matches, ids), len(matches) - 1)
            keep = (matches[pos] == ids) & (ids >= 0)
        else:
            keep = np.isin(ids, matches) & (ids >= 0)
        if (keep.sum(axis=1) < min(k, len(matches))).any():
            return None
        out_scores = np.full((len(q), k), -np.inf, dtype=np.float32)
        out_ids = np.full((len(q), k), -1, dtype=np.int64)
        for row in range(len(q)):
            picked = np.flatnonzero(keep[row])[:k]
            out_scores[row, :len(picked)] = scores[row, picked]
            out_ids[row, :len(picked)] = ids[row, picked]
        return out_scores, out_ids

    def _base_among(self, q: np.ndarray, k: int, matches: np.ndarray,
                    keep: MatchBitmap) -> tuple[np.ndarray, np.ndarray]:
        """The base index's top ``k`` among ``matches`` (``keep`` is their bitmap)."""
        ivf = faiss.downcast_index(self._base)
        if isinstance(ivf, faiss.IndexIVF):
            if self._cells is None:
                self._cells = CellMap(ivf)
            return search_among(ivf, self._cells, q, k, matches, keep,
                                nprobe=self.tuning.nprobe, margin=WIDEN_MARGIN)
        # an exact index (or an IVF inside a wrapper): one scan with the bitmap
        fraction = len(matches) / max(1, self.count)
        nprobe = math.ceil(self.tuning.nprobe * WIDEN_MARGIN / max(fraction, 1e-9))
        return self._base.search(q, k, params=self._params((keep.selector,), nprobe))

    def _selector(self, keep: tuple[Any, ...] | None) -> tuple[Any, ...] | None:
        """What the base index may return: ``keep`` (a bitmap selector of visible ids and what
        it holds on to), else not the ids hidden from a read-only copy; None for everything."""
        if self._hidden and self._selector_cache is None:
            batch = faiss.IDSelectorBatch(np.fromiter(self._hidden, dtype=np.int64))
            self._selector_cache = (batch, faiss.IDSelectorNot(batch))
        hidden = self._selector_cache if self._hidden else None
        if keep is None:
            return hidden[1:] if hidden else None
        return keep  # hidden ids were taken out of the bitmap (``_visible``)

    def _params(self, selector: tuple[Any, ...] | None, nprobe: int) -> Any:
        ivf = _ivf(self._base)
        if ivf is not None:
            params = _ivf_params(min(ivf.nlist, max(1, nprobe)))
        elif selector is None:
            return None
        else:
            params = faiss.SearchParameters()
        if selector is not None:
            params.sel = selector[0]  # the caller holds ``selector`` until the search is done
        return params


def _no_prefetch(index: Any) -> None:
    """Turn off the prefetch threads of memory-mapped inverted lists. FAISS's on-disk lists
    start 32 threads per search to read the lists it is about to scan ahead; with the file in
    the page cache that only costs: a scan of 200,000 stored ids with a selector took 11.6 ms
    with them and 1.4 ms without (in memory: 1.9 ms)."""
    ivf = _ivf(index)
    if ivf is None:
        return
    lists = faiss.downcast_InvertedLists(ivf.invlists)
    if hasattr(lists, "prefetch_nthread"):
        lists.prefetch_nthread = 0


def train_ivf(vectors: np.ndarray, *, n_total: int | None = None, seed: int = 0) -> Any:
    """An empty ``IVF{nlist},SQfp16`` index for a collection of ``n_total`` vectors (default:
    as many as given), its k-means cells trained on a sample of
    ``vectors``. Clone it (:func:`fill_shard`) to fill shards that :meth:`VectorIndex.
    from_shards` merges."""
    vecs = np.ascontiguousarray(vectors, dtype=np.float32)
    n = n_total if n_total is not None else len(vecs)
    dim = vecs.shape[1]
    nlist = _nlist(n)
    quantizer = faiss.IndexFlatIP(dim)
    ivf = faiss.IndexIVFScalarQuantizer(quantizer, dim, nlist, faiss.ScalarQuantizer.QT_fp16,
                                        faiss.METRIC_INNER_PRODUCT)
    rng = np.random.default_rng(seed)
    sample = vecs[rng.choice(len(vecs), size=min(len(vecs), 40 * nlist), replace=False)]
    ivf.cp.niter = 12
    ivf.cp.seed = seed
    ivf.train(sample)
    return ivf


def _nlist(n: int) -> int:
    return int(2 ** round(math.log2(max(64.0, 4 * math.sqrt(n)))))


def _reserve(ivf: Any, sizes: np.ndarray) -> None:
    """Give each inverted list of the (empty) ``ivf`` room for ``sizes[list]`` entries, so
    adding never reallocates (a list resized up and back to 0 keeps its capacity)."""
    lists = ivf.invlists
    for cell, size in enumerate(sizes.tolist()):
        if size:
            lists.resize(cell, int(size))
            lists.resize(cell, 0)


def fill_shard(trained: Any, ids: np.ndarray, vectors: np.ndarray) -> Any:
    """A clone of the trained, empty ``trained`` index holding ``vectors`` under ``ids``."""
    shard = faiss.clone_index(trained)
    if len(ids):
        shard.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32),
                           np.ascontiguousarray(ids, dtype=np.int64))
    return shard


def _ivf_params(nprobe: int) -> Any:
    params = faiss.SearchParametersIVF()
    params.nprobe = nprobe
    return params


def _ivf(index: Any) -> Any:
    """The IVF index inside ``index``, or None for exact indexes."""
    try:
        return faiss.extract_index_ivf(index)
    except RuntimeError:
        return None


class Calibration:
    """How :func:`train_ivf`'s index is tuned: the smallest power-of-two nprobe whose recall@10
    against exact search reaches TARGET_RECALL, then doubled as a margin.

    The queries are half the sample's own vectors (each one's own match left out) and half
    midpoints of random pairs of them, which lie between clusters as real queries often do
    (text vectors sit apart from image vectors). Their exact answers are gathered by
    :meth:`observe` from the collection as it streams past, so no full copy is ever held."""

    def __init__(self, ids: np.ndarray, vecs: np.ndarray, rng: np.random.Generator) -> None:
        n_q = min(CALIBRATION_QUERIES, len(vecs))
        own_rows = rng.choice(len(vecs), size=n_q // 2, replace=False)
        pairs = rng.choice(len(vecs), size=(n_q - n_q // 2, 2))
        mids = vecs[pairs[:, 0]] + vecs[pairs[:, 1]]
        mids /= np.maximum(np.linalg.norm(mids, axis=1, keepdims=True), 1e-12)
        self.queries = np.ascontiguousarray(np.concatenate([vecs[own_rows], mids]),
                                            dtype=np.float32)
        self.skip = np.concatenate([ids[own_rows], np.full(len(mids), -2, dtype=np.int64)])
        self._scores = np.full((len(self.queries), 11), -np.inf, dtype=np.float32)
        self._ids = np.full((len(self.queries), 11), -1, dtype=np.int64)

    def observe(self, ids: np.ndarray, vecs: np.ndarray) -> None:
        """Take a chunk of the collection into the exact top-11 of every query."""
        if len(ids) == 0:
            return
        scores = self.queries @ np.ascontiguousarray(vecs, dtype=np.float32).T
        all_scores = np.concatenate([self._scores, scores], axis=1)
        all_ids = np.concatenate([self._ids, np.broadcast_to(ids, scores.shape)], axis=1)
        keep = np.argsort(-all_scores, axis=1, kind="stable")[:, :11]
        self._scores = np.take_along_axis(all_scores, keep, axis=1)
        self._ids = np.take_along_axis(all_ids, keep, axis=1)

    def tune(self, ivf: Any) -> SearchTuning:
        truth = [[int(i) for i in row if i >= 0 and i != s][:10]
                 for row, s in zip(self._ids, self.skip, strict=True)]

        def recall(nprobe: int) -> float:
            _, found = ivf.search(self.queries, 11, params=_ivf_params(nprobe))
            hits = sum(len(set(want) & {int(g) for g in [g for g in got if g != s][:10]})
                       for got, want, s in zip(found, truth, self.skip, strict=True))
            return hits / max(1, sum(len(w) for w in truth))

        nprobe = 1
        while nprobe < ivf.nlist and recall(nprobe) < TARGET_RECALL:
            nprobe *= 2
        final = min(ivf.nlist, nprobe * 2)
        return SearchTuning(nprobe=final, recall_at_10=round(recall(final), 4))


def training_sample_size(n: int, dim: int, budget_bytes: int = 512 * 2**20) -> int:
    """How many vectors to train an IVF index of ``n`` on: 40 per cell, as :func:`train_ivf`
    uses, but never more than ``budget_bytes`` of float32 (a rebuild's memory stays near the
    finished index's size; fewer points per cell cost a little recall, which the nprobe
    calibration then pays back)."""
    per_cell = 40 * _nlist(n)
    return int(max(1, min(n, per_cell, budget_bytes // (4 * dim))))
