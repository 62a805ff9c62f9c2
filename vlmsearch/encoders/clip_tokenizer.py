"""CLIP's byte-level BPE tokenizer without torch, for the fast query path.

open_clip's ``SimpleTokenizer`` lives in a module that imports torch (seconds of start-up); this
is the same algorithm returning NumPy arrays, reading open_clip's own vocabulary file (found
without importing open_clip). Tests check it token for token against open_clip's.
"""

from __future__ import annotations

import gzip
import html
import importlib.util
import pickle
from functools import lru_cache
from pathlib import Path

import numpy as np

VOCAB_FILE = "bpe_simple_vocab_16e6.txt.gz"


def open_clip_vocab() -> Path:
    spec = importlib.util.find_spec("open_clip")  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("open_clip is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / VOCAB_FILE


@lru_cache
def _bytes_to_unicode() -> dict[int, str]:
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs], strict=True))


def _parse_vocab(
    path: Path, special: list[str]
) -> tuple[dict[str, int], dict[tuple[str, ...], int]]:
    with gzip.open(path) as fh:
        merges_text = fh.read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges_text[1:49152 - 256 - 2 + 1]]
    vocab = list(_bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab.extend("".join(m) for m in merges)
    vocab.extend(special)
    return {tok: i for i, tok in enumerate(vocab)}, {m: i for i, m in enumerate(merges)}


class ClipTokenizer:
    """``tokenize(texts) -> int64 array N×context_length``, identical to open_clip's
    ``SimpleTokenizer`` with the default ``lower`` cleaning."""

    def __init__(self, vocab_file: Path | None = None, context_length: int = 77,
                 cache_file: Path | None = None) -> None:
        """``cache_file``: where to keep the parsed vocabulary (a pickle written by this class),
        so later instances skip parsing 49k merges."""
        import regex

        special = ["<start_of_text>", "<end_of_text>"]
        if cache_file is not None and cache_file.is_file():
            with open(cache_file, "rb") as fh:
                self.encoder, self.bpe_ranks = pickle.load(fh)
        else:
            self.encoder, self.bpe_ranks = _parse_vocab(vocab_file or open_clip_vocab(), special)
            if cache_file is not None:
                with open(cache_file, "wb") as fh:
                    pickle.dump((self.encoder, self.bpe_ranks), fh, protocol=5)
        self.cache: dict[str, str] = {t: t for t in special}
        self.pat = regex.compile(
            "|".join(special)
            + r"""|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
            regex.IGNORECASE,
        )
        self.sot, self.eot = self.encoder[special[0]], self.encoder[special[1]]
        self.context_length = context_length
        self._byte_encoder = _bytes_to_unicode()

    def _bpe(self, token: str) -> str:
        if token in self.cache:
            return self.cache[token]
        word: tuple[str, ...] = (*token[:-1], token[-1] + "</w>")
        pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        if not pairs:
            return token + "</w>"
        while True:
            bigram = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if bigram not in self.bpe_ranks:
                break
            first, second = bigram
            merged: list[str] = []
            i = 0
            while i < len(word):
                try:
                    j = word.index(first, i)
                except ValueError:
                    merged.extend(word[i:])
                    break
                merged.extend(word[i:j])
                i = j
                if word[i] == first and i < len(word) - 1 and word[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(word[i])
                    i += 1
            word = tuple(merged)
            if len(word) == 1:
                break
            pairs = {(word[i], word[i + 1]) for i in range(len(word) - 1)}
        out = " ".join(word)
        self.cache[token] = out
        return out

    def encode(self, text: str) -> list[int]:
        import ftfy

        text = html.unescape(html.unescape(ftfy.fix_text(text))).strip()
        text = " ".join(text.split()).strip().lower()
        ids: list[int] = []
        for token in self.pat.findall(text):
            token = "".join(self._byte_encoder[b] for b in token.encode("utf-8"))
            ids.extend(self.encoder[t] for t in self._bpe(token).split(" "))
        return ids

    def count(self, text: str) -> int:
        """Tokens including the start and end markers."""
        return len(self.encode(text)) + 2

    def tokenize(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.context_length), dtype=np.int64)
        for row, text in enumerate(texts):
            tokens = [self.sot, *self.encode(text), self.eot]
            if len(tokens) > self.context_length:
                tokens = tokens[: self.context_length]
                tokens[-1] = self.eot
            out[row, : len(tokens)] = tokens
        return out
