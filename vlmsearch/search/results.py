"""What a search returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar


@dataclass(frozen=True)
class Hit:
    """One image result. ``score`` is a cosine similarity (see
    :mod:`vlmsearch.search.query_vector`)."""

    rank: int
    score: float
    path: str
    id: int
    width: int | None
    height: int | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TextHit:
    """One text result of an image→text query."""

    rank: int
    score: float
    text: str
    id: int
    source: str | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


H = TypeVar("H", bound="Hit | TextHit")


class SearchResults(list[H], Generic[H]):
    """The hits of one search, best first: a plain list, plus ``warnings``, lines meant for
    the person who asked (a query cut to the model's text length, a language the model was not
    trained for). The CLI prints them as notes, the web page shows them."""

    def __init__(self, hits: Iterable[H] = (), warnings: Iterable[str] = ()) -> None:
        super().__init__(hits)
        self.warnings: list[str] = list(warnings)
