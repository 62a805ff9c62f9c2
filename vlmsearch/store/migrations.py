"""Numbered schema steps: step N upgrades a database at version N-1 to version N.

A new database is created at the newest version straight from :mod:`vlmsearch.store.schema`;
an older one runs each missing step in order, in one transaction, so an upgrade either happens
completely or not at all. Steps only ever add: an older vlmsearch refuses a newer schema instead
of misreading it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import IndexFormatError
from .lexical import delete_lexical, lexical_rows, write_lexical
from .pathkeys import PathKeys, platform_mode
from .schema import FILES, OCR, SCHEMA_VERSION, TOMBSTONES, VECTORS, Base, create_lexical
from .sql import get_meta, set_meta

log = logging.getLogger("vlmsearch.store")


def _to_2(conn: Connection) -> None:
    """``files.unavailable``: files kept while the place holding them could not be listed."""
    conn.execute(sa.text(
        "ALTER TABLE files ADD COLUMN unavailable BOOLEAN NOT NULL DEFAULT false"))


def _to_3(conn: Connection) -> None:
    """What photos say about themselves (date, camera, lens, position, place). Existing rows
    get ``meta_version`` 0, so the next index run reads them from the files' headers (no
    re-embedding)."""
    for column, kind in (("taken", "VARCHAR(40)"), ("taken_ts", "FLOAT"),
                         ("camera_make", "TEXT"), ("camera_model", "TEXT"), ("lens", "TEXT"),
                         ("lat", "FLOAT"), ("lon", "FLOAT"), ("place_city", "TEXT"),
                         ("place_metro", "TEXT"), ("place_county", "TEXT"),
                         ("place_region", "TEXT"), ("place_country", "TEXT"),
                         ("place_cc", "VARCHAR(4)")):
        conn.execute(sa.text(f"ALTER TABLE files ADD COLUMN {column} {kind}"))
    conn.execute(sa.text("ALTER TABLE files ADD COLUMN meta_version INTEGER NOT NULL DEFAULT 0"))
    conn.execute(sa.text("CREATE INDEX ix_files_taken_ts ON files (taken_ts)"))


def _to_4(conn: Connection) -> None:
    """Text read in pictures (``ocr``) and the lexical index over it and file names, filled
    here with the names of the files already indexed."""
    OCR.create(conn)
    create_lexical(conn)
    rows = conn.execute(sa.select(FILES.c.id, FILES.c.path)).all()
    for start in range(0, len(rows), 5_000):
        write_lexical(conn, lexical_rows([(r.id, r.path, "") for r in rows[start:start + 5_000]]))


def _to_5(conn: Connection) -> None:
    """Path keys (vlmsearch.store.pathkeys) in the platform's mode. Where that mode folds
    case or normalisation, rows that were one file under two spellings collapse into the one
    indexed last (the others are the stale duplicates this step exists to end)."""
    mode = platform_mode()
    keys = PathKeys(mode)
    conn.execute(sa.text("ALTER TABLE files ADD COLUMN path_key BLOB" if conn.dialect.name ==
                         "sqlite" else "ALTER TABLE files ADD COLUMN path_key BYTEA"))
    rows = conn.execute(sa.select(FILES.c.id, FILES.c.path, FILES.c.indexed_at)
                        .order_by(FILES.c.indexed_at, FILES.c.id)).all()
    owner: dict[bytes, int] = {}
    for row in rows:
        owner[keys.key(row.path)] = row.id  # the last one indexed wins
    keep = set(owner.values())
    stale = [r.id for r in rows if r.id not in keep]
    if stale:
        seq = int(get_meta(conn, "seq").get("seq", 0)) + 1
        conn.execute(sa.insert(TOMBSTONES), [{"kind": "image", "item_id": i, "seq": seq}
                                             for i in stale])
        for start in range(0, len(stale), 500):
            chunk = stale[start:start + 500]
            conn.execute(sa.delete(FILES).where(FILES.c.id.in_(chunk)))
        delete_lexical(conn, stale)
        conn.execute(sa.delete(VECTORS).where(~sa.exists().where(
            FILES.c.digest == VECTORS.c.digest)))
        set_meta(conn, seq=str(seq))
        log.info("merged %d index rows that named the same files under another spelling",
                 len(stale))
    update = (sa.update(FILES).where(FILES.c.id == sa.bindparam("file_id"))
              .values(path_key=sa.bindparam("key")))
    items = [{"file_id": i, "key": k} for k, i in owner.items()]
    for start in range(0, len(items), 5_000):
        conn.execute(update, items[start:start + 5_000])
    conn.execute(sa.text("CREATE UNIQUE INDEX ix_files_path_key ON files (path_key)"))
    set_meta(conn, path_keys=mode)


def _to_6(conn: Connection) -> None:
    """``vectors.phash``: a perceptual hash made with each new vector, for duplicate groups
    (vlmsearch.duplicates). Vectors stored before have none (NULL): their contents are
    compared by vector alone until a ``--reindex`` makes both again."""
    conn.execute(sa.text("ALTER TABLE vectors ADD COLUMN phash BIGINT"))


MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _to_2, 3: _to_3, 4: _to_4, 5: _to_5,
                                                       6: _to_6}


def migrate(conn: Connection, *, read_only: bool) -> int:
    """Bring the database behind ``conn`` (inside a transaction) to :data:`SCHEMA_VERSION`;
    returns the version it had (0 for a new database)."""
    version = 0
    if sa.inspect(conn).has_table("meta"):
        version = int(get_meta(conn, "schema_version").get("schema_version", 0))
    if version > SCHEMA_VERSION:
        raise IndexFormatError(
            f"this index uses metadata schema {version}, newer than this vlmsearch understands "
            f"({SCHEMA_VERSION}); upgrade vlmsearch (pip install -U vlmsearch)"
        )
    if version == SCHEMA_VERSION:
        return version
    if read_only:
        raise IndexFormatError(
            f"this index uses an older metadata schema ({version}) and its folder is read-only; "
            "open it once from an account that can write to it"
        )
    start = time.perf_counter()
    if version == 0:
        Base.metadata.create_all(conn)
        create_lexical(conn)
        set_meta(conn, seq="0", schema_version=str(SCHEMA_VERSION), path_keys=platform_mode())
        return 0
    for step in range(version + 1, SCHEMA_VERSION + 1):
        MIGRATIONS[step](conn)
        set_meta(conn, schema_version=str(step))
    log.info("upgraded the metadata schema from version %d to %d in %.2f s", version,
             SCHEMA_VERSION, time.perf_counter() - start)
    return version
