"""A 64-bit perceptual hash (DCT pHash) of the pixels an index run has decoded anyway.

Image embeddings alone confuse a mirrored copy, or another photo of the same scene, with a
near-duplicate: to a model they mean the same thing. The hash looks at the picture's layout
instead: the pixels (the model's input, already decoded, so no second decode) are turned to
grey, reduced to 32×32, and the 8×8 lowest frequencies of their 2-D DCT are compared with
their median, one bit each. Resizing, recompressing, a slight crop or rotation and colour
changes flip few of the 64 bits; a mirror image or another photo flips about half.

Hashes are stored as signed 64-bit integers (what SQL and FAISS' binary indexes hold);
:func:`hamming` counts the bits two hashes differ in.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

HASH_BITS = 64
_SIDE = 32
_LOW = 8


def _dct_matrix(n: int) -> np.ndarray:
    k = np.arange(n)[:, None]
    x = np.arange(n)[None, :]
    m = np.cos(np.pi * (2 * x + 1) * k / (2 * n)) * np.sqrt(2.0 / n)
    m[0] /= np.sqrt(2.0)
    return m.astype(np.float64)


_DCT = _dct_matrix(_SIDE)[:_LOW]  # only the low frequencies are needed
_WEIGHTS = (1 << np.arange(HASH_BITS - 1, -1, -1, dtype=np.uint64)).astype(np.uint64)
# bit i (most significant first) holds coefficient (i // 8 vertical, i % 8 horizontal frequency)
_ODD_COLUMNS = np.array([sum(1 << (HASH_BITS - 1 - i) for i in range(HASH_BITS) if i % 2)],
                        dtype=np.uint64).view(np.int64)[0]


def _grey32(pixels: np.ndarray) -> np.ndarray:
    """One H×W×3 uint8 image → 32×32 float grey levels (box-filtered)."""
    image = Image.fromarray(np.ascontiguousarray(pixels, dtype=np.uint8)).convert("L")
    if image.size != (_SIDE, _SIDE):
        image = image.resize((_SIDE, _SIDE), Image.Resampling.BOX)
    return np.asarray(image, dtype=np.float64)


def phashes(pixels: np.ndarray) -> np.ndarray:
    """The hashes of a batch of images (N×H×W×3 uint8) as N signed 64-bit integers."""
    batch = np.asarray(pixels)
    if batch.ndim == 3:
        batch = batch[None]
    if len(batch) == 0:
        return np.zeros(0, dtype=np.int64)
    grey = np.stack([_grey32(img) for img in batch])
    low = np.einsum("ij,njk,lk->nil", _DCT, grey, _DCT).reshape(len(batch), -1)
    ac = low[:, 1:]  # the median leaves out the DC term (overall brightness)
    bits = (low > np.median(ac, axis=1, keepdims=True)).astype(np.uint64)
    bits[:, 0] = 0  # the DC term itself carries no layout: a constant bit
    value = (bits * _WEIGHTS).sum(axis=1, dtype=np.uint64)
    return value.view(np.int64)


def phash(pixels: np.ndarray) -> int:
    """The hash of one image (H×W×3 uint8)."""
    return int(phashes(pixels[None])[0])


def mirror_of(hashes: np.ndarray | int) -> np.ndarray:
    """Close to the hash of the mirror image (left-right flipped) of what ``hashes`` hash.

    Flipping a picture left to right changes the sign of every DCT coefficient of odd
    horizontal frequency and nothing else; the median they are compared with stays about
    where it was (near zero), so those bits flip. A mirrored copy is much closer to the mirror
    of the original's hash than to the hash itself, which is how :mod:`vlmsearch.duplicates`
    tells it from a near duplicate without decoding anything again."""
    return np.bitwise_xor(np.asarray(hashes, dtype=np.int64), _ODD_COLUMNS)


def hamming(a: np.ndarray | int, b: np.ndarray | int) -> np.ndarray:
    """Bits that differ between hashes ``a`` and ``b`` (broadcast; signed 64-bit integers)."""
    x = np.bitwise_xor(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    as_bytes = np.ascontiguousarray(x).view(np.uint8).reshape(*np.shape(x), 8)
    return np.unpackbits(as_bytes, axis=-1).sum(axis=-1)
