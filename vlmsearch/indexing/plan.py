"""Before an index run reads any file: what is there, and what to do with each file.

Per file under the roots:

* same size and mtime as stored and indexed before → *unchanged* (not read at all);
* new, changed, failed before, or waiting for ``--reindex`` → *to do* (read, hashed, decoded);
* stored but not found → *removed*, but only when the folder that held it was listed: a file
  under a place that could not be reached (a missing root, an unreadable folder, a link to an
  unmounted drive) is *kept* and marked unavailable, so one unplugged disk never costs its
  entries (and their re-encoding when it is back);
* stored with an extension this run does not index (``--only-ext``, or an ``--ext`` given to
  an earlier run) → left as it is: a run looks only at the types it indexes
  (``vlmsearch remove`` drops the others).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from ..config import Settings
from ..sources import FileRef, walk
from ..store.metadata import MetadataStore
from ..store.records import META_VERSION, FileState
from .report import Progress, ProgressCallback

SCAN_REPORT_EVERY = 1000


@dataclass
class Plan:
    todo: list[tuple[FileRef, FileState | None]] = field(default_factory=list)
    unchanged: int = 0
    removed_ids: list[int] = field(default_factory=list)
    kept_ids: list[int] = field(default_factory=list)
    """Indexed files under unavailable places: kept, marked unavailable."""
    back_ids: list[int] = field(default_factory=list)
    """Files marked unavailable by an earlier run and found again."""
    backfill: list[tuple[int, str]] = field(default_factory=list)
    """(id, path) of unchanged files whose photo metadata was never read (indexed before
    vlmsearch read it): read from their headers, without re-embedding."""
    walk_problems: list[tuple[str, str]] = field(default_factory=list)
    unavailable_places: list[tuple[str, str]] = field(default_factory=list)
    missing_roots: list[str] = field(default_factory=list)


def make_plan(
    store: MetadataStore,
    roots: Sequence[str],
    settings: Settings,
    *,
    exclude: Iterable[str] = (),
    include_hidden: bool = False,
    progress: ProgressCallback,
) -> Plan:
    plan = Plan()
    files: list[FileRef] = []
    for ref in walk(
        roots, exclude=exclude, extensions=settings.extensions,
        follow_symlinks=settings.follow_symlinks, include_hidden=include_hidden,
        on_problem=lambda p, r: plan.walk_problems.append((p, r)),
        on_unavailable=lambda p, r: plan.unavailable_places.append((p, r)),
    ):
        files.append(ref)
        if len(files) % SCAN_REPORT_EVERY == 0:
            progress(Progress("scanning", len(files)))
    progress(Progress("scanning", len(files)))
    plan.missing_roots = [p for p, reason in plan.unavailable_places
                          if p in roots and reason == "no such file or folder"]

    key = store.keys.key  # paths compared as the file system does (case, normalisation)
    known = store.file_states(list({os.path.abspath(r) for r in roots}))
    seen = {key(f.path) for f in files}
    unreachable = {key(p) for p, _ in plan.unavailable_places}
    exts = frozenset(settings.extensions)
    root_keys = {key(r) for r in roots}
    for path_key, state in known.items():
        if path_key in seen:
            continue
        if (os.path.splitext(state.path)[1].lower() not in exts
                and path_key not in root_keys):
            continue  # a type this run does not index: not looked at
        if _under_any(path_key, unreachable):
            plan.kept_ids.append(state.id)
        else:
            plan.removed_ids.append(state.id)
    for ref in files:
        found = known.get(key(ref.path))
        if found is not None and found.unavailable:
            plan.back_ids.append(found.id)
        if (found is not None and found.status == "ok" and found.size == ref.size
                and found.mtime_ns == ref.mtime_ns):
            plan.unchanged += 1
            if found.meta_version < META_VERSION:
                plan.backfill.append((found.id, ref.path))
        else:
            plan.todo.append((ref, found))
    return plan


def _under_any(path: bytes, places: set[bytes]) -> bool:
    """Whether ``path`` is one of ``places`` or lies under one (path keys)."""
    current = path
    while places:
        if current in places:
            return True
        parent = os.path.dirname(current)
        if parent == current:
            return False
        current = parent
    return False
