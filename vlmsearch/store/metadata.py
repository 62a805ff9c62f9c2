"""Where metadata (and the vectors themselves) are kept: SQLAlchemy 2.0 over SQLite (default)
or PostgreSQL (``--db postgresql+psycopg://...``, for collections indexed by a cluster).

The metadata store is the single source of truth of an index. It holds every file with its size,
mtime, content digest, size in pixels, status and error; the vector of every distinct content
(keyed by digest, so moved and duplicate files share one); and the text corpus with its vectors.
The FAISS file is derived from it. Each write transaction takes a new *change sequence number*
(``seq``): rows it touches get that number, deletions leave a tombstone with it, and the FAISS
file records the number it reflects, so bringing it up to date is "apply what changed after
that number" (see ``vlmsearch.store.sync``).

SQLite runs in WAL mode with explicit ``BEGIN``, so readers see a consistent snapshot while one
writer commits, and a crash loses at most the transaction in progress. PostgreSQL runs every
transaction at REPEATABLE READ for the same snapshot guarantee; its ids come from sequences
(64-bit there), which never hand out an id twice, like SQLite's AUTOINCREMENT.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

from ..errors import IndexFormatError, StorageError, UsageError

SCHEMA_VERSION = 1
Kind = Literal["image", "text"]
# 64-bit ids on PostgreSQL (a billion-image index with churn outgrows 2**31); SQLite keeps
# INTEGER PRIMARY KEY, its 64-bit rowid, which AUTOINCREMENT needs.
_Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class FsPath(TypeDecorator[str]):
    """A file system path stored as its raw bytes, so names that are not valid UTF-8 survive
    the round trip (and byte-wise order makes "everything under this folder" a range query)."""

    impl = sa.LargeBinary
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> bytes | None:
        return None if value is None else os.fsencode(value)

    def process_result_value(self, value: bytes | None, dialect: Any) -> str | None:
        return None if value is None else os.fsdecode(bytes(value))


class Base(DeclarativeBase):
    pass


class MetaRow(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class FileRow(Base):
    """One image file. Its ``id`` is its id in the FAISS index."""

    __tablename__ = "files"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012
    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    size: Mapped[int] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int] = mapped_column(sa.BigInteger)
    digest: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(8))  # "ok" | "failed"
    error: Mapped[str | None] = mapped_column(sa.Text)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    indexed_at: Mapped[float] = mapped_column(sa.Float)


class VectorRow(Base):
    """The image vector of one distinct file content."""

    __tablename__ = "vectors"
    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    vec: Mapped[bytes] = mapped_column(sa.LargeBinary)


class TextRow(Base):
    """One text of the corpus searched by image→text queries; its ``id`` is its FAISS id."""

    __tablename__ = "texts"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012
    id: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    text: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str | None] = mapped_column(sa.Text)
    vec: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)


class Tombstone(Base):
    """A deleted id, so a stale FAISS file can drop it."""

    __tablename__ = "tombstones"
    rowid: Mapped[int] = mapped_column(_Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    item_id: Mapped[int] = mapped_column(sa.BigInteger)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)


FILES: sa.Table = FileRow.__table__  # type: ignore[assignment]
VECTORS: sa.Table = VectorRow.__table__  # type: ignore[assignment]
TEXTS: sa.Table = TextRow.__table__  # type: ignore[assignment]
TOMBSTONES: sa.Table = Tombstone.__table__  # type: ignore[assignment]
META: sa.Table = MetaRow.__table__  # type: ignore[assignment]


# --- records passed in and out ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FileState:
    """What the store knows of one path, for incremental decisions."""

    id: int
    path: str
    size: int
    mtime_ns: int
    digest: str | None
    status: str


@dataclass(frozen=True, slots=True)
class IndexedFile:
    path: str
    size: int
    mtime_ns: int
    digest: str
    width: int
    height: int
    vector: np.ndarray | None
    """None when the digest already has a vector in the store (moved or duplicate file)."""


@dataclass(frozen=True, slots=True)
class FailedFile:
    path: str
    size: int
    mtime_ns: int
    error: str


@dataclass(frozen=True)
class FileRecord:
    id: int
    path: str
    width: int | None
    height: int | None
    size: int
    mtime_ns: int
    digest: str | None
    status: str
    error: str | None


@dataclass(frozen=True)
class Delta:
    """What changed after a sequence number: ids to drop, then (ids, vectors) to add."""

    removed: np.ndarray
    added_ids: np.ndarray
    added_vectors: np.ndarray
    seq: int


# --- migrations --------------------------------------------------------------------------------
def _migrate_to_1(conn: Connection) -> None:
    Base.metadata.create_all(conn)


MIGRATIONS = {1: _migrate_to_1}
"""Numbered schema steps; step N upgrades a database at version N-1 to version N."""


def sqlite_url(path: str | os.PathLike[str], *, read_only: bool = False) -> str:
    """SQLAlchemy URL of a SQLite file. ``read_only`` opens it immutable, for index folders
    this process cannot write (SQLite could not even create its WAL index there)."""
    if read_only:
        from urllib.parse import quote

        return f"sqlite:///file:{quote(os.fspath(path))}?mode=ro&immutable=1&uri=true"
    return f"sqlite:///{os.fspath(path)}"


def public_url(url: str) -> str:
    """``url`` without its password (what an index folder records; libpq reads the password
    from ``PGPASSWORD`` or ``~/.pgpass``)."""
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as exc:
        raise UsageError(
            f"invalid database URL {url!r}: use postgresql+psycopg://USER@HOST:PORT/DBNAME"
        ) from exc
    bare = sa.engine.URL.create(parsed.drivername, username=parsed.username, host=parsed.host,
                                port=parsed.port, database=parsed.database, query=parsed.query)
    return bare.render_as_string(hide_password=False)


class MetadataStore:
    """Metadata and vectors of one index. Thread-compatible: use from one thread at a time."""

    def __init__(self, url: str, *, dim: int) -> None:
        self.url = url
        self.dim = dim
        self.read_only = "mode=ro" in url
        self.engine: Engine = _create_engine(url)
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        self._migrate()

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
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self) -> Iterator[tuple[Connection, int]]:
        """A write transaction with its new change sequence number."""
        try:
            with self.engine.begin() as conn:
                seq = _get_seq(conn) + 1
                conn.execute(sa.update(META).where(META.c.key == "seq").values(value=str(seq)))
                yield conn, seq
        except sa.exc.OperationalError as exc:
            raise _storage_error(exc, self.url) from exc

    def _migrate(self) -> None:
        try:
            with self.engine.begin() as conn:
                insp = sa.inspect(conn)
                version = 0
                if insp.has_table("meta"):
                    row = conn.execute(
                        sa.select(META.c.value).where(META.c.key == "schema_version")
                    ).scalar_one_or_none()
                    version = int(row) if row is not None else 0
                if self.read_only and version < SCHEMA_VERSION:
                    raise IndexFormatError(
                        f"this index uses an older metadata schema ({version}) and its folder is "
                        "read-only; open it once from an account that can write to it"
                    )
                if version > SCHEMA_VERSION:
                    raise IndexFormatError(
                        f"this index uses metadata schema {version}, newer than this vlmsearch "
                        f"understands ({SCHEMA_VERSION}); upgrade vlmsearch "
                        "(pip install -U vlmsearch)"
                    )
                for step in range(version + 1, SCHEMA_VERSION + 1):
                    MIGRATIONS[step](conn)
                    _set_meta(conn, "schema_version", str(step))
                if version == 0:
                    _set_meta(conn, "seq", "0")
        except sa.exc.OperationalError as exc:
            raise _storage_error(exc, self.url) from exc

    # --- reading ---------------------------------------------------------------------------
    def seq(self, conn: Connection | None = None) -> int:
        if conn is not None:
            return _get_seq(conn)
        with self.read() as c:
            return _get_seq(c)

    def counts(self) -> dict[str, int]:
        with self.read() as conn:
            by_status: dict[str, int] = dict(
                conn.execute(
                    sa.select(FILES.c.status, sa.func.count()).group_by(FILES.c.status)
                ).all()
            )
            texts = conn.execute(sa.select(sa.func.count()).select_from(TEXTS)).scalar_one()
        return {
            "images": int(by_status.get("ok", 0)),
            "failed": int(by_status.get("failed", 0)),
            "texts": int(texts),
        }

    def file_states(self, roots: Sequence[str] | None = None) -> dict[str, FileState]:
        """Every known file under ``roots`` (absolute paths; None = all), by path."""
        cols = (FILES.c.id, FILES.c.path, FILES.c.size, FILES.c.mtime_ns, FILES.c.digest,
                FILES.c.status)
        out: dict[str, FileState] = {}
        with self.read() as conn:
            for cond in _under_conditions(roots):
                for row in conn.execute(sa.select(*cols).where(cond)):
                    out[row.path] = FileState(*row)
        return out

    def known_digests(self, digests: Iterable[str], conn: Connection | None = None) -> set[str]:
        wanted = list(set(digests))
        found: set[str] = set()
        with _maybe(self, conn) as c:
            for chunk in _chunks(wanted, 500):
                found.update(
                    c.execute(sa.select(VECTORS.c.digest).where(VECTORS.c.digest.in_(chunk)))
                    .scalars()
                )
        return found

    def records(self, ids: Sequence[int], conn: Connection) -> dict[int, FileRecord]:
        out: dict[int, FileRecord] = {}
        cols = (FILES.c.id, FILES.c.path, FILES.c.width, FILES.c.height, FILES.c.size,
                FILES.c.mtime_ns, FILES.c.digest, FILES.c.status, FILES.c.error)
        for chunk in _chunks(list(ids), 500):
            for row in conn.execute(sa.select(*cols).where(FILES.c.id.in_(chunk))):
                out[row.id] = FileRecord(*row)
        return out

    def record_for_path(self, path: str, conn: Connection | None = None) -> FileRecord | None:
        cols = (FILES.c.id, FILES.c.path, FILES.c.width, FILES.c.height, FILES.c.size,
                FILES.c.mtime_ns, FILES.c.digest, FILES.c.status, FILES.c.error)
        with _maybe(self, conn) as c:
            row = c.execute(sa.select(*cols).where(FILES.c.path == path)).first()
        return FileRecord(*row) if row is not None else None

    def texts(self, ids: Sequence[int], conn: Connection) -> dict[int, tuple[str, str | None]]:
        out: dict[int, tuple[str, str | None]] = {}
        for chunk in _chunks(list(ids), 500):
            q = sa.select(TEXTS.c.id, TEXTS.c.text, TEXTS.c.source).where(TEXTS.c.id.in_(chunk))
            for row in conn.execute(q):
                out[row.id] = (row.text, row.source)
        return out

    def failed_files(self) -> list[FileRecord]:
        cols = (FILES.c.id, FILES.c.path, FILES.c.width, FILES.c.height, FILES.c.size,
                FILES.c.mtime_ns, FILES.c.digest, FILES.c.status, FILES.c.error)
        with self.read() as conn:
            rows = conn.execute(
                sa.select(*cols).where(FILES.c.status == "failed").order_by(FILES.c.path)
            ).all()
        return [FileRecord(*r) for r in rows]

    def image_vectors(self, ids: Sequence[int], conn: Connection) -> dict[int, np.ndarray]:
        out: dict[int, np.ndarray] = {}
        for chunk in _chunks(list(ids), 500):
            q = (
                sa.select(FILES.c.id, VECTORS.c.vec)
                .join(VECTORS, VECTORS.c.digest == FILES.c.digest)
                .where(FILES.c.id.in_(chunk), FILES.c.status == "ok")
            )
            for row in conn.execute(q):
                out[row.id] = self._vec(row.vec)
        return out

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
        return self._delta(removed, live, now)

    def all_vectors(self, kind: Kind, conn: Connection) -> Delta:
        """Everything, as a delta from an empty index (used to rebuild the FAISS file)."""
        now = _get_seq(conn)
        if kind == "image":
            q = (
                sa.select(FILES.c.id, VECTORS.c.vec)
                .join(VECTORS, VECTORS.c.digest == FILES.c.digest)
                .where(FILES.c.status == "ok")
            )
        else:
            q = sa.select(TEXTS.c.id, TEXTS.c.vec)
        live = [(r.id, r.vec) for r in conn.execute(q)]
        return self._delta(np.zeros(0, dtype=np.int64), live, now)

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

    def _delta(self, removed: np.ndarray, live: list[tuple[int, bytes]], seq: int) -> Delta:
        ids = np.fromiter((i for i, _ in live), dtype=np.int64, count=len(live))
        vecs = np.empty((len(live), self.dim), dtype=np.float32)
        for row, (_, blob) in enumerate(live):
            vecs[row] = self._vec(blob)
        return Delta(removed, ids, vecs, seq)

    def _vec(self, blob: bytes) -> np.ndarray:
        vec = np.frombuffer(blob, dtype=np.float32)
        if vec.shape != (self.dim,):
            raise IndexFormatError(
                f"a stored vector has {vec.size} values, the index expects {self.dim}; "
                "the index is damaged: rebuild it with `vlmsearch index --reindex`"
            )
        return vec

    # --- writing ---------------------------------------------------------------------------
    def apply(
        self,
        indexed: Sequence[IndexedFile] = (),
        failed: Sequence[FailedFile] = (),
        removed_ids: Sequence[int] = (),
    ) -> int:
        """Record one checkpoint of indexing work in a single transaction; returns its seq."""
        now = time.time()
        with self.write() as (conn, seq):
            old_digests: set[str] = set()
            paths = [f.path for f in indexed] + [f.path for f in failed]
            for chunk in _chunks(paths, 500):
                old_digests.update(
                    d for d in conn.execute(
                        sa.select(FILES.c.digest).where(FILES.c.path.in_(chunk))
                    ).scalars() if d
                )
            new_vectors = {f.digest: f.vector for f in indexed if f.vector is not None}
            if new_vectors:
                present = self.known_digests(new_vectors, conn)
                rows = [{"digest": d, "vec": np.asarray(v, dtype=np.float32).tobytes()}
                        for d, v in new_vectors.items() if d not in present]
                if rows:
                    conn.execute(sa.insert(VECTORS), rows)
            file_rows = [
                {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "digest": f.digest,
                 "width": f.width, "height": f.height, "status": "ok", "error": None,
                 "seq": seq, "indexed_at": now}
                for f in indexed
            ] + [
                {"path": f.path, "size": f.size, "mtime_ns": f.mtime_ns, "digest": None,
                 "width": None, "height": None, "status": "failed", "error": f.error,
                 "seq": seq, "indexed_at": now}
                for f in failed
            ]
            if file_rows:
                _upsert(conn, FILES, file_rows, key="path")
            if removed_ids:
                old_digests.update(self._delete_files(conn, list(removed_ids), seq))
            self._collect_garbage(conn, old_digests)
        return seq

    def remove_paths(self, paths: Sequence[str]) -> int:
        """Drop files, and everything under folders, from the store; returns how many."""
        with self.write() as (conn, seq):
            ids: list[int] = []
            for cond in _under_conditions(list(paths)):
                ids.extend(conn.execute(sa.select(FILES.c.id).where(cond)).scalars())
            ids = sorted(set(ids))
            digests = self._delete_files(conn, ids, seq)
            self._collect_garbage(conn, digests)
        return len(ids)

    def _delete_files(self, conn: Connection, ids: list[int], seq: int) -> set[str]:
        digests: set[str] = set()
        for chunk in _chunks(ids, 500):
            rows = conn.execute(
                sa.select(FILES.c.id, FILES.c.digest).where(FILES.c.id.in_(chunk))
            ).all()
            digests.update(r.digest for r in rows if r.digest)
            if rows:
                conn.execute(sa.insert(TOMBSTONES),
                             [{"kind": "image", "item_id": r.id, "seq": seq} for r in rows])
            conn.execute(sa.delete(FILES).where(FILES.c.id.in_(chunk)))
        return digests

    def _collect_garbage(self, conn: Connection, digests: set[str]) -> None:
        """Drop vectors that no file refers to any more."""
        for chunk in _chunks(sorted(digests), 500):
            still_used = set(
                conn.execute(
                    sa.select(FILES.c.digest).where(FILES.c.digest.in_(chunk))
                ).scalars()
            )
            unused = [d for d in chunk if d not in still_used]
            if unused:
                conn.execute(sa.delete(VECTORS).where(VECTORS.c.digest.in_(unused)))

    def add_texts(
        self, texts: Sequence[str], digests: Sequence[str], vectors: np.ndarray,
        source: str | None,
    ) -> int:
        """Insert texts not already present (by digest); returns how many were new."""
        with self.write() as (conn, seq):
            present: set[str] = set()
            for chunk in _chunks(list(digests), 500):
                present.update(
                    conn.execute(sa.select(TEXTS.c.digest).where(TEXTS.c.digest.in_(chunk)))
                    .scalars()
                )
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

    def text_digests(self, digests: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with self.read() as conn:
            for chunk in _chunks(list(digests), 500):
                found.update(
                    conn.execute(sa.select(TEXTS.c.digest).where(TEXTS.c.digest.in_(chunk)))
                    .scalars()
                )
        return found

    def clear_texts(self) -> int:
        with self.write() as (conn, seq):
            ids = conn.execute(sa.select(TEXTS.c.id)).scalars().all()
            for chunk in _chunks(list(ids), 500):
                conn.execute(sa.insert(TOMBSTONES),
                             [{"kind": "text", "item_id": i, "seq": seq} for i in chunk])
            conn.execute(sa.delete(TEXTS))
        return len(ids)

    def clear_vectors(self) -> None:
        """Forget every vector (the model changed): files become 'to do' for the next run."""
        with self.write() as (conn, seq):
            ids = conn.execute(sa.select(FILES.c.id)).scalars().all()
            for chunk in _chunks(list(ids), 500):
                conn.execute(sa.insert(TOMBSTONES),
                             [{"kind": "image", "item_id": i, "seq": seq} for i in chunk])
            conn.execute(sa.delete(FILES))
            conn.execute(sa.delete(VECTORS))
            text_ids = conn.execute(sa.select(TEXTS.c.id)).scalars().all()
            for chunk in _chunks(list(text_ids), 500):
                conn.execute(sa.insert(TOMBSTONES),
                             [{"kind": "text", "item_id": i, "seq": seq} for i in chunk])
            conn.execute(sa.delete(TEXTS))

    def texts_for_reembedding(self) -> list[tuple[str, str | None]]:
        with self.read() as conn:
            return [(r.text, r.source) for r in conn.execute(
                sa.select(TEXTS.c.text, TEXTS.c.source).order_by(TEXTS.c.id))]


# --- helpers -----------------------------------------------------------------------------------
def _create_engine(url: str) -> Engine:
    if not url.startswith("postgresql"):
        return sa.create_engine(url, future=True)
    try:
        # REPEATABLE READ: one snapshot per transaction, as SQLite's BEGIN gives readers.
        return sa.create_engine(url, future=True, isolation_level="REPEATABLE READ",
                                pool_pre_ping=True)
    except ModuleNotFoundError as exc:
        raise UsageError(
            f"PostgreSQL needs the {exc.name} package: pip install 'vlmsearch[scale]'"
        ) from exc
    except sa.exc.NoSuchModuleError as exc:
        raise UsageError(
            f"unsupported database URL {public_url(url)!r}: use "
            "postgresql+psycopg://USER@HOST:PORT/DBNAME (and pip install 'vlmsearch[scale]')"
        ) from exc


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below start transactions (pysqlite's own handling defers BEGIN
        # until the first write, which would give readers no snapshot).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA busy_timeout = 30000")
        # In a read-only folder this fails; readers can still use the existing database.
        with contextlib.suppress(Exception):
            cur.execute("PRAGMA journal_mode = WAL")
        cur.execute("PRAGMA synchronous = NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def _get_seq(conn: Connection) -> int:
    value = conn.execute(sa.select(META.c.value).where(META.c.key == "seq")).scalar_one_or_none()
    return int(value) if value is not None else 0


def _set_meta(conn: Connection, key: str, value: str) -> None:
    _upsert(conn, META, [{"key": key, "value": value}], key="key")


def _upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    dialect = conn.dialect.name
    stmt: Any
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        stmt = sqlite_insert(table)
    elif dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        stmt = pg_insert(table)
    else:  # pragma: no cover
        raise StorageError(f"unsupported database {dialect!r}: use SQLite or PostgreSQL")
    update = {c.name: stmt.excluded[c.name] for c in table.columns
              if c.name != key and not c.primary_key}
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update), rows)


def _under_conditions(roots: Sequence[str] | None) -> list[sa.ColumnElement[bool]]:
    """SQL conditions selecting each root and everything under it (byte-wise ranges)."""
    if roots is None:
        return [sa.true()]
    conds: list[sa.ColumnElement[bool]] = []
    for root in roots:
        raw = os.fsencode(root).rstrip(os.fsencode(os.sep)) or os.fsencode(os.sep)
        sep = os.fsencode(os.sep)
        lo = raw if raw.endswith(sep) else raw + sep
        hi = lo[:-1] + bytes([lo[-1] + 1])
        col = FILES.c.path
        conds.append(sa.or_(col == sa.literal(raw, sa.LargeBinary),
                            sa.and_(col >= sa.literal(lo, sa.LargeBinary),
                                    col < sa.literal(hi, sa.LargeBinary))))
    return conds


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@contextmanager
def _maybe(store: MetadataStore, conn: Connection | None) -> Iterator[Connection]:
    if conn is not None:
        yield conn
    else:
        with store.read() as c:
            yield c


def _storage_error(exc: sa.exc.OperationalError, url: str = "") -> StorageError:
    text = str(exc.orig) if exc.orig is not None else str(exc)
    if url.startswith("postgresql"):
        where = public_url(url)
        return StorageError(
            f"could not use the PostgreSQL database {where} ({' '.join(text.split())}); check "
            "that the server runs and accepts connections from here, that the database exists "
            "(createdb NAME) and that the password is in PGPASSWORD or ~/.pgpass"
        )
    if "readonly" in text or "read-only" in text:
        hint = "the index folder is read-only: make it writable or use another --index-dir"
    elif "disk" in text and "full" in text:
        hint = "the disk is full: free some space and run again (nothing was lost)"
    elif "locked" in text:
        hint = "the database is locked by another process: wait for it to finish"
    else:
        hint = "check the index folder's disk space and permissions"
    return StorageError(f"could not write the index metadata ({text}); {hint}")
