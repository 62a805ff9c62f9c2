"""Where a query is answered: a :class:`SearchRequest` → query vector → FAISS → records.

The searcher reads everything it returns from one store snapshot, so results are consistent
while another process indexes: the FAISS copy is brought up to that snapshot, over-fetched a
little, and ids a writer removed meanwhile are dropped at the join. Every search also checks the
snapshot's model against the one it encodes queries with: after another process re-indexed with
a new model, the engine follows it instead of ranking new vectors with an old model's query.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
from sqlalchemy.engine import Connection

from ..decode import DecodeError, decode_bytes
from ..encoders.loaded import LoadedModel
from ..errors import ImageError, NotInIndexError
from ..sources import absolute
from ..store.lexical import search_lexical, snippet, terms_of
from ..store.opening import IndexHandle
from ..store.records import FileRecord, ModelRecord, StoreState
from ..store.schema import Kind
from .columns import PhotoColumns
from .filters import CheckedFilter, Filter
from .fusion import fuse
from .query_vector import combine
from .request import CheckedRequest, ImageInput, SearchRequest, Target, check_k_and_target
from .results import Hit, SearchResults, TextHit
from .scripts import script_label, unread_scripts

OVERFETCH = 8
"""Extra results asked of FAISS, for ids that a concurrent writer removed meanwhile."""
FUSION_DEPTH = 50
"""How far down each list fusion looks beyond the ``k`` results asked for."""
LEXICAL_LIMIT = 200


class Searcher:
    """Answers searches on one open index. ``model()`` gives the model queries are encoded
    with; ``follow(model)`` is called when the index's database names another one."""

    def __init__(
        self,
        handle: IndexHandle,
        model: Callable[[], LoadedModel],
        follow: Callable[[ModelRecord], None],
        *,
        max_pixels: int,
    ) -> None:
        self.handle = handle
        self._model = model
        self._follow = follow
        self.max_pixels = max_pixels
        self._columns: PhotoColumns | None = None

    def search(self, request: SearchRequest) -> SearchResults[Any]:
        req = request.checked()
        with self.handle.store.read() as conn:
            self.follow_switch(self.handle.store.state(conn))
        if not req.has_query:
            return self._browse(req)
        model = self._model()
        warnings: list[str] = []
        texts = model.texts(need_images=req.image is not None)
        positives: list[np.ndarray] = []
        if req.text is not None:
            positives.append(texts.encode_texts([req.text])[0])
        exclude_path: str | None = None
        if req.image is not None:
            vector, exclude_path = self._image_vector(model, req.image)
            positives.append(vector)
        negatives = list(texts.encode_texts(list(req.negative))) if req.negative else []
        for term in (req.text, *req.negative):
            limit = model.text_token_limit(term) if term else None
            if limit:
                warnings.append(f"the query text is longer than the model reads ({limit} "
                                "tokens); only its beginning was used")
        note = (None if req.match == "text" else  # words looked up in pictures only
                script_warning(" ".join(t for t in (req.text, *req.negative) if t), model.spec))
        if note:
            warnings.append(note)
        with self.handle.store.read() as conn:
            state = self.handle.store.state(conn)
            if self.follow_switch(state):
                return self.search(request)  # the model changed meanwhile: encode again
            exclude: set[int] = set()
            if req.like is not None:
                positives.append(self._stored_vector(req.like, conn))
                if req.target == "images":
                    exclude.add(req.like)
            if exclude_path is not None and req.target == "images":
                rec = self.handle.store.record_for_path(exclude_path, conn)
                if rec is not None:
                    exclude.add(rec.id)
            query = combine(positives, negatives)
            allowed = None
            if not req.where.empty:
                allowed = self._allowed(req.where, conn, state)
            terms = terms_of(req.text) if req.text and req.match != "semantic" else []
            if terms and req.target == "images":
                results = self._fused(req, query, terms, exclude, conn, state, allowed)
            else:
                results = self._nearest(query, req.k, req.target, exclude, conn, state, allowed,
                                        req.min_score)
        if req.sort != "score":
            results = self._dated(results, newest_first=req.sort == "-date")
        results.warnings.extend(warnings)
        return results

    def search_vector(
        self, query: np.ndarray, *, k: int = 10, target: Target = "images",
        exclude_ids: set[int] | None = None, where: Filter | None = None,
    ) -> SearchResults[Any]:
        """Search with a ready query vector (unit length, the index's dim)."""
        check_k_and_target(k, target)
        checked = (where or Filter()).checked()
        with self.handle.store.read() as conn:
            state = self.handle.store.state(conn)
            allowed = None if checked.empty else self._allowed(checked, conn, state)
            return self._nearest(query, k, target, exclude_ids or set(), conn, state, allowed)

    def record(self, ident: int) -> FileRecord:
        """The indexed (status ok) file with this id, or :class:`NotInIndexError`."""
        with self.handle.store.read() as conn:
            record = self.handle.store.records([ident], conn).get(ident)
        if record is None or record.status != "ok":
            raise NotInIndexError(f"no image with id {ident} in this index")
        return record

    # --- the parts ---------------------------------------------------------------------------
    def follow_switch(self, state: StoreState) -> bool:
        """Follow a model switch another process made; True when there was one."""
        recorded = state.model
        if recorded is None or recorded.model_id == self.handle.manifest.model_id:
            return False
        self._follow(recorded)
        self._columns = None
        return True

    def _image_vector(self, model: LoadedModel, image: ImageInput) -> tuple[np.ndarray, str | None]:
        path: str | None = None
        if isinstance(image, bytes):
            data = image
        else:
            path = absolute(image)
            try:
                with open(path, "rb") as fh:
                    data = fh.read()
            except OSError as exc:
                raise ImageError(
                    f"cannot read the query image {path}: {exc.strerror or exc}"
                ) from exc
        encoder = model.full
        try:
            decoded = decode_bytes(data, encoder.image_spec, max_pixels=self.max_pixels)
        except DecodeError as exc:
            where = f" {path}" if path else ""
            raise ImageError(f"the query image{where} cannot be used: {exc.reason}") from exc
        return encoder.encode_images(decoded.pixels[None])[0], path

    def _stored_vector(self, ident: int, conn: Connection) -> np.ndarray:
        vector = self.handle.store.image_vectors([ident], conn).get(ident)
        if vector is None:
            raise NotInIndexError(f"no image with id {ident} in this index")
        return vector

    def _matching(self, where: CheckedFilter, conn: Connection, state: StoreState
                  ) -> np.ndarray:
        """Ids of the images matching ``where`` in the snapshot ``conn``."""
        if self._columns is None:
            self._columns = PhotoColumns()
        self._columns.refresh(self.handle.store, conn, state)
        return self._columns.matches(where)

    def _allowed(self, where: CheckedFilter, conn: Connection, state: StoreState
                 ) -> np.ndarray | None:
        """The ids a search may return, or None when ``where`` keeps every live image: the
        search is then the unfiltered one, without the cost of a selector."""
        ids = self._matching(where, conn, state)
        assert self._columns is not None
        return None if len(ids) == self._columns.live_count() else ids

    def _browse(self, req: CheckedRequest) -> SearchResults[Any]:
        """A filter alone: its matches in date order, ``k`` of them."""
        with self.handle.store.read() as conn:
            state = self.handle.store.state(conn)
            ids = self._matching(req.where, conn, state)
            assert self._columns is not None
            ordered = self._columns.by_date(ids, newest_first=req.sort == "-date")
            recs = self.handle.store.records([int(i) for i in ordered[:req.k + OVERFETCH]],
                                             conn)
        live = [recs[int(i)] for i in ordered[:req.k + OVERFETCH]
                if int(i) in recs and recs[int(i)].status == "ok"][:req.k]
        return SearchResults([Hit.of(n + 1, None, r) for n, r in enumerate(live)])

    def _dated(self, results: SearchResults[Any], *, newest_first: bool) -> SearchResults[Any]:
        """The same hits ordered by date taken (undated last), ranks renumbered."""
        def key(hit: Hit) -> tuple[bool, str]:
            return (hit.taken is None, hit.taken or "")

        dated = sorted((h for h in results if h.taken), key=key, reverse=newest_first)
        ordered = dated + [h for h in results if not h.taken]
        return SearchResults([replace(h, rank=n + 1) for n, h in enumerate(ordered)],
                             results.warnings)

    def _fused(
        self, req: CheckedRequest, query: np.ndarray, terms: list[str], exclude: set[int],
        conn: Connection, state: StoreState, allowed: np.ndarray | None,
    ) -> SearchResults[Any]:
        """Semantic and text matches in one ranking (:mod:`vlmsearch.search.fusion`), or the
        text matches alone (``--match text``)."""
        store = self.handle.store
        depth = req.k + FUSION_DEPTH
        semantic: list[tuple[float, int]] = []
        if req.match == "both":
            semantic = self._nearest_pairs(query, depth, "images", exclude, conn, state,
                                           allowed, req.min_score)
        found = [i for i in search_lexical(conn, terms, LEXICAL_LIMIT) if i not in exclude]
        if allowed is not None:
            matching = set(allowed.tolist())
            found = [i for i in found if i in matching]
        fused = fuse([i for _, i in semantic], found, depth)
        recs = store.records([f.id for f in fused], conn)
        fused = [f for f in fused if f.id in recs and recs[f.id].status == "ok"][:req.k]
        scores = {i: s for s, i in semantic}
        unscored = [f.id for f in fused if f.id not in scores]
        for ident, vec in store.image_vectors(unscored, conn).items():
            scores[ident] = float(vec @ query)
        texts = store.texts_read({recs[f.id].digest or "" for f in fused if f.text_rank},
                                 conn)
        hits = []
        for n, f in enumerate(fused):
            rec = recs[f.id]
            piece, spans = (snippet(texts[rec.digest], terms)
                            if f.text_rank and rec.digest in texts else (None, []))
            hits.append(replace(Hit.of(n + 1, scores.get(f.id), rec), matched=f.matched,
                                ocr=piece if spans else None,
                                ocr_spans=tuple(spans) if spans else None))
        return SearchResults(hits)

    def _nearest_pairs(
        self, query: np.ndarray, k: int, target: Target, exclude: set[int], conn: Connection,
        state: StoreState, allowed: np.ndarray | None = None, min_score: float | None = None,
    ) -> list[tuple[float, int]]:
        """(score, id) of the nearest ``k``-ish items (over-fetched; not yet joined)."""
        kind: Kind = "image" if target == "images" else "text"
        index, _ = self.handle.vectors.current(kind, conn, state=state)
        if index.count == 0:
            return []
        if allowed is not None and exclude:
            allowed = allowed[~np.isin(allowed, np.fromiter(exclude, dtype=np.int64))]
        scores, ids = index.search(query.reshape(1, -1), k + len(exclude) + OVERFETCH,
                                   allowed=allowed)
        return [(float(s), int(i)) for s, i in zip(scores[0], ids[0], strict=True)
                if i >= 0 and int(i) not in exclude
                and (min_score is None or float(s) >= min_score)]

    def _nearest(
        self, query: np.ndarray, k: int, target: Target, exclude: set[int], conn: Connection,
        state: StoreState, allowed: np.ndarray | None = None, min_score: float | None = None,
    ) -> SearchResults[Any]:
        pairs = self._nearest_pairs(query, k, target, exclude, conn, state, allowed, min_score)
        store = self.handle.store
        if target == "images":
            # the first k rows, then the over-fetched rest only if some of those are gone
            recs = store.records([i for _, i in pairs[:k]], conn)
            live = [(s, recs[i]) for s, i in pairs if i in recs and recs[i].status == "ok"]
            if len(live) < k and len(pairs) > k:
                recs.update(store.records([i for _, i in pairs[k:]], conn))
                live = [(s, recs[i]) for s, i in pairs if i in recs and recs[i].status == "ok"]
            live = live[:k]
            return SearchResults([replace(Hit.of(n + 1, s, r), matched="semantic")
                                  for n, (s, r) in enumerate(live)])
        texts = store.texts([i for _, i in pairs], conn)
        found = [(s, i) for s, i in pairs if i in texts][:k]
        return SearchResults([TextHit(n + 1, s, texts[i][0], i, texts[i][1])
                              for n, (s, i) in enumerate(found)])


def script_warning(text: str, spec: str) -> str | None:
    """A note when ``text`` is written in a script that model ``spec`` was not trained for,
    naming one that was (see :mod:`vlmsearch.search.scripts`)."""
    if not text:
        return None
    from ..models_catalog import model_for_scripts, model_languages

    languages = model_languages(spec)
    if not languages:
        return None
    unread = unread_scripts(text, languages)
    if not unread:
        return None
    what = " and ".join(script_label(s) for s in unread)
    better = model_for_scripts(unread)
    tail = (f"; an index made with --model {better} understands it" if better and better != spec
            else "")
    return (f"the query is in {what}, which this index's model ({spec}, trained on "
            f"{', '.join(languages)}) was not trained for, so the results may be unrelated{tail}")
