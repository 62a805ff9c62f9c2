"""The metadata database's tables (SQLAlchemy 2.0), as of the newest schema version.

Older databases are brought here step by step by :mod:`vlmsearch.store.migrations`; a new
database is created from these definitions directly.
"""

from __future__ import annotations

import os
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

SCHEMA_VERSION = 6
Kind = Literal["image", "text"]
# 64-bit ids on PostgreSQL (a billion-image index with churn outgrows 2**31); SQLite keeps
# INTEGER PRIMARY KEY, its 64-bit rowid, which AUTOINCREMENT needs.
Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


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
    """Key/value settings of the database: ``schema_version``, the change number ``seq``, the
    model the vectors were made with (``model_spec``, ``model_id``, ``dim``), per-kind
    ``pruned_<kind>`` (tombstones up to that seq have been deleted), ``ocr`` ("1": index runs
    read text in pictures) and ``path_keys`` (how paths are compared)."""

    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    value: Mapped[str] = mapped_column(sa.Text)


class FileRow(Base):
    """One image file. Its ``id`` is its id in the FAISS index.

    ``status``: ``ok`` (has a vector), ``failed`` (``error`` says why) or ``pending`` (known, but
    its vector was dropped by ``--reindex`` and not yet remade). ``unavailable`` marks an ok file
    under a place the last run could not list (an unmounted drive): kept, not re-checked."""

    __tablename__ = "files"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    path: Mapped[str] = mapped_column(FsPath, unique=True)
    path_key: Mapped[bytes] = mapped_column(sa.LargeBinary, unique=True)
    """The path as the index's file system compares it (vlmsearch.store.pathkeys)."""
    size: Mapped[int] = mapped_column(sa.BigInteger)
    mtime_ns: Mapped[int] = mapped_column(sa.BigInteger)
    digest: Mapped[str | None] = mapped_column(sa.String(64), index=True)
    width: Mapped[int | None] = mapped_column(sa.Integer)
    height: Mapped[int | None] = mapped_column(sa.Integer)
    status: Mapped[str] = mapped_column(sa.String(8))
    error: Mapped[str | None] = mapped_column(sa.Text)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)
    indexed_at: Mapped[float] = mapped_column(sa.Float)
    unavailable: Mapped[bool] = mapped_column(sa.Boolean, default=False,
                                              server_default=sa.false())
    # What the photo says about itself (vlmsearch.photo_meta, vlmsearch.places); NULL when it
    # does not say. meta_version: which version of that reading the row holds (0: not read
    # yet, e.g. rows from before schema 3, filled in by the next index run from headers).
    taken: Mapped[str | None] = mapped_column(sa.String(40))
    taken_ts: Mapped[float | None] = mapped_column(sa.Float, index=True)
    camera_make: Mapped[str | None] = mapped_column(sa.Text)
    camera_model: Mapped[str | None] = mapped_column(sa.Text)
    lens: Mapped[str | None] = mapped_column(sa.Text)
    lat: Mapped[float | None] = mapped_column(sa.Float)
    lon: Mapped[float | None] = mapped_column(sa.Float)
    place_city: Mapped[str | None] = mapped_column(sa.Text)
    place_metro: Mapped[str | None] = mapped_column(sa.Text)
    place_county: Mapped[str | None] = mapped_column(sa.Text)
    place_region: Mapped[str | None] = mapped_column(sa.Text)
    place_country: Mapped[str | None] = mapped_column(sa.Text)
    place_cc: Mapped[str | None] = mapped_column(sa.String(4))
    meta_version: Mapped[int] = mapped_column(sa.Integer, default=0, server_default="0")


class VectorRow(Base):
    """The image vector of one distinct file content, and the perceptual hash of the same
    decoded pixels (:mod:`vlmsearch.phash`; NULL for vectors stored before schema 6: those
    contents are compared by their vectors alone, see :mod:`vlmsearch.duplicates`). Both
    depend on how the model decodes, so ``--reindex`` drops both."""

    __tablename__ = "vectors"
    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    vec: Mapped[bytes] = mapped_column(sa.LargeBinary)
    phash: Mapped[int | None] = mapped_column(sa.BigInteger)


class TextRow(Base):
    """One text of the corpus searched by image→text queries; its ``id`` is its FAISS id."""

    __tablename__ = "texts"
    __table_args__ = {"sqlite_autoincrement": True}  # noqa: RUF012
    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    digest: Mapped[str] = mapped_column(sa.String(64), unique=True)
    text: Mapped[str] = mapped_column(sa.Text)
    source: Mapped[str | None] = mapped_column(sa.Text)
    vec: Mapped[bytes] = mapped_column(sa.LargeBinary)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)


class OcrRow(Base):
    """The text read in one distinct file content (``--ocr``), so moved and duplicate files
    are read once. ``status``: ``ok`` (``text`` may be empty: no text) or ``failed``
    (``error`` says why; the image's embedding is unaffected)."""

    __tablename__ = "ocr"
    digest: Mapped[str] = mapped_column(sa.String(64), primary_key=True)
    text: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(8))
    error: Mapped[str | None] = mapped_column(sa.Text)
    version: Mapped[int] = mapped_column(sa.Integer)


class Tombstone(Base):
    """A deleted id, so a stale FAISS file can drop it. Pruned once every FAISS file of its
    kind reflects it (see :mod:`vlmsearch.store.sync`)."""

    __tablename__ = "tombstones"
    rowid: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(sa.String(8))
    item_id: Mapped[int] = mapped_column(sa.BigInteger)
    seq: Mapped[int] = mapped_column(sa.BigInteger, index=True)


PHOTO_COLUMNS = ("taken", "taken_ts", "camera_make", "camera_model", "lens", "lat", "lon",
                 "place_city", "place_metro", "place_county", "place_region", "place_country",
                 "place_cc")
"""The columns :func:`vlmsearch.store.records.photo_row` fills."""

FILES: sa.Table = FileRow.__table__  # type: ignore[assignment]
VECTORS: sa.Table = VectorRow.__table__  # type: ignore[assignment]
TEXTS: sa.Table = TextRow.__table__  # type: ignore[assignment]
TOMBSTONES: sa.Table = Tombstone.__table__  # type: ignore[assignment]
META: sa.Table = MetaRow.__table__  # type: ignore[assignment]
OCR: sa.Table = OcrRow.__table__  # type: ignore[assignment]

LEXICAL = "lexical"
"""What lexical search reads, one row per indexed file (its id): ``names`` (the file's name and
its two parent folders' names) and ``text`` (the text read in it), both folded (lower case,
no accents). In SQLite an FTS5 table with the trigram tokenizer, which matches substrings of
three or more characters in any script (Chinese included) from its index; in PostgreSQL a plain
table searched by substring."""


def create_lexical(conn: sa.Connection) -> None:
    if conn.dialect.name == "sqlite":
        conn.execute(sa.text(f"CREATE VIRTUAL TABLE {LEXICAL} USING fts5(names, text, "
                             "tokenize='trigram')"))
    else:
        conn.execute(sa.text(f"CREATE TABLE {LEXICAL} (file_id BIGINT PRIMARY KEY, "
                             "names TEXT NOT NULL, text TEXT NOT NULL)"))
