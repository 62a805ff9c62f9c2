"""One ranking from two: the embedding's (semantic) and the text matches' (lexical).

Reciprocal-rank fusion: an image at rank r (from 1) in a list earns ``weight / (K + r)`` from
it; images are ordered by the sum. It needs no calibration between two incomparable scores
(cosine similarity, bm25 over trigrams), which is why we chose it over a weighted mix of
scores: those scales change with the model, the collection and the query length.

The text list weighs ``TEXT_WEIGHT`` = 2: a text match requires *every* term of the query in
the picture or its name, so when one exists it is almost always what was asked for ("gate
B12" → the boarding pass), and with weight 2 its first match ranks above the embedding's first
hit; descriptive queries ("a dog running on the beach") almost never match every term, and
then the embedding's order is kept exactly.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

K = 60
TEXT_WEIGHT = 2.0
SEMANTIC_WEIGHT = 1.0


@dataclass(frozen=True)
class Fused:
    id: int
    semantic_rank: int | None
    text_rank: int | None

    @property
    def matched(self) -> str:
        if self.semantic_rank is not None and self.text_rank is not None:
            return "both"
        return "text" if self.text_rank is not None else "semantic"


def fuse(semantic: Sequence[int], text: Sequence[int], k: int) -> list[Fused]:
    """The best ``k`` of the two ranked id lists (see the module docstring); ties keep the
    semantic order, then the text order."""
    sem = {ident: n for n, ident in enumerate(semantic, start=1)}
    lex = {ident: n for n, ident in enumerate(text, start=1)}
    order: dict[int, int] = {}
    for ident in [*semantic, *text]:
        order.setdefault(ident, len(order))

    def score(ident: int) -> float:
        total = 0.0
        if ident in sem:
            total += SEMANTIC_WEIGHT / (K + sem[ident])
        if ident in lex:
            total += TEXT_WEIGHT / (K + lex[ident])
        return total

    best = sorted(order, key=lambda i: (-score(i), order[i]))[:k]
    return [Fused(i, sem.get(i), lex.get(i)) for i in best]
