"""Small SQL helpers shared by the store: chunked ``IN (...)`` queries, upserts, "under this
folder" conditions and the ``meta`` key/value rows."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Row

from ..errors import StorageError
from .schema import FILES, META

CHUNK = 500
"""Values per ``IN (...)`` list: far below every database's limit on bound parameters."""

T = TypeVar("T")


def chunks(items: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def select_in(
    conn: Connection, stmt: sa.Select[Any], column: sa.ColumnElement[Any], values: Iterable[Any]
) -> Iterator[Row[Any]]:
    """The rows of ``stmt`` where ``column`` is one of ``values``, asked in chunks."""
    for chunk in chunks(list(values)):
        yield from conn.execute(stmt.where(column.in_(chunk)))


def execute_in(
    conn: Connection, stmt: sa.Update | sa.Delete, column: sa.ColumnElement[Any],
    values: Iterable[Any],
) -> int:
    """Run an UPDATE or DELETE for the rows where ``column`` is one of ``values``, in chunks;
    returns how many rows it touched."""
    touched = 0
    for chunk in chunks(list(values)):
        touched += conn.execute(stmt.where(column.in_(chunk))).rowcount or 0
    return touched


def upsert(conn: Connection, table: sa.Table, rows: list[dict[str, Any]], *, key: str) -> None:
    """Insert ``rows``, or update the existing row with the same ``key``."""
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
              if c.name != key and not c.primary_key and c.name in rows[0]}
    conn.execute(stmt.on_conflict_do_update(index_elements=[key], set_=update), rows)


def get_meta(conn: Connection, *keys: str) -> dict[str, str]:
    """The ``meta`` rows asked for (missing keys are absent from the result)."""
    rows = conn.execute(sa.select(META.c.key, META.c.value).where(META.c.key.in_(keys)))
    return {str(k): str(v) for k, v in rows}


def set_meta(conn: Connection, **values: str) -> None:
    if values:
        upsert(conn, META, [{"key": k, "value": v} for k, v in values.items()], key="key")


def under_conditions(
    roots: Sequence[str] | None, key: Callable[[str], bytes] = os.fsencode
) -> list[sa.ColumnElement[bool]]:
    """SQL conditions selecting each root and every file under it: byte-wise ranges over the
    path keys (``key``: :meth:`vlmsearch.store.pathkeys.PathKeys.key`), which the unique
    index on ``files.path_key`` serves."""
    if roots is None:
        return [sa.true()]
    conds: list[sa.ColumnElement[bool]] = []
    sep = os.fsencode(os.sep)
    for root in roots:
        raw = key(root).rstrip(sep) or sep
        lo = raw if raw.endswith(sep) else raw + sep
        hi = lo[:-1] + bytes([lo[-1] + 1])
        col = FILES.c.path_key
        conds.append(sa.or_(col == sa.literal(raw, sa.LargeBinary),
                            sa.and_(col >= sa.literal(lo, sa.LargeBinary),
                                    col < sa.literal(hi, sa.LargeBinary))))
    return conds
