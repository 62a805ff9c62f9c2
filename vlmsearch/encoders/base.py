"""The encoder protocol: what the indexer and searcher need from a model.

An encoder turns model-ready image pixels (see :class:`vlmsearch.decode.ImageSpec`) and texts into
float32 rows of unit length in one shared space, so inner product = cosine similarity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ..decode import ImageSpec


@runtime_checkable
class Encoder(Protocol):
    """A dual encoder. Implementations load their weights lazily and may be used from one thread
    at a time."""

    spec: str
    """The ``--model`` string this encoder was made from."""

    @property
    def model_id(self) -> str:
        """Identifies the weights: two encoders with the same id give the same vectors."""
        ...

    @property
    def dim(self) -> int:
        """Length of the vectors."""
        ...

    @property
    def image_spec(self) -> ImageSpec:
        """How images must be decoded and cropped for this model."""
        ...

    @property
    def device(self) -> str:
        """Where the model runs (``cpu``, ``cuda``, ``mps``; ``none`` for encoders without
        torch)."""
        ...

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        """``pixels``: uint8 array N×S×S×3 (S = ``image_spec.size``) → float32 N×dim, unit rows."""
        ...

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Texts → float32 N×dim, unit rows. Texts longer than the model's context are
        truncated."""
        ...


def l2_normalize(rows: np.ndarray) -> np.ndarray:
    """Unit-length float32 rows; zero rows stay zero."""
    rows = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(rows, axis=-1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)
