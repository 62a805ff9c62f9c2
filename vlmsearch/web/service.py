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

import numpy as np

from ..engine import Engine
from ..errors import UsageError, VlmsearchError
from ..searcher import combine
from ..store.metadata import FileRecord
from .thumbnails import ThumbnailCache

Target = Literal["images", "texts"]


class NotInIndexError(VlmsearchError):
    """An id that names no indexed image (the web layer answers 404)."""


@dataclass(frozen=True)
class SearchResult:
    """Results, exactly as :meth:`Hit.to_dict` / :meth:`TextHit.to_dict` give them."""

    results: list[dict[str, Any]]
    seconds: float
    target: Target

    def to_dict(self) -> dict[str, Any]:
        return {"results": self.results, "count": len(self.results),
                "seconds": round(self.seconds, 4), "target": self.target}


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
            _ = self.engine.encoder.dim

    def search(
        self,
        *,
        text: str | None = None,
        image: bytes | None = None,
        like: int | None = None,
        negative: Sequence[str] = (),
        k: int = 10,
        target: Target = "images",
    ) -> SearchResult:
        """Search by any mix of text, uploaded image bytes and an indexed image's id
        (``like``: "more like this"); the parts are combined as :mod:`vlmsearch.searcher`
        describes. The ``like`` image itself is left out of the results."""
        text = text if text and text.strip() else None
        if text is None and image is None and like is None:
            raise UsageError("give words to search for (q), an image, or an indexed image id "
                             "(like)")
        if image is not None and like is not None:
            raise UsageError("search with an uploaded image or with an indexed one (like), not "
                             "both")
        start = time.perf_counter()
        with self.lock:
            if like is None:
                hits = self.engine.search(text=text, image=image, negative=negative, k=k,
                                          target=target)
            else:
                hits = self._search_like(like, text, negative, k, target)
        return SearchResult([h.to_dict() for h in hits], time.perf_counter() - start, target)

    def _search_like(
        self, like: int, text: str | None, negative: Sequence[str], k: int, target: Target
    ) -> list[Any]:
        record = self._record(like)
        vector = self.engine.image_vector(like)
        if vector is None:
            raise NotInIndexError(f"image {like} has no vector in this index; re-index it")
        if k < 1:
            raise UsageError(f"the number of results must be at least 1 (got {k})")
        positives: list[np.ndarray] = [vector]
        if text is not None:
            positives.append(self.engine.encoder.encode_texts([text])[0])
        negative = [n for n in negative if n.strip()]
        negatives = list(self.engine.encoder.encode_texts(negative)) if negative else []
        query = combine(positives, negatives)
        # Leave the picture out of its own image results. Not for texts: search_vector would
        # drop the *text* whose id happens to equal the image's id.
        exclude = record.path if target == "images" else None
        return self.engine.search_vector(query, k=k, target=target, exclude_path=exclude)

    def info(self) -> dict[str, Any]:
        """The same fields as ``vlmsearch info --json``."""
        with self.lock:
            return self.engine.info().to_dict()

    def record(self, ident: int) -> FileRecord:
        """The indexed (status ok) file with this id, or :class:`NotInIndexError`."""
        with self.lock:
            return self._record(ident)

    def _record(self, ident: int) -> FileRecord:
        with self.engine.store.read() as conn:
            record = self.engine.store.records([ident], conn).get(ident)
        if record is None or record.status != "ok":
            raise NotInIndexError(f"no image with id {ident} in this index")
        return record

    def thumbnail(self, ident: int) -> tuple[FileRecord, Path | bytes]:
        """The record of image ``ident`` and its thumbnail (a cached path, or JPEG bytes)."""
        record = self.record(ident)
        return record, self.thumbnails.get(ident, record.path, record.digest)

    def index(self, paths: Sequence[str], exclude: Sequence[str] = ()) -> dict[str, Any]:
        """Index ``paths`` (``--allow-indexing`` only). Searches wait while it runs."""
        with self.lock:
            report = self.engine.index(paths, exclude=exclude)
        data = report.to_dict()
        data["index"] = str(self.engine.path)
        return data
