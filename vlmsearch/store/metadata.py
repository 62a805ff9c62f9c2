"""Where metadata (and the vectors themselves) are kept: SQLite (default) or PostgreSQL
(``--db postgresql+psycopg://...``, for collections indexed by a cluster).

The metadata store is the single source of truth of an index. It holds every file with its size,
mtime, content digest, size in pixels, status and error; the vector of every distinct content
(keyed by digest, so moved and duplicate files share one); the text corpus with its vectors; and
the model they were all made with. The FAISS files are derived from it. Each write transaction
takes a new *change sequence number* (``seq``): rows it touches get that number, deletions leave
a tombstone with it, and a FAISS file records the number it reflects, so bringing it up to date
is "apply what changed after that number" (see ``vlmsearch.store.sync``).

The tables are in ``schema``, their upgrades in ``migrations``, connecting and error messages in
``database``, the records passed in and out in ``records``.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from ..errors import IndexFormatError
from ..formats import format_name
from ..ocr import OCR_VERSION, OcrResult
from ..photo_meta import PhotoMeta
from ..places import Place
from .database import create_engine, is_read_only, translate_error
from .lexical import delete_lexical, lexical_rows, write_lexical
from .migrations import migrate
from .pathkeys import PathKeys, platform_mode
from .records import (
    ContentTable,
    Delta,
    FailedFile,
    FileRecord,
    FileState,
    IndexedFile,
    ModelRecord,
    StoreState,
    photo_row,
)
from .schema import FILES, META, OCR, PHOTO_COLUMNS, TEXTS, TOMBSTONES, VECTORS, Kind
from .sql import chunks, execute_in, get_meta, select_in, set_meta, under_conditions, upsert

STREAM_ROWS = 16_384
"""Vectors per chunk when the whole collection is read (FAISS rebuilds): bounded memory."""
_RECORD_COLS = (FILES.c.id, FILES.c.path, FILES.c.width, FILES.c.height, FILES.c.size,
                FILES.c.mtime_ns, FILES.c.digest, FILES.c.status, FILES.c.error,
                *(FILES.c[name] for name in PHOTO_COLUMNS))
_RECORDS_BY_ID = sa.select(*_RECORD_COLS).where(FILES.c.id.in_(sa.bindparam("ids", expanding=True)))
"""Built once: every search reads its results' rows, and building the statement per call cost
more than running it (0.5 ms against 0.33 for ten rows)."""


def _record(row: Any) -> FileRecord:
    meta = PhotoMeta(taken=row.taken, taken_ts=row.taken_ts, camera_make=row.camera_make,
                     camera_model=row.camera_model, lens=row.lens, lat=row.lat, lon=row.lon)
    place = Place(city=row.place_city, metro=row.place_metro, county=row.place_county,
                  region=row.place_region, country=row.place_country,
                  country_code=row.place_cc)
    return FileRecord(row.id, row.path, row.width, row.height, row.size, row.mtime_ns,
                      row.digest, row.status, row.error, meta, place)


class MetadataStore:
    """Metadata and vectors of one index. Thread-compatible: use from one thread at a time."""

    def __init__(self, url: str, *, dim: int) -> None:
        self.url = url
        self.dim = dim
        self.read_only = is_read_only(url)
        self.engine: Engine = create_engine(url)
        try:
            with self.engine.begin() as conn:
                self.upgraded_from = migrate(conn, read_only=self.read_only)
                mode = get_meta(conn, "path_keys").get("path_keys") or platform_mode()
        except (sa.exc.DBAPIError, sa.exc.StatementError) as exc:
            self.engine.dispose()
            raise translate_error(exc, url) from exc
        self.keys = PathKeys(mode)
        """How this index compares paths (:mod:`vlmsearch.store.pathkeys`)."""

    @property
    def dialect(self) -> str:
        """``sqlite`` or ``postgresql``."""
        return str(self.engine.dialect.name)

    def close(self) -> None:
        self.engine.dispose()

    # --- transactions ----------------------------------------------------------------------
    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction: one consistent snapshot for everything done inside."""
        try:
            with self.engine.connect() as conn, conn.begin():
                yield conn
        except (sa.exc.OperationalError, sa.exc.DatabaseError) as exc:
            raise translate_error(exc, self.url) from exc

    @contextmanager
    def write(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction with its new change sequence number."""
        with self._transaction() as conn:
            seq = _get_seq(conn) + 1
            conn.execute(sa.update(META).where(META.c.key == "seq").values(value=str(seq)))
            yield conn, seq

    @contextmanager
    def _transaction(self) -> Iterator[Connection]:
        """A write transaction that changes no vector (so takes no new seq)."""
        try:
            with self.engine.begin() as conn:
                yield conn
        except (sa.exc.OperationalError, sa.exc.DatabaseError) as exc:
            raise translate_error(exc, self.url) from exc

    # --- the model and the change number -----------------------------------------------------
    def state(self, conn: Connection) -> StoreState:
        """Change number, model and pruning marks of the snapshot ``conn``, in one query."""
        rows = conn.execute(sa.select(META.c.key, META.c.value).where(
            META.c.key.in_(("seq", "model_spec", "model_id", "dim", "pruned_image",
                            "pruned_text")))).all()
        meta = {str(k): str(v) for k, v in rows}
        model = None
        if "model_id" in meta:
            model = ModelRecord(meta.get("model_spec", ""), meta["model_id"],
                                int(meta.get("dim", 0)))
        pruned = {k.removeprefix("pruned_"): int(v) for k, v in meta.items()
                  if k.startswith("pruned_")}
        return StoreState(int(meta.get("seq", 0)), model, pruned)

    def model(self) -> ModelRecord | None:
        with self.read() as conn:
            return self.state(conn).model

    def record_model(self, model: ModelRecord) -> None:
        """Write down which model the vectors are made with (indexes from before schema 2
        learn it from their manifest on first open)."""
        with self._transaction() as conn:
            set_meta(conn, model_spec=model.spec, model_id=model.model_id, dim=str(model.dim))

    def seq(self, conn: Connection | None = None) -> int:
        if conn is not None:
            return _get_seq(conn)
        with self.read() as c:
            return _get_seq(c)

    # --- reading ---------------------------------------------------------------------------
    def counts(self) -> dict[str, int]:
        with self.read() as conn:
            by_status: dict[str, int] = dict(
                conn.execute(
                    sa.select(FILES.c.status, sa.func.count()).group_by(FILES.c.status)
                ).all()
            )
            unavailable = conn.execute(
                sa.select(sa.func.count()).select_from(FILES).where(FILES.c.unavailable)
            ).scalar_one()
            texts = conn.execute(sa.select(sa.func.count()).select_from(TEXTS)).scalar_one()
            ok = FILES.c.status == "ok"
            dated, placed, cameras = conn.execute(sa.select(
                sa.func.count(FILES.c.taken_ts), sa.func.count(FILES.c.lat),
                sa.func.count(sa.func.coalesce(FILES.c.camera_model, FILES.c.camera_make)),
            ).where(ok)).one()
            with_text = conn.execute(
                sa.select(sa.func.count()).select_from(
                    FILES.join(OCR, OCR.c.digest == FILES.c.digest))
                .where(ok, OCR.c.text != "")).scalar_one()
            ocr_failed = conn.execute(
                sa.select(sa.func.count()).select_from(OCR).where(OCR.c.status == "failed")
            ).scalar_one()
        return {
            "with_text": int(with_text),
            "ocr_failed": int(ocr_failed),
            "with_date": int(dated),
            "with_position": int(placed),
            "with_camera": int(cameras),
            "images": int(by_status.get("ok", 0)),
            "failed": int(by_status.get("failed", 0)),
            "pending": int(by_status.get("pending", 0)),
            "unavailable": int(unavailable),
            "texts": int(texts),
        }

    def format_counts(self) -> dict[str, int]:
        """Indexed images by format (from each path's extension), most first."""
        counts: Counter[str] = Counter()
        with self.read() as conn:
            rows = conn.execute(sa.select(FILES.c.path).where(FILES.c.status == "ok"))
            for (path,) in rows:
                counts[format_name(path)] += 1
        return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))

    def file_states(self, roots: Sequence[str] | None = None) -> dict[bytes, FileState]:
        """Every known file under ``roots`` (absolute paths; None = all), by path key."""
        cols = (FILES.c.id, FILES.c.path, FILES.c.size, FILES.c.mtime_ns, FILES.c.digest,
                FILES.c.status, FILES.c.unavailable, FILES.c.meta_version, FILES.c.path_key)
        out: dict[bytes, FileState] = {}
        with self.read() as conn:
            for cond in under_conditions(roots, self.keys.key):
                for row in conn.execute(sa.select(*cols).where(cond)):
                    out[bytes(row.path_key)] = FileState(
                        *row[:6], unavailable=bool(row.unavailable),
                        meta_version=int(row.meta_version))
        return out

    def known_digests(self, digests: Iterable[str], conn: Connection | None = None) -> set[str]:
        """Which of ``digests`` have a stored vector."""
        with self._maybe(conn) as c:
            return {str(r.digest) for r in select_in(c, sa.select(VECTORS.c.digest),
                                                     VECTORS.c.digest, set(digests))}

    def records(self, ids: Sequence[int], conn: Connection) -> dict[int, FileRecord]:
        return {r.id: _record(r) for chunk in chunks(list(ids))
                for r in conn.execute(_RECORDS_BY_ID, {"ids": list(chunk)})}

    def record_for_path(self, path: str, conn: Connection | None = None) -> FileRecord | None:
        with self._maybe(conn) as c:
            row = c.execute(sa.select(*_RECORD_COLS).where(
                FILES.c.path_key == self.keys.key(path))).first()
        return _record(row) if row is not None else None

    def texts(self, ids: Sequence[int], conn: Connection) -> dict[int, tuple[str, str | None]]:
        stmt = sa.select(TEXTS.c.id, TEXTS.c.text, TEXTS.c.source)
        return {r.id: (r.text, r.source) for r in select_in(conn, stmt, TEXTS.c.id, ids)}

    def failed_files(self) -> list[FileRecord]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(*_RECORD_COLS).where(FILES.c.status == "failed").order_by(FILES.c.path)
            ).all()
        return [_record(r) for r in rows]

    def unavailable_files(self) -> list[FileRecord]:
        with self.read() as conn:
            rows = conn.execute(
                sa.select(*_RECORD_COLS).where(FILES.c.unavailable).order_by(FILES.c.path)
            ).all()
        return [_record(r) for r in rows]

    def image_vectors(self, ids: Sequence[int], conn: Connection) -> dict[int, np.ndarray]:
        stmt = (sa.select(FILES.c.id, VECTORS.c.vec)
                .join(VECTORS, VECTORS.c.digest == FILES.c.digest)
                .where(FILES.c.status == "ok"))
        return {r.id: self._vec(r.vec) for r in select_in(conn, stmt, FILES.c.id, ids)}

    def contents(self, conn: Connection, *, rows: int = STREAM_ROWS) -> ContentTable:
        """Every indexed file (ok status) with the stored vector and perceptual hash of its
        content, one row per distinct content: what duplicate groups are found from (no file
        is read again)."""
        files = conn.execute(sa.select(FILES.c.id, FILES.c.path, FILES.c.digest)
                             .where(FILES.c.status == "ok", FILES.c.digest.is_not(None))
                             .order_by(FILES.c.path_key)).all()
        position: dict[str, int] = {}
        vec_parts: list[np.ndarray] = []
        hashes: list[int] = []
        known: list[bool] = []
        stmt = sa.select(VECTORS.c.digest, VECTORS.c.vec, VECTORS.c.phash)
        result = conn.execute(stmt.execution_options(yield_per=rows))
        for partition in result.partitions(rows):
            for row in partition:
                position[str(row.digest)] = len(position)
                hashes.append(int(row.phash) if row.phash is not None else 0)
                known.append(row.phash is not None)
            vec_parts.append(np.frombuffer(b"".join(r.vec for r in partition),
                                           dtype=np.float32).reshape(-1, self.dim))
        vectors = (np.concatenate(vec_parts) if vec_parts
                   else np.zeros((0, self.dim), dtype=np.float32))
        kept = [(int(r.id), str(r.path), position[str(r.digest)]) for r in files
                if str(r.digest) in position]
        return ContentTable(
            file_ids=np.array([k[0] for k in kept], dtype=np.int64),
            file_paths=[k[1] for k in kept],
            file_content=np.array([k[2] for k in kept], dtype=np.int64),
            vectors=vectors, hashes=np.array(hashes, dtype=np.int64),
            has_hash=np.array(known, dtype=bool))

    def changes_since(self, kind: Kind, seq: int, conn: Connection) -> Delta:
        """Ids to remove and (ids, vectors) to add to bring a copy at ``seq`` up to date."""
        now = _get_seq(conn)
        dead = conn.execute(
            sa.select(TOMBSTONES.c.item_id).where(TOMBSTONES.c.kind == kind,
                                                  TOMBSTONES.c.seq > seq)
        ).scalars().all()
        changed: Sequence[Any]
        if kind == "image":
            changed = conn.execute(
                sa.select(FILES.c.id, FILES.c.status, VECTORS.c.vec)
                .outerjoin(VECTORS, VECTORS.c.digest == FILES.c.digest)
                .where(FILES.c.seq > seq)
            ).all()
            live = [(r.id, r.vec) for r in changed if r.status == "ok" and r.vec is not None]
        else:
            changed = conn.execute(
                sa.select(TEXTS.c.id, TEXTS.c.vec).where(TEXTS.c.seq > seq)
            ).all()
            live = [(r.id, r.vec) for r in changed]
        removed = np.array(list(dead) + [r.id for r in changed], dtype=np.int64)
        ids, vecs = self._unpack(live)
        return Delta(removed, ids, vecs, now)

    def _live_query(self, kind: Kind) -> sa.Select[Any]:
        if kind == "image":  # in id order: a rebuild reads it twice and needs the same order
            return (sa.select(FILES.c.id, VECTORS.c.vec)
                    .join(VECTORS, VECTORS.c.digest == FILES.c.digest)
                    .where(FILES.c.status == "ok").order_by(FILES.c.id))
        return sa.select(TEXTS.c.id, TEXTS.c.vec).order_by(TEXTS.c.id)

    def iter_vectors(
        self, kind: Kind, conn: Connection, *, rows: int = STREAM_ROWS,
        ids: np.ndarray | None = None,
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Every live (ids, vectors) of ``kind`` in the snapshot ``conn``, ``rows`` at a time,
        so a million vectors never sit in memory at once (or only those of ``ids``)."""
        if ids is not None:
            table = FILES if kind == "image" else TEXTS
            for start in range(0, len(ids), rows):
                part = self._live_query(kind).where(
                    table.c.id.in_([int(i) for i in ids[start:start + rows]]))
                yield self._unpack(conn.execute(part).all())
            return
        result = conn.execute(self._live_query(kind).execution_options(yield_per=rows))
        for partition in result.partitions(rows):
            yield self._unpack(partition)

    def live_ids(self, kind: Kind, conn: Connection) -> np.ndarray:
        if kind == "image":
            q = sa.select(FILES.c.id).where(FILES.c.status == "ok")
        else:
            q = sa.select(TEXTS.c.id)
        return np.fromiter(conn.execute(q).scalars(), dtype=np.int64)

    def count_changed_since(self, kind: Kind, seq: int, conn: Connection) -> int:
        table = FILES if kind == "image" else TEXTS
        changed = conn.execute(
            sa.select(sa.func.count()).select_from(table).where(table.c.seq > seq)
        ).scalar_one()
        dead = conn.execute(
            sa.select(sa.func.count()).select_from(TOMBSTONES)
            .where(TOMBSTONES.c.kind == kind, TOMBSTONES.c.seq > seq)
        ).scalar_one()
        return int(changed) + int(dead)

    def live_count(self, kind: Kind, conn: Connection) -> int:
        if kind == "image":
            q = sa.select(sa.func.count()).select_from(FILES).where(FILES.c.status == "ok")
        else:
            q = sa.select(sa.func.count()).select_from(TEXTS)
        return int(conn.execute(q).scalar_one())

    def _unpack(self, rows: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        vecs = np.empty((len(rows), self.dim), dtype=np.float32)
        for n, row in enumerate(rows):
            vecs[n] = self._vec(row[1])
        return ids, vecs

    def _vec(self, blob: bytes) -> np.ndarray:
        vec = np.frombuffer(blob, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise IndexFormatError(
                f"a stored vector has {vec.size} values, the index expects {self.dim}; "
                "the index is damaged: rebuild it with `vlmsearch index --reindex`"
            )
        return vec

    @contextmanager
    def _maybe(self, conn: Connection | None) -> Iterator[Connection]:
        if conn is not None:
            yield conn
        else:
            with self.read() as c:
                yield c

    # --- writing ---------------------------------------------------------------------------
    def apply(
        self,
        indexed: Sequence[IndexedFile] = (),
        failed: Sequence[FailedFile] = (),
        removed_ids: Sequence[int] = (),
        *,
        unavailable_ids: Sequence[int] = (),
        available_ids: Sequence[int] = (),
        ocr: Sequence[tuple[str, OcrResult]] = (),
    ) -> int:
        """Record one checkpoint of indexing work in a single transaction; returns its seq.

        ``unavailable_ids`` are kept but marked as under a place that could not be listed;
        ``available_ids`` were seen again. Neither changes a vector, so neither moves a row's
        seq (FAISS files need no update for them). ``ocr``: (digest, text read) of contents
        read in this checkpoint; the lexical index of every file concerned follows."""
        now = time.time()
        with self.write() as (conn, seq):
            if ocr:
                self._store_ocr(conn, ocr)
            keys = [self.keys.key(f.path) for f in indexed]
            keys += [self.keys.key(f.path) for f in failed]
            old_digests = {str(r.digest) for r in select_in(
                conn, sa.select(FILES.c.digest), FILES.c.path_key, keys) if r.digest}
            new_vectors = {f.digest: f for f in indexed if f.vector is not None}
            if new_vectors:
                present = self.known_digests(new_vectors, conn)
                rows = [{"digest": d, "vec": np.asarray(f.vector, dtype=np.float32).tobytes(),
                         "phash": f.phash}
                        for d, f in new_vectors.items() if d not in present]
                if rows:
                    conn.execute(sa.insert(VECTORS), rows)
            file_rows = [
                {"path": f.path, "path_key": self.keys.key(f.path), "size": f.size,
                 "mtime_ns": f.mtime_ns, "digest": f.digest,
                 "width": f.width, "height": f.height, "status": "ok", "error": None,
                 "seq": seq, "indexed_at": now, "unavailable": False,
                 **photo_row(f.meta, f.place)}
                for f in indexed
            ] + [
                {"path": f.path, "path_key": self.keys.key(f.path), "size": f.size,
                 "mtime_ns": f.mtime_ns, "digest": None,
                 "width": None, "height": None, "status": "failed", "error": f.error,
                 "seq": seq, "indexed_at": now, "unavailable": False,
                 **photo_row(PhotoMeta(), Place())}
                for f in failed
            ]
            if file_rows:
                upsert(conn, FILES, file_rows, key="path_key")
                self._index_names_and_text(conn, keys=keys)
            if ocr:
                self._index_names_and_text(conn, digests=[d for d, _ in ocr])
            if removed_ids:
                old_digests.update(self._delete_files(conn, list(removed_ids), seq))
            for ids, flag in ((unavailable_ids, True), (available_ids, False)):
                if ids:
                    execute_in(conn, sa.update(FILES).values(unavailable=flag), FILES.c.id, ids)
            self._collect_garbage(conn, old_digests)
        return seq

    def update_photo_meta(self, rows: Sequence[tuple[int, PhotoMeta, Place]]) -> None:
        """Fill in what photos say about themselves for files already indexed (read from
        their headers: no vector changes, so no new seq)."""
        if not rows:
            return
        stmt = sa.update(FILES).where(FILES.c.id == sa.bindparam("file_id")).values(
            {name: sa.bindparam(name) for name in (*PHOTO_COLUMNS, "meta_version")})
        with self._transaction() as conn:
            conn.execute(stmt, [{"file_id": ident, **photo_row(meta, place)}
                                for ident, meta, place in rows])

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Drop files, and everything under folders, from the store; returns how many."""
        with self.write() as (conn, seq):
            ids: set[int] = set()
            for cond in under_conditions(list(paths), self.keys.key):
                ids.update(conn.execute(sa.select(FILES.c.id).where(cond)).scalars())
            digests = self._delete_files(conn, sorted(ids), seq)
            self._collect_garbage(conn, digests)
        return len(ids)

    def _delete_files(self, conn: Connection, ids: list[int], seq: int) -> set[str]:
        rows = list(select_in(conn, sa.select(FILES.c.id, FILES.c.digest), FILES.c.id, ids))
        if rows:
            conn.execute(sa.insert(TOMBSTONES),
                         [{"kind": "image", "item_id": r.id, "seq": seq} for r in rows])
        execute_in(conn, sa.delete(FILES), FILES.c.id, ids)
        delete_lexical(conn, [r.id for r in rows])
        return {str(r.digest) for r in rows if r.digest}

    # --- text read in pictures (--ocr) and the lexical index ---------------------------------
    def _store_ocr(self, conn: Connection, results: Sequence[tuple[str, OcrResult]]) -> None:
        rows = [{"digest": d, "text": r.text, "status": "ok" if r.ok else "failed",
                 "error": r.error, "version": OCR_VERSION} for d, r in results]
        upsert(conn, OCR, rows, key="digest")

    def _index_names_and_text(
        self, conn: Connection, *, keys: Sequence[bytes] = (), digests: Sequence[str] = ()
    ) -> None:
        """Rewrite the lexical rows of the files with these path ``keys`` or ``digests``."""
        stmt = (sa.select(FILES.c.id, FILES.c.path, OCR.c.text)
                .outerjoin(OCR, OCR.c.digest == FILES.c.digest))
        rows = (list(select_in(conn, stmt, FILES.c.path_key, keys)) if keys else [])
        if digests:
            rows += list(select_in(conn, stmt, FILES.c.digest, digests))
        write_lexical(conn, lexical_rows((r.id, r.path, r.text or "") for r in rows))

    def ocr_enabled(self, conn: Connection | None = None) -> bool:
        with self._maybe(conn) as c:
            return get_meta(c, "ocr").get("ocr") == "1"

    def set_ocr_enabled(self, enabled: bool) -> None:
        with self._transaction() as conn:
            set_meta(conn, ocr="1" if enabled else "0")

    def missing_ocr(self, roots: Sequence[str]) -> list[tuple[str, str]]:
        """(digest, a path) of every indexed content under ``roots`` not read yet (indexed
        before ``--ocr`` was turned on, or cut short by a crash), once per digest."""
        out: dict[str, str] = {}
        with self.read() as conn:
            for cond in under_conditions(list(roots), self.keys.key):
                stmt = (sa.select(FILES.c.digest, FILES.c.path)
                        .outerjoin(OCR, OCR.c.digest == FILES.c.digest)
                        .where(cond, FILES.c.status == "ok", OCR.c.digest.is_(None)))
                for row in conn.execute(stmt):
                    out.setdefault(str(row.digest), str(row.path))
        return list(out.items())

    def known_ocr(self, digests: Iterable[str]) -> set[str]:
        """Which of ``digests`` were read already."""
        with self.read() as conn:
            return {str(r.digest) for r in select_in(conn, sa.select(OCR.c.digest),
                                                     OCR.c.digest, set(digests))}

    def texts_read(self, digests: Iterable[str], conn: Connection) -> dict[str, str]:
        """The text read in these contents (only those with text)."""
        stmt = sa.select(OCR.c.digest, OCR.c.text).where(OCR.c.text != "")
        return {str(r.digest): str(r.text) for r in select_in(conn, stmt, OCR.c.digest,
                                                              set(digests))}

    def _collect_garbage(self, conn: Connection, digests: set[str]) -> None:
        """Drop vectors that no file refers to any more."""
        still_used = {str(r.digest) for r in select_in(
            conn, sa.select(FILES.c.digest), FILES.c.digest, digests)}
        execute_in(conn, sa.delete(VECTORS), VECTORS.c.digest, digests - still_used)

    def add_texts(
        self, texts: Sequence[str], digests: Sequence[str], vectors: np.ndarray,
        source: str | None,
    ) -> int:
        """Insert texts not already present (by digest); returns how many were new."""
        with self.write() as (conn, seq):
            present = self.text_digests(digests, conn)
            rows = []
            for text, digest, vec in zip(texts, digests, vectors, strict=True):
                if digest in present:
                    continue
                present.add(digest)
                rows.append({"digest": digest, "text": text, "source": source,
                             "vec": np.asarray(vec, dtype=np.float32).tobytes(), "seq": seq})
            if rows:
                conn.execute(sa.insert(TEXTS), rows)
        return len(rows)

    def text_digests(self, digests: Sequence[str], conn: Connection | None = None) -> set[str]:
        with self._maybe(conn) as c:
            return {str(r.digest) for r in select_in(c, sa.select(TEXTS.c.digest),
                                                     TEXTS.c.digest, digests)}

    def clear_texts(self) -> int:
        with self.write() as (conn, seq):
            ids = conn.execute(sa.select(TEXTS.c.id)).scalars().all()
            if ids:
                conn.execute(sa.insert(TOMBSTONES),
                             [{"kind": "text", "item_id": i, "seq": seq} for i in ids])
            conn.execute(sa.delete(TEXTS))
        return len(ids)

    def texts_for_reembedding(self) -> list[tuple[int, str]]:
        """(id, text) of every text, for re-embedding them with another model."""
        with self.read() as conn:
            return [(int(r.id), str(r.text)) for r in conn.execute(
                sa.select(TEXTS.c.id, TEXTS.c.text).order_by(TEXTS.c.id))]

    def switch_model(self, model: ModelRecord, text_vectors: dict[int, np.ndarray]) -> int:
        """Start over with another model (or the same one, afresh), in one transaction: every
        image vector is dropped and every file becomes *pending* (re-embedded by the next index
        run under its folder, nothing forgotten), texts get ``text_vectors`` (their ids → the
        new model's vectors) and the model is recorded. The FAISS files are then stale by
        design: the pruning marks make every reader reload them. Returns the seq."""
        with self.write() as (conn, seq):
            conn.execute(sa.update(FILES).where(FILES.c.status == "ok").values(
                status="pending", digest=None, seq=seq))
            conn.execute(sa.delete(VECTORS))
            stored = set(conn.execute(sa.select(TEXTS.c.id)).scalars())
            if stored - set(text_vectors):
                raise ValueError("every stored text needs a vector from the new model")
            for ident, vec in text_vectors.items():
                conn.execute(sa.update(TEXTS).where(TEXTS.c.id == ident).values(
                    vec=np.asarray(vec, dtype=np.float32).tobytes(), seq=seq))
            conn.execute(sa.delete(TOMBSTONES))
            set_meta(conn, model_spec=model.spec, model_id=model.model_id,
                     dim=str(model.dim), pruned_image=str(seq), pruned_text=str(seq))
        self.dim = model.dim
        return seq

    def prune_tombstones(self, kind: Kind, seq: int) -> int:
        """Delete the tombstones of ``kind`` up to ``seq``, once the FAISS file reflects them;
        readers holding an older copy see the mark and reload. Returns how many."""
        with self._transaction() as conn:
            done = int(get_meta(conn, f"pruned_{kind}").get(f"pruned_{kind}", 0))
            if seq <= done:
                return 0
            n = conn.execute(sa.delete(TOMBSTONES).where(
                TOMBSTONES.c.kind == kind, TOMBSTONES.c.seq <= seq)).rowcount or 0
            set_meta(conn, **{f"pruned_{kind}": str(seq)})
        return int(n)


def _get_seq(conn: Connection) -> int:
    value = conn.execute(sa.select(META.c.value).where(META.c.key == "seq")).scalar_one_or_none()
    return int(value) if value is not None else 0
