"""What an index run reports while it runs (:class:`Progress`) and when it ends
(:class:`IndexReport`)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Progress:
    """A progress report. ``phase`` is ``scanning`` (``total`` unknown), ``metadata`` (reading
    photo metadata of files indexed before vlmsearch read it), ``indexing``, ``reading text``
    (``--ocr``: the text still being read once every image is embedded),
    ``saving`` (writing the search index; ``done``/``total`` count vectors when it is rebuilt);
    ``done``/``total`` count files. One-time work that takes seconds has a phase of its own,
    with ``total`` None: ``exporting-images`` (a bundle's image tower for ONNX Runtime, before
    the first batch) and ``exporting`` (the text side for fast queries, after indexing)."""

    phase: str
    done: int
    total: int | None = None


ProgressCallback = Callable[[Progress], None]


def no_progress(_: Progress) -> None:
    return None


@dataclass
class IndexReport:
    """What an index run did. Every file found under the roots is counted once in ``added``,
    ``updated``, ``unchanged`` or ``skipped``; ``removed`` counts stored files that are gone.
    ``reused`` (part of added + updated) took a stored vector by content digest instead of
    being encoded; ``encoded`` went through the model.

    ``unavailable`` counts indexed files kept because the place holding them could not be
    reached this time (``unavailable_places``: a missing root, an unreadable folder, a link to
    an unmounted drive); they are checked again on the next run. ``missing_roots`` lists the
    roots given that do not exist."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    reused: int = 0
    encoded: int = 0
    unavailable: int = 0
    metadata_read: int = 0
    """Unchanged files whose photo metadata (date, camera, place) was read from their headers
    for the first time (indexes made before vlmsearch read it), without re-embedding."""
    metadata_seconds: float = 0.0
    ocr_read: int = 0
    """Contents whose text was read in this run (``--ocr``; duplicates are read once)."""
    ocr_with_text: int = 0
    ocr_failed: int = 0
    """Contents whose text could not be read (their embedding is unaffected; the reason is
    kept in the index)."""
    ocr_seconds: float = 0.0
    """Time spent reading text, summed over pictures (it overlaps with embedding)."""
    seconds: float = 0.0
    skipped_files: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of every file skipped in this run."""
    walk_problems: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of links and entries that were skipped while walking (loops, aliases)."""
    unavailable_places: list[tuple[str, str]] = field(default_factory=list)
    """(path, reason) of places that could not be listed; what was indexed there is kept."""
    missing_roots: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """False when a root was missing or indexed files had to be kept unchecked."""
        return not self.missing_roots and not self.unavailable

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["seconds"] = round(self.seconds, 3)
        data["metadata_seconds"] = round(self.metadata_seconds, 3)
        data["ocr_seconds"] = round(self.ocr_seconds, 3)
        for key in ("skipped_files", "walk_problems", "unavailable_places"):
            data[key] = [{"path": p, "reason": r} for p, r in getattr(self, key)]
        return data
