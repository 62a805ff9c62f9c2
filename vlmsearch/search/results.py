"""What a search returns."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any, Generic, TypeVar

from ..store.records import FileRecord


@dataclass(frozen=True)
class Hit:
    """One image result. ``score`` is a cosine similarity (see
    :mod:`vlmsearch.search.query_vector`); None when a filter alone was asked for.
    ``taken`` (ISO 8601, the photo's own date), ``camera``, ``place`` (a short name of where
    it was taken) and ``lat``/``lon`` are what the photo says about itself, or None. A text
    match has its semantic score too (its cosine similarity to the query)."""

    rank: int
    score: float | None
    path: str
    id: int
    width: int | None
    height: int | None
    taken: str | None = None
    camera: str | None = None
    place: str | None = None
    lat: float | None = None
    lon: float | None = None
    matched: str | None = None
    """How the image was found: ``semantic`` (the embedding), ``text`` (the words of the query
    are in the picture or its file name), ``both``; None when a filter alone was asked for."""
    ocr: str | None = None
    """The piece of text read in the picture that the query's words matched (or None)."""
    ocr_spans: tuple[tuple[int, int], ...] | None = None
    """[start, end) of each matched word within ``ocr``, for highlighting."""

    @classmethod
    def of(cls, rank: int, score: float | None, record: FileRecord) -> Hit:
        meta = record.meta
        return cls(rank, score, record.path, record.id, record.width, record.height,
                   meta.taken, meta.camera, record.place.label, meta.lat, meta.lon)

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
