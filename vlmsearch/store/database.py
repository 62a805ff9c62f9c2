"""Connecting to the metadata database: URLs, drivers, SQLite's settings, and turning driver
errors into messages that say how to fix the problem.

SQLite runs in WAL mode with explicit ``BEGIN``, so readers see a consistent snapshot while one
writer commits, and a crash loses at most the transaction in progress. PostgreSQL runs every
transaction at REPEATABLE READ for the same snapshot guarantee.
"""

from __future__ import annotations

import os
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from ..errors import IndexFormatError, StorageError, UsageError


def sqlite_url(path: str | os.PathLike[str], *, read_only: bool = False) -> str:
    """SQLAlchemy URL of a SQLite file. ``read_only`` opens it immutable, for index folders
    this process cannot write (SQLite could not even create its WAL index there)."""
    if read_only:
        from urllib.parse import quote

        return f"sqlite:///file:{quote(os.fspath(path))}?mode=ro&immutable=1&uri=true"
    return f"sqlite:///{os.fspath(path)}"


def is_read_only(url: str) -> bool:
    return "mode=ro" in url


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


def create_engine(url: str) -> Engine:
    """An SQLAlchemy engine for ``url``, configured for vlmsearch's transactions."""
    if not url.startswith("postgresql"):
        engine = sa.create_engine(url, future=True)
        if engine.dialect.name == "sqlite":
            _configure_sqlite(engine, read_only=is_read_only(url))
        return engine
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


def _configure_sqlite(engine: Engine, *, read_only: bool) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's BEGIN below start transactions (pysqlite's own handling defers BEGIN
        # until the first write, which would give readers no snapshot).
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        try:
            cur.execute("PRAGMA busy_timeout = 30000")
            if not read_only:
                # Snapshots for readers and crash safety both rest on WAL: without it, say so
                # instead of running with a rollback journal that blocks readers.
                row = cur.execute("PRAGMA journal_mode = WAL").fetchone()
                mode = str(row[0]).lower() if row else "unknown"
                if mode != "wal":
                    raise StorageError(
                        f"SQLite could not switch {_where(str(engine.url))} to write-ahead "
                        f"logging (its journal stays in {mode!r} mode): readers would block "
                        "the writer and crash safety would be lost. Keep the index on a local "
                        "disk (network file systems often lack the shared memory this needs) "
                        "or pick another folder with --index-dir")
            cur.execute("PRAGMA synchronous = NORMAL")
        finally:
            cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN")


def translate_error(exc: BaseException, url: str) -> Exception:
    """A :class:`StorageError` or :class:`IndexFormatError` for a driver error (or ``exc``
    itself when it is none of ours)."""
    if not isinstance(exc, sa.exc.DBAPIError):
        return exc if isinstance(exc, Exception) else RuntimeError(str(exc))
    text = " ".join((str(exc.orig) if exc.orig is not None else str(exc)).split())
    if url.startswith("postgresql"):
        return StorageError(
            f"could not use the PostgreSQL database {public_url(url)} ({text}); check "
            "that the server runs and accepts connections from here, that the database exists "
            "(createdb NAME) and that the password is in PGPASSWORD or ~/.pgpass"
        )
    if "not a database" in text or "malformed" in text or "encrypted" in text:
        return IndexFormatError(
            f"{_where(url)} is damaged ({text}); restore it from a backup, or delete the index "
            "folder and index again (the photos themselves are untouched)"
        )
    if "readonly" in text or "read-only" in text:
        hint = "the index folder is read-only: make it writable or use another --index-dir"
    elif "disk" in text and "full" in text:
        hint = "the disk is full: free some space and run again (nothing was lost)"
    elif "locked" in text:
        hint = "the database is locked by another process: wait for it to finish"
    elif "unable to open" in text:
        hint = "check that the index folder exists and is readable"
    else:
        hint = "check the index folder's disk space and permissions"
    return StorageError(f"could not use the index metadata ({text}); {hint}")


def _where(url: str) -> str:
    try:
        database = sa.engine.make_url(url).database or url
    except sa.exc.ArgumentError:
        database = url
    return database.removeprefix("file:").split("?")[0]
