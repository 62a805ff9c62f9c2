"""A deterministic, torch-free encoder for tests and demos: ``--model fake``.

It understands colour words. An image's vector is led by how close its mean colour is to a few
named colours, plus a small fingerprint of its layout (so different pictures differ); a text's
vector is led by the colour words it contains, plus hashed other words. So "red" finds red
pictures, a red picture finds other red pictures and the caption "a red square". Nothing here is
learned: it exists so that the indexer, the stores, the CLI and the web layer can be tested in
milliseconds with results the tests control.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from ..decode import ImageSpec
from .base import l2_normalize

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 40),
    "blue": (30, 60, 220),
    "yellow": (240, 220, 30),
    "orange": (245, 140, 20),
    "purple": (130, 40, 170),
    "white": (245, 245, 245),
    "black": (10, 10, 10),
    "gray": (128, 128, 128),
    "pink": (250, 150, 190),
}
_NAMES = list(COLOURS)
_PROTOTYPES = np.array([COLOURS[n] for n in _NAMES], dtype=np.float32)
_WORD_RE = re.compile(r"[a-z0-9]+")


class FakeEncoder:
    """See the module docstring. ``dim`` ≥ 16; the first ``len(COLOURS)`` dims are colours."""

    device = "none"

    def __init__(self, spec: str = "fake", dim: int = 32) -> None:
        if dim < len(COLOURS) + 4:
            raise ValueError(f"fake encoder needs dim >= {len(COLOURS) + 4}")
        self.spec = spec
        self._dim = dim

    @property
    def model_id(self) -> str:
        return f"fake-colours-v1-d{self._dim}"

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec(size=32, resize=32, interpolation="bilinear",
                         mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))

    def encode_images(self, pixels: np.ndarray) -> np.ndarray:
        pixels = np.asarray(pixels, dtype=np.float32)
        out = np.zeros((len(pixels), self._dim), dtype=np.float32)
        n_col = len(COLOURS)
        for i, img in enumerate(pixels):
            mean = img.reshape(-1, 3).mean(axis=0)
            dist = np.linalg.norm(_PROTOTYPES - mean, axis=1)
            weights = np.exp(-(dist - dist.min()) / 25.0)
            out[i, :n_col] = weights / weights.sum()
            # layout fingerprint: a 2x2 grid of mean brightness, hashed into the spare dims
            h, w = img.shape[:2]
            cells = [img[:h // 2, :w // 2], img[:h // 2, w // 2:], img[h // 2:, :w // 2],
                     img[h // 2:, w // 2:]]
            for j, cell in enumerate(cells):
                out[i, n_col + j % (self._dim - n_col)] += 0.05 * float(cell.mean()) / 255.0
        return l2_normalize(out)

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        n_col = len(COLOURS)
        for i, text in enumerate(texts):
            words = _WORD_RE.findall(text.lower()) or text.split()  # punctuation: still a query
            for word in words:
                if word in COLOURS:
                    out[i, _NAMES.index(word)] += 1.0
                else:
                    digest = hashlib.blake2b(word.encode("utf-8", "surrogatepass"),
                                             digest_size=4).digest()
                    slot = n_col + int.from_bytes(digest, "little") % (self._dim - n_col)
                    out[i, slot] += 0.1
        return l2_normalize(out)
