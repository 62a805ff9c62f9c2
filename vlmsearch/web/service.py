"""What the web layer asks of the engine, without any HTTP: one lock, one engine.

:class:`SearchService` is the only place the web package touches :class:`~vlmsearch.Engine`.
The engine is not thread-safe (its FAISS cache and the lazily loaded model are shared state)
and FastAPI runs plain ``def`` endpoints in a thread pool, so every engine call here holds
``self.lock``. Thumbnail making (decoding, resizing) happens outside the lock, so a page full
of new thumbnails does not hold up searches.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from ..engine import Engine
from ..errors import UsageError
from ..search.filters import Filter
from ..store.records import FileRecord
from .thumbnails import ThumbnailCache

Target = Literal["images", "texts"]


@dataclass(frozen=True)
class SearchResult:
    """Results, exactly as :meth:`Hit.to_dict` / :meth:`TextHit.to_dict` give them, and the
    search's warnings."""

    results: list[dict[str, Any]]
    seconds: float
    target: Target
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "count": len(self.results),
                "seconds": round(self.seconds, 4), "target": self.target,
                "warnings": self.warnings}


class SearchService:
    """Searches, stats, indexed-file lookup and thumbnails for one open engine."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.lock = threading.Lock()
        self.thumbnails = ThumbnailCache(engine.path / "thumbs",
                                         max_pixels=engine.settings.max_pixels)

    def warm_up(self) -> None:
        """Load the model now rather than on the first query."""
        with self.lock:
            self.engine.warm_up()

    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        like: int | None = None,
        negative: Sequence[str] = (),
        k: int = 10,
        target: Target = "images",
        where: Filter | None = None,
        sort: str | None = None,
        min_score: float | None = None,
        match: str = "both",
    ) -> SearchResult:
        """Search by any mix of text, uploaded image bytes and an indexed image's id
        (``like``: "more like this"), narrowed by ``where``; the parts are combined as
        :mod:`vlmsearch.search` describes. The ``like`` image itself is left out of image
        results."""
        text = text if text and text.strip() else None
        if text is None and image is None and like is None and (where is None or where.empty):
            raise UsageError("give words to search for (q), an image, an indexed image id "
                             "(like), or a filter (after, before, in, camera, place, near, type)")
        start = time.perf_counter()
        with self.lock:
            hits = self.engine.search(text=text, image=image, like=like, negative=negative,
                                      k=k, target=target, where=where, sort=sort,
                                      min_score=min_score, match=match)
        return SearchResult([h.to_dict() for h in hits], time.perf_counter() - start, target,
                            list(hits.warnings))

    def info(self) -> dict[str, Any]:
        """The same fields as ``vlmsearch info --json``."""
        with self.lock:
            return self.engine.info().to_dict()

    def duplicates(self, *, similar: bool = False, min_score: float | None = None
                   ) -> dict[str, Any]:
        """Duplicate groups as ``vlmsearch duplicates --json`` lists them."""
        start = time.perf_counter()
        with self.lock:
            groups = self.engine.duplicates(similar=similar, min_score=min_score)
        return {"groups": [g.to_dict() for g in groups], "count": len(groups),
                "seconds": round(time.perf_counter() - start, 4)}

    def record(self, ident: int) -> FileRecord:
        """The indexed (status ok) file with this id, or :class:`NotInIndexError`."""
        with self.lock:
            return self.engine.record(ident)

    def thumbnail(self, ident: int) -> tuple[FileRecord, Path | bytes]:
        """The record of image ``ident`` and its thumbnail (a cached path, or JPEG bytes)."""
        record = self.record(ident)
        return record, self.thumbnails.get(ident, record.path, record.digest)

    def index(self, paths: Sequence[str], exclude: Sequence[str] = (), **options: Any
              ) -> dict[str, Any]:
        """Index ``paths`` (``--allow-indexing`` only), with :meth:`Engine.index`'s
        ``options``. Searches wait while it runs."""
        with self.lock:
            report = self.engine.index(paths, exclude=exclude, **options)
        data = report.to_dict()
        data["index"] = str(self.engine.path)
        return data
