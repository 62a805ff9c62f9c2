"""The lexical index: file names and the text read in pictures, searched by substring.

One row per indexed file (see :data:`vlmsearch.store.schema.LEXICAL`), written in the same
transactions as the files themselves. A query is split into *terms* (:func:`terms_of`): words
of Latin, Cyrillic, ... scripts, and whole runs of Chinese/Japanese/Korean characters (which
are written without spaces; a run is matched as a substring). A file matches when **every**
term occurs in its names or its text, so long descriptive queries ("a dog running on the
beach") almost never match by accident, while "gate B12" or "发票" find the picture that says
so. Terms of three or more characters are looked up in SQLite's trigram index; shorter ones
("发票", "b1") are tested on the rows the others leave (or scanned, when every term is short).
Everything is folded first (lower case, accents removed), on both sides.
"""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Iterable, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..places import fold
from .schema import LEXICAL

NAME_FOLDERS = 2
"""How many parent folders' names are searchable with a file's own name ("receipts/2023/
IMG_1.jpg"); folders further up (/home/me/Pictures) would match everything under them."""
_WORD = re.compile(r"\w+", re.UNICODE)


def _is_cjk(ch: str) -> bool:
    name = unicodedata.name(ch, "")
    return name.startswith(("CJK", "HIRAGANA", "KATAKANA", "HANGUL"))


def terms_of(query: str) -> list[str]:
    """The folded terms of a query (see the module docstring); single Latin letters ("a",
    "I") are left out: they would match nearly every text."""
    terms: list[str] = []
    for word in _WORD.findall(fold(query)):
        if len(word) == 1 and not _is_cjk(word):
            continue
        if word not in terms:
            terms.append(word)
    return terms


def names_of(path: str) -> str:
    """The searchable names of a file: its own name and its parent folders' names (bytes
    that are not UTF-8 become U+FFFD: such names are still found by their other letters)."""
    shown = os.fsencode(path).decode("utf-8", "replace")
    parts = shown.replace(os.sep, "/").rstrip("/").split("/")
    return fold(" ".join(reversed(parts[-1 - NAME_FOLDERS:])))


def lexical_rows(items: Iterable[tuple[int, str, str]]) -> list[dict[str, Any]]:
    """Rows for (file id, path, text read in it)."""
    return [{"file_id": ident, "names": names_of(path), "text": fold(text)}
            for ident, path, text in items]


def write_lexical(conn: Connection, rows: Sequence[dict[str, Any]]) -> None:
    if not rows:
        return
    if conn.dialect.name == "sqlite":
        conn.execute(sa.text(f"INSERT OR REPLACE INTO {LEXICAL} (rowid, names, text) "
                             "VALUES (:file_id, :names, :text)"), list(rows))
    else:
        conn.execute(sa.text(f"INSERT INTO {LEXICAL} (file_id, names, text) VALUES "
                             "(:file_id, :names, :text) ON CONFLICT (file_id) DO UPDATE SET "
                             "names = EXCLUDED.names, text = EXCLUDED.text"), list(rows))


def delete_lexical(conn: Connection, ids: Sequence[int]) -> None:
    key = "rowid" if conn.dialect.name == "sqlite" else "file_id"
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start:start + 500]]
        conn.execute(sa.text(f"DELETE FROM {LEXICAL} WHERE {key} IN "
                             f"({', '.join(str(i) for i in chunk)})"))


def search_lexical(conn: Connection, terms: Sequence[str], limit: int) -> list[int]:
    """Ids of files containing every term, best first (SQLite: bm25 over the trigrams of the
    long terms; else by id), at most ``limit``."""
    if not terms:
        return []
    long = [t for t in terms if len(t) >= 3]
    short = [t for t in terms if len(t) < 3]
    params: dict[str, Any] = {"limit": int(limit)}
    conds = []
    for n, term in enumerate(short if conn.dialect.name == "sqlite" else terms):
        params[f"t{n}"] = term
        if conn.dialect.name == "sqlite":
            conds.append(f"(instr(names, :t{n}) > 0 OR instr(text, :t{n}) > 0)")
        else:
            conds.append(f"(position(:t{n} in names) > 0 OR position(:t{n} in text) > 0)")
    if conn.dialect.name == "sqlite":
        order = "rowid"
        if long:
            params["match"] = " AND ".join('"' + t.replace('"', '""') + '"' for t in long)
            conds.insert(0, f"{LEXICAL} MATCH :match")
            order = f"bm25({LEXICAL}), rowid"
        sql = f"SELECT rowid FROM {LEXICAL} WHERE {' AND '.join(conds)} ORDER BY {order} " \
              "LIMIT :limit"
    else:
        sql = f"SELECT file_id FROM {LEXICAL} WHERE {' AND '.join(conds)} ORDER BY file_id " \
              "LIMIT :limit"
    return [int(r[0]) for r in conn.execute(sa.text(sql), params)]


def snippet(text: str, terms: Sequence[str], width: int = 80
            ) -> tuple[str, list[tuple[int, int]]]:
    """A piece of ``text`` (the original, not folded) around the first match of ``terms``,
    and the [start, end) spans of every term within that piece."""
    folded, back = _fold_with_map(text)
    spans: list[tuple[int, int]] = []
    for term in terms:
        at = folded.find(term)
        while at >= 0:
            spans.append((back[at], back[at + len(term) - 1] + 1))
            at = folded.find(term, at + len(term))
    if not spans:
        return text[:width].replace("\n", " "), []
    spans.sort()
    first = spans[0][0]
    start = max(0, min(first - width // 3, len(text) - width))
    end = min(len(text), start + width)
    piece = text[start:end].replace("\n", " ")
    inside = [(a - start, b - start) for a, b in spans if a >= start and b <= end]
    prefix = "…" if start > 0 else ""
    suffix = "…" if end < len(text) else ""
    shift = len(prefix)
    return prefix + piece + suffix, [(a + shift, b + shift) for a, b in inside]


def _fold_with_map(text: str) -> tuple[str, list[int]]:
    """``fold(text)`` character by character, with each folded character's index in
    ``text`` (folding can make one character several, or none)."""
    out: list[str] = []
    back: list[int] = []
    for i, ch in enumerate(text):
        for f in fold(ch) if not ch.isspace() else " ":
            out.append(f)
            back.append(i)
    return "".join(out), back
