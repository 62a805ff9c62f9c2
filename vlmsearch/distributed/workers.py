"""What runs on the cluster: Ray Data ``map_batches`` callables over blocks of files.

A block is a dict of NumPy columns, ``i`` (the file's position in the driver's to-do list) and
``path``. The result has one row per input row:

* ``i``, ``digest`` (content hash, ``""`` when the file failed), ``width``, ``height``, ``meta``
  (what the photo says about itself, :class:`~vlmsearch.photo_meta.PhotoMeta` as JSON);
* ``error`` (``""`` when decoded) and ``vanished`` (the file disappeared: nothing to record);
* ``vector`` (N×dim float32) and ``has_vector``: False for failed files and for contents whose
  digest the store already had when the run started (their vector is reused, not recomputed);
* ``phash``: the perceptual hash (:mod:`vlmsearch.phash`) of the same pixels, where
  ``has_vector``.

Decoding uses vlmsearch's safe decoder (:func:`vlmsearch.decode.decode_file`), so a bad file
fails here exactly as it does in the local indexer, with the same reason. Nothing here writes
anywhere: results go back to the driver, the only writer of the index. Nothing here imports
Ray at module level either, so the functions can be tested without a cluster.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from ..decode import DecodedImage, DecodeError, ImageSpec
from ..encoders.base import Encoder
from ..encoders.registry import load_encoder
from ..errors import ModelMismatchError
from ..phash import phashes
from ..pipeline import decode_parallel

Block = dict[str, np.ndarray]


def digest_key(digest: str) -> bytes:
    """A hex content digest as the fixed-width bytes kept in the known-digest table."""
    return bytes.fromhex(digest)


def known_table(digests: list[str]) -> np.ndarray:
    """Sorted ``S16`` array of digests, searched with :func:`np.searchsorted` on the workers
    (16 bytes per distinct content: 160 MB for ten million)."""
    table = np.array([digest_key(d) for d in digests], dtype="S16")
    table.sort()
    return table


def _is_known(table: np.ndarray, digest: str) -> bool:
    if len(table) == 0:
        return False
    key = np.array(digest_key(digest), dtype="S16")
    pos = int(np.searchsorted(table, key))
    return pos < len(table) and table[pos] == key


def _resolve(value: Any) -> Any:
    """Large arguments arrive as a Ray object reference in a one-item list (fetched once per
    process, from the node's shared object store)."""
    if isinstance(value, list) and len(value) == 1 and type(value[0]).__name__ == "ObjectRef":
        import ray

        return ray.get(value[0])
    return value


def decode_block(
    block: Block, *, spec: ImageSpec, max_pixels: int, known: Any, threads: int = 0
) -> Block:
    """Decode and hash one block. Pixels are kept only for rows that need the model."""
    table = _resolve(known)
    paths = [str(p) for p in block["path"]]
    n = len(paths)
    out: Block = _empty_result(block["i"], n)
    pixels = np.zeros((n, spec.size, spec.size, 3), dtype=np.uint8)
    decoded = decode_parallel(range(n), lambda row: paths[row], spec, max_pixels=max_pixels,
                              workers=threads, window=max(8, n))
    for row, result in decoded:
        if isinstance(result, DecodeError):
            out["error"][row] = result.reason
            out["vanished"][row] = result.vanished
            continue
        _fill(out, row, result)
        if not _is_known(table, result.digest):
            pixels[row] = result.pixels
            out["has_vector"][row] = True  # to be encoded
    out["pixels"] = pixels
    return out


def _empty_result(ids: np.ndarray, n: int) -> Block:
    return {
        "i": np.asarray(ids, dtype=np.int64),
        "digest": np.array([""] * n, dtype=object),
        "width": np.zeros(n, dtype=np.int64),
        "height": np.zeros(n, dtype=np.int64),
        "error": np.array([""] * n, dtype=object),
        "vanished": np.zeros(n, dtype=bool),
        "has_vector": np.zeros(n, dtype=bool),
        "meta": np.array([""] * n, dtype=object),
    }


def _fill(out: Block, row: int, result: DecodedImage) -> None:
    out["digest"][row] = result.digest
    out["width"][row] = result.width
    out["height"][row] = result.height
    out["meta"][row] = json.dumps(result.meta.to_dict())


class BlockEncoder:
    """An encoder actor: loads the model once, then embeds block after block.

    ``decode=True`` (CPU actors): the actor decodes its blocks itself, in threads, so decoded
    pixels never leave the process that made them: a node holds at most
    ``actors × block_size`` decoded images. ``decode=False`` (GPU actors): blocks arrive decoded
    by :func:`decode_block` tasks, with a ``pixels`` column.
    """

    def __init__(
        self,
        *,
        model_spec: str,
        model_id: str,
        device: str,
        batch_size: int,
        max_pixels: int,
        known: Any = None,
        decode: bool = True,
        threads: int = 0,
    ) -> None:
        self.encoder: Encoder = load_encoder(model_spec, device=device)
        if self.encoder.model_id != model_id:
            raise ModelMismatchError(
                f"the model {model_spec!r} loads different weights on this Ray worker "
                f"({self.encoder.model_id}) than on the driver ({model_id}); install the same "
                "weights on every node (or point --model at a file on a shared filesystem)"
            )
        self.batch_size = batch_size
        self.max_pixels = max_pixels
        self.known = _resolve(known) if known is not None else np.zeros(0, dtype="S16")
        self.decode = decode
        self.threads = threads

    def __call__(self, block: Block) -> Block:
        if self.decode:
            block = decode_block(block, spec=self.encoder.image_spec, max_pixels=self.max_pixels,
                                 known=self.known, threads=self.threads)
        pixels = block.pop("pixels")
        todo = np.flatnonzero(block["has_vector"])
        vectors = np.zeros((len(block["i"]), self.encoder.dim), dtype=np.float32)
        for start in range(0, len(todo), self.batch_size):
            rows = todo[start:start + self.batch_size]
            vectors[rows] = self.encoder.encode_images(pixels[rows])
        block["vector"] = vectors
        hashes = np.zeros(len(block["i"]), dtype=np.int64)  # made with the vector, same pixels
        if len(todo):
            hashes[todo] = phashes(pixels[todo])
        block["phash"] = hashes
        return block
