"""What a search asks for, checked once before any model or index work."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from .filters import CheckedFilter, Filter, check_sort

Target = Literal["images", "texts"]
ImageInput = str | os.PathLike[str] | bytes
TARGETS: tuple[Target, ...] = ("images", "texts")
MATCHES = ("semantic", "text", "both")


@dataclass(frozen=True)
class SearchRequest:
    """One query. Any mix of ``text``, ``image`` (a file's path or its bytes) and ``like``
    (the id of an indexed image: "more like this"); ``negative`` texts push results away; ``k``
    results of ``target`` (images, or the texts added with ``add-texts``).

    ``where`` keeps only images matching a :class:`~vlmsearch.search.filters.Filter` (alone,
    with no text or image, it browses the matches by date); ``sort`` orders the results by
    ``score`` (the default with a query), ``date`` (oldest first; the default without one) or
    ``-date``; ``min_score`` drops results scoring below it. ``match``: ``both`` (default)
    ranks the images whose pictures or file names contain every word of ``text`` together
    with the embedding's results; ``semantic`` uses the embedding only; ``text`` the words
    only."""

    text: str | None = None
    image: ImageInput | None = None
    like: int | None = None
    negative: tuple[str, ...] = ()
    k: int = 10
    target: Target = "images"
    where: Filter | None = None
    sort: str | None = None
    min_score: float | None = None
    match: str = "both"

    def checked(self) -> CheckedRequest:
        """This request in the searcher's terms (blank ``--not`` terms dropped, the filter
        checked), or a :class:`UsageError` saying what to change."""
        check_k_and_target(self.k, self.target)
        if self.text is not None and not self.text.strip():
            raise UsageError("the query text is empty; type some words to search for")
        if self.image is not None and self.like is not None:
            raise UsageError("search with an image or with an indexed one (like), not both")
        where = (self.where or Filter()).checked()
        has_query = self.text is not None or self.image is not None or self.like is not None
        if not has_query and where.empty:
            raise UsageError("give a TEXT to search for, an --image, an indexed image to search "
                             "like, a filter (--after, --place, ...), or a mix (--not alone is "
                             "not a query)")
        if not where.empty and self.target != "images":
            raise UsageError("filters select images; they do not apply to --target texts")
        if not has_query and self.negative:
            raise UsageError("--not pushes a query away from a concept: give a TEXT or an "
                             "--image too")
        sort = check_sort(self.sort or ("score" if has_query else "date"))
        if sort == "score" and not has_query:
            raise UsageError("--sort score needs a TEXT or an --image to score against; sort "
                             "a filter's matches by date or -date")
        if self.match not in MATCHES:
            raise UsageError(f"unknown --match {self.match!r}: use semantic, text or both")
        if self.match == "text" and self.text is None:
            raise UsageError("--match text looks for the words of a TEXT query in pictures and "
                             "file names: give a TEXT")
        if self.min_score is not None and not -1.0 <= self.min_score <= 1.0:
            raise UsageError(f"--min-score {self.min_score:g}: scores are cosine similarities, "
                             "between -1 and 1")
        return CheckedRequest(self.text, self.image, self.like,
                              tuple(n for n in self.negative if n.strip()), self.k,
                              self.target, where, sort, self.min_score, self.match)


@dataclass(frozen=True)
class CheckedRequest:
    """A :class:`SearchRequest` that passed :meth:`SearchRequest.checked`."""

    text: str | None
    image: ImageInput | None
    like: int | None
    negative: tuple[str, ...]
    k: int
    target: Target
    where: CheckedFilter
    sort: str
    min_score: float | None
    match: str

    @property
    def has_query(self) -> bool:
        return self.text is not None or self.image is not None or self.like is not None


def check_k_and_target(k: int, target: str) -> None:
    if not isinstance(k, int) or k < 1:
        raise UsageError(f"the number of results must be at least 1 (got {k})")
    if target not in TARGETS:
        raise UsageError(f"unknown --target {target!r}: use images or texts")
