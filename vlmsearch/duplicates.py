"""Duplicate groups, found from what the index stores (no file is read again).

Three kinds, each file in at most one group (the closest kind that links it):

* **exact**: files with the same content digest (byte-identical copies), score 1.0;
* **near**: the same picture resized, recompressed, cropped a little, rotated a little,
  re-exported or colour-tweaked. Two contents are linked when their perceptual hashes
  (:mod:`vlmsearch.phash`, made at index time from the decoded pixels) differ in at most
  ``near_bits`` (22) of 64 bits **and** their image vectors' cosine similarity is at least
  ``near_cosine + near_cosine_per_bit × bits`` (0.58 + 0.01 per differing bit: identical
  hashes need 0.58, 22 bits need 0.80) **and** the pair is not a mirrored copy (its hashes
  are not ``mirror_margin`` (8) bits closer once one is mirrored, see
  :func:`~vlmsearch.phash.mirror_of`). The vector says "same subject", the hash "same
  layout": the vector alone groups mirrored copies and other photos of the same scene, the
  hash alone different pictures with the same composition; the sloped threshold lets a
  resized copy (hash unchanged, but a vector moved by the lost detail) and a crop (vector
  close, hash moved) both in. Contents stored before hashes existed (no hash) are linked on
  the vector alone, with the stricter ``vector_only_cosine`` (0.95);
* **similar** (only when asked): pictures of the same moment that are not the same picture,
  such as burst shots or a mirrored copy: cosine at least ``similar_cosine`` (0.75), any
  hash.

Groups are the connected components of those links (so a chain of small edits stays one
group); a group's score is its weakest link's cosine similarity (the component's bottleneck
on its maximum spanning tree), so sorting by score puts the surest groups first.

Neighbours come from FAISS: every content's ``neighbours`` nearest others by inner product,
exact up to ``EXACT_LIMIT`` contents; above it, candidates from an inverted-file index over
PCA-reduced vectors, re-scored with the exact cosine (near duplicates are far closer than
anything else, so a few probed lists find them). Nothing is compared pair by pair.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, Literal

import faiss
import numpy as np

from .errors import UsageError
from .phash import hamming, mirror_of
from .store.records import ContentTable

Kind = Literal["exact", "near", "similar"]
EXACT_LIMIT = 5_000
"""Up to this many distinct contents the neighbour search is exact (a flat index)."""
REDUCED_DIM = 96
"""Above it, candidates are searched among vectors reduced to this many dimensions."""
NPROBE = 8
REDUCED_MARGIN = 0.2
"""Candidates whose reduced cosine is this far below the lowest threshold are dropped."""
SEARCH_CHUNK = 4_096


@dataclass(frozen=True)
class DuplicateRule:
    """When two contents are near duplicates or similar (see the module docstring). The
    defaults were calibrated on the Flickr8k near-duplicate benchmark (``bench/duplicates.py``,
    docs/benchmarks.md)."""

    near_cosine: float = 0.58
    """The cosine needed between two pictures whose hashes are equal..."""
    near_cosine_per_bit: float = 0.01
    """...plus this much for each of the bits their hashes differ in..."""
    near_bits: int = 22
    """...which may be at most this many."""
    mirror_margin: int = 8
    """A pair whose hashes are at least this many bits closer once one is mirrored is a
    mirrored copy: similar, not near."""
    min_score: float = -1.0
    """A floor on the cosine of every near link (``--min-score``)."""
    vector_only_cosine: float = 0.95
    similar_cosine: float = 0.75
    neighbours: int = 16

    def checked(self) -> DuplicateRule:
        for name in ("near_cosine", "vector_only_cosine", "similar_cosine", "min_score"):
            value = getattr(self, name)
            if not -1.0 <= value <= 1.0:
                raise UsageError(f"a minimum score is a cosine similarity between -1 and 1, "
                                 f"not {value}")
        if not 0 <= self.near_bits <= 64:
            raise UsageError(f"near_bits must be between 0 and 64, not {self.near_bits}")
        if self.neighbours < 1:
            raise UsageError("neighbours must be at least 1")
        return self

    def with_min_score(self, min_score: float | None, *, similar: bool) -> DuplicateRule:
        """``--min-score``: near links also need this cosine; with ``--similar`` it is the
        similar threshold instead."""
        if min_score is None:
            return self
        if similar:
            return replace(self, similar_cosine=min_score)
        return replace(self, min_score=min_score,
                       vector_only_cosine=max(self.vector_only_cosine, min_score))


@dataclass(frozen=True)
class Member:
    id: int
    path: str

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "path": self.path}


@dataclass(frozen=True)
class DuplicateGroup:
    """Files that hold the same picture (``exact``, ``near``) or the same moment
    (``similar``); ``score``: 1.0 for exact copies, else the weakest link's cosine."""

    kind: Kind
    score: float
    members: tuple[Member, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "score": round(self.score, 4),
                "members": [m.to_dict() for m in self.members]}


def find_groups(
    table: ContentTable, rule: DuplicateRule = DuplicateRule(), *, similar: bool = False
) -> list[DuplicateGroup]:
    """The duplicate groups of ``table`` (see the module docstring), surest first: exact,
    then near, then similar, each by score."""
    rule = rule.checked()
    n = len(table.vectors)
    parent = np.arange(n)
    score = np.ones(n, dtype=np.float64)  # per component root: its weakest merging link
    kind_rank = np.zeros(n, dtype=np.int8)  # per root: 0 one content, 1 near, 2 similar

    def find(i: int) -> int:
        root = i
        while parent[root] != root:
            root = parent[root]
        while parent[i] != root:
            parent[i], i = root, parent[i]
        return root

    edges = _links(table, rule, similar=similar)
    for sim, a, b, rank in edges:  # strongest first: each merge is a spanning-tree edge
        ra, rb = find(a), find(b)
        if ra == rb:
            continue
        parent[rb] = ra
        score[ra] = min(score[ra], score[rb], sim)
        kind_rank[ra] = max(kind_rank[ra], kind_rank[rb], rank)

    by_root: dict[int, list[int]] = {}
    for f, content in enumerate(table.file_content):
        by_root.setdefault(find(int(content)), []).append(f)
    groups: list[DuplicateGroup] = []
    for root, files in by_root.items():
        if len(files) < 2:
            continue
        kind: Kind = ("exact", "near", "similar")[int(kind_rank[root])]
        members = tuple(Member(int(table.file_ids[f]), table.file_paths[f]) for f in files)
        groups.append(DuplicateGroup(kind, float(score[root]) if kind != "exact" else 1.0,
                                     members))
    order = {"exact": 0, "near": 1, "similar": 2}
    groups.sort(key=lambda g: (order[g.kind], -g.score, g.members[0].path))
    return groups


def _links(table: ContentTable, rule: DuplicateRule, *, similar: bool
           ) -> list[tuple[float, int, int, int]]:
    """(cosine, content a, content b, 1 near | 2 similar), strongest first."""
    floor = max(rule.min_score, min(rule.near_cosine, rule.vector_only_cosine))
    if similar:
        floor = min(floor, rule.similar_cosine)
    out: list[tuple[float, int, int, int]] = []
    for rows, sims, idx in _neighbours(table.vectors, rule.neighbours, floor):
        for col in range(idx.shape[1]):
            b = idx[:, col]
            s = sims[:, col]
            keep = (b > rows) & (s >= floor)  # each pair once, itself left out
            if not keep.any():
                continue
            a_k, b_k, s_k = rows[keep], b[keep], s[keep]
            both = table.has_hash[a_k] & table.has_hash[b_k]
            near = np.where(both, is_near(s_k, table.hashes[a_k], table.hashes[b_k], rule),
                            s_k >= rule.vector_only_cosine)
            rank = np.where(near, 1, 2)
            if not similar:
                a_k, b_k, s_k, rank = a_k[near], b_k[near], s_k[near], rank[near]
            else:
                ok = near | (s_k >= rule.similar_cosine)
                a_k, b_k, s_k, rank = a_k[ok], b_k[ok], s_k[ok], rank[ok]
            out.extend(zip(s_k.tolist(), a_k.tolist(), b_k.tolist(), rank.tolist(),
                           strict=True))
    # near links first (then by strength), so a near group is whole before similar links
    # join groups together and the weakest-link score follows the kind
    out.sort(key=lambda e: (e[3], -e[0]))
    return out


def is_near(cosine: np.ndarray, hash_a: np.ndarray, hash_b: np.ndarray,
            rule: DuplicateRule) -> np.ndarray:
    """The near-duplicate rule for pairs with both hashes (see :class:`DuplicateRule`)."""
    bits = hamming(hash_a, hash_b)
    mirrored = hamming(mirror_of(hash_a), hash_b) + rule.mirror_margin <= bits
    needed = np.maximum(rule.near_cosine + rule.near_cosine_per_bit * bits, rule.min_score)
    return np.asarray((bits <= rule.near_bits) & ~mirrored & (cosine >= needed))


def _neighbours(vectors: np.ndarray, k: int, floor: float
                ) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(rows, cosines, neighbour rows) for every vector, ``k`` (+ itself) at a time; cosines
    below ``floor`` may be given as -1.

    Up to :data:`EXACT_LIMIT` vectors: exact search. Above: candidates from an inverted-file
    index over the vectors reduced to :data:`REDUCED_DIM` dimensions by PCA (a near duplicate
    is among a vector's closest few in any projection that keeps most of the variance), then
    the exact cosine of every candidate pair from the full vectors, so thresholds always see
    true cosines."""
    n, dim = vectors.shape if vectors.ndim == 2 else (0, 0)
    if n < 2:
        return
    x = np.ascontiguousarray(vectors, dtype=np.float32)
    k = min(k + 1, n)
    if n <= EXACT_LIMIT:
        flat = faiss.IndexFlatIP(dim)
        flat.add(x)
        for start in range(0, n, SEARCH_CHUNK):
            sims, idx = flat.search(x[start:start + SEARCH_CHUNK], k)
            yield np.arange(start, min(n, start + SEARCH_CHUNK)), sims, idx
        return
    rng = np.random.default_rng(0)
    nlist = int(4 * math.sqrt(n))
    small = _reduce(x, min(dim, REDUCED_DIM), rng)
    index = faiss.IndexIVFFlat(faiss.IndexFlatIP(small.shape[1]), small.shape[1], nlist,
                               faiss.METRIC_INNER_PRODUCT)
    index.cp.niter = 10
    index.train(small[rng.choice(n, size=min(n, nlist * 40), replace=False)])
    index.add(small)
    index.nprobe = NPROBE
    for start in range(0, n, SEARCH_CHUNK):
        approx, idx = index.search(small[start:start + SEARCH_CHUNK], k)
        rows = np.arange(start, min(n, start + SEARCH_CHUNK))
        # the exact cosine of the candidates that could pass (a projection that drops only
        # low-variance directions raises cosines, so the margin is on the safe side)
        wanted = (idx > rows[:, None]) & (approx >= floor - REDUCED_MARGIN)
        sims = np.full(idx.shape, -1.0, dtype=np.float32)
        a, j = np.nonzero(wanted)
        if len(a):
            sims[a, j] = np.einsum("ij,ij->i", x[rows[a]], x[idx[a, j]])
        yield rows, sims, idx


def _reduce(x: np.ndarray, dim: int, rng: np.random.Generator) -> np.ndarray:
    """``x`` projected on its ``dim`` main directions (a randomized PCA of a sample: a few
    matrix products, where a full eigendecomposition of a 2048-d covariance takes minutes on
    a small CPU), rows renormalised."""
    sample = x[rng.choice(len(x), size=min(len(x), 8_000), replace=False)].astype(np.float64)
    mean = sample.mean(axis=0)
    centred = sample - mean
    probe = rng.standard_normal((x.shape[1], dim + 16))
    # only small (dim+16)² decompositions: LAPACK on the big matrices was slow and, under
    # load, fought FAISS' threads for the cores
    basis = _orthonormal(centred.T @ (centred @ probe))
    _, vectors = np.linalg.eigh(_gram(centred @ basis))
    projection = (basis @ vectors[:, ::-1][:, :dim]).astype(np.float32)
    out = np.empty((len(x), dim), dtype=np.float32)
    for begin in range(0, len(x), 16_384):
        out[begin:begin + 16_384] = (x[begin:begin + 16_384] - mean.astype(np.float32)) \
            @ projection
    out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
    return out


def _gram(m: np.ndarray) -> np.ndarray:
    return m.T @ m


def _orthonormal(m: np.ndarray) -> np.ndarray:
    """An orthonormal basis of the columns of ``m`` (tall), through its small Gram matrix."""
    values, vectors = np.linalg.eigh(_gram(m))
    keep = values > values.max() * 1e-10
    return np.asarray(m @ (vectors[:, keep] / np.sqrt(values[keep])))
