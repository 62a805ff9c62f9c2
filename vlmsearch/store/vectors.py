"""Where vectors are searched: a small wrapper around one FAISS index with 64-bit ids.

Ids are the metadata store's primary keys. Vectors are unit length and compared by inner product,
so a score is a cosine similarity in [-1, 1].

The FAISS file is a *derived* copy of the vectors kept in the metadata store (see
``vlmsearch.store.sync``): it is rewritten atomically, and a crash at any time can leave it stale
but never wrong.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import faiss
import numpy as np

from ..errors import StorageError
from .atomic import replace_atomically

EXACT = "Flat"


class VectorIndex:
    """A FAISS ``IndexIDMap2`` of unit vectors under inner product."""

    def __init__(self, dim: int, index: faiss.Index | None = None) -> None:
        self.dim = dim
        self._index: Any = (index if index is not None
                            else faiss.IndexIDMap2(faiss.IndexFlatIP(dim)))
        if self._index.d != dim:
            raise ValueError(f"index dimension {self._index.d} != {dim}")

    # --- reading and writing -------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], dim: int) -> VectorIndex:
        index = faiss.read_index(os.fspath(path))
        return cls(dim, index)

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write atomically: a temp file in the same folder, fsync, rename."""
        target = Path(path)
        try:
            with replace_atomically(target) as tmp:
                faiss.write_index(self._index, os.fspath(tmp))
        except (OSError, RuntimeError) as exc:
            raise StorageError(
                f"could not write {target}: {exc}. The previous file is unchanged; "
                "free some disk space or check the folder's permissions, then run again."
            ) from exc

    # --- contents ------------------------------------------------------------------------
    @property
    def count(self) -> int:
        return int(self._index.ntotal)

    @property
    def kind(self) -> str:
        inner = faiss.downcast_index(self._index.index) if hasattr(self._index, "index") else None
        return type(inner).__name__.removeprefix("Index") if inner is not None else EXACT

    def ids(self) -> np.ndarray:
        return faiss.vector_to_array(self._index.id_map).astype(np.int64)

    def add(self, ids: np.ndarray, vectors: np.ndarray) -> None:
        if len(ids) == 0:
            return
        vecs = np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(ids), self.dim)
        self._index.add_with_ids(vecs, np.ascontiguousarray(ids, dtype=np.int64))

    def remove(self, ids: np.ndarray) -> int:
        if len(ids) == 0:
            return 0
        return int(self._index.remove_ids(np.ascontiguousarray(ids, dtype=np.int64)))

    def reconstruct(self, ident: int) -> np.ndarray:
        return np.asarray(self._index.reconstruct(int(ident)), dtype=np.float32)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top ``k`` (scores, ids) per query row; missing slots have id -1."""
        q = np.ascontiguousarray(queries, dtype=np.float32).reshape(-1, self.dim)
        k = max(1, min(k, max(self.count, 1)))
        scores, ids = self._index.search(q, k)
        return scores, ids
