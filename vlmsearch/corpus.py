"""Reading text corpora (captions, labels) for image→text search.

Plain text: one text per line. TSV/CSV (by extension, or ``delimiter``): one column, chosen by
header name or 1-based number; without ``column`` the last column is used (captions files are
usually ``image<TAB>caption``). Quoting is honoured in CSV and off in TSV (Flickr-style caption
files contain bare ``"``).
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from .errors import InputError

csv.field_size_limit(1 << 24)


def read_texts(
    path: str | os.PathLike[str], *, column: str | None = None, delimiter: str | None = None
) -> list[str]:
    """Texts from ``path``, stripped, empties dropped, in file order (duplicates kept)."""
    file = Path(path)
    try:
        raw = file.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {file}: {exc.strerror or exc}") from exc
    text = raw.decode("utf-8-sig", errors="replace").replace("\r\n", "\n").replace("\r", "\n")
    suffix = file.suffix.lower()
    if delimiter is None:
        delimiter = {".tsv": "\t", ".tab": "\t", ".csv": ","}.get(suffix)
    if delimiter is None:
        if column is not None:
            raise InputError(
                f"--column needs a TSV or CSV file; {file.name} is read as one text per line "
                "(pass --delimiter to read it as a table)"
            )
        return [line.strip() for line in text.split("\n") if line.strip()]
    if delimiter == "\\t":
        delimiter = "\t"
    lines = text.split("\n")
    reader = (csv.reader(lines, delimiter="\t", quoting=csv.QUOTE_NONE) if delimiter == "\t"
              else csv.reader(lines, delimiter=delimiter))
    rows = [r for r in reader if r]
    if not rows:
        return []
    index = _column_index(rows[0], column, file)
    body = rows[1:] if column is not None and not column.isdigit() else rows
    if column is None and _looks_like_header(rows[0]):
        body = rows[1:]
    out = []
    for row in body:
        if index < len(row) and row[index].strip():
            out.append(row[index].strip())
    return out


def _column_index(header: list[str], column: str | None, file: Path) -> int:
    if column is None:
        return len(header) - 1
    if column.isdigit():
        n = int(column)
        if n < 1:
            raise InputError("--column numbers start at 1")
        return n - 1
    names = [h.strip() for h in header]
    if column not in names:
        raise InputError(
            f"{file.name} has no column {column!r}; its header has: {', '.join(names)}"
        )
    return names.index(column)


_HEADER_WORDS = {"text", "caption", "captions", "label", "labels", "sentence", "description",
                 "image", "file", "filename", "name", "id"}


def _looks_like_header(row: list[str]) -> bool:
    return all(cell.strip().lower() in _HEADER_WORDS for cell in row if cell.strip())
