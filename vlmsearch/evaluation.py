"""Image–caption retrieval metrics, the standard Flickr8k/Flickr30k/COCO protocol.

* text→image: every caption queries all images of the split; R@K is the percentage of captions
  whose own image is among the top K; the median rank is over captions (1 = first).
* image→text: every image queries all captions of the split; it counts as a hit at K when *any*
  of its own captions is among the top K; the rank of an image is that of its best-ranked own
  caption.

Recalls are percentages (0–100). Ties are broken pessimistically (an item tied with the correct
one counts as ranked ahead of it), so a constant model scores at chance, not at 100.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from .encoders.base import Encoder
from .pairs import PairSet
from .pipeline import embed_image_files, embed_texts

KS = (1, 5, 10)


def _summary(ranks: np.ndarray) -> dict[str, float]:
    out = {f"R@{k}": round(float(np.mean(ranks <= k) * 100.0), 2) for k in KS}
    out["median_rank"] = float(np.median(ranks))
    return out


def retrieval_metrics(
    image_vecs: np.ndarray, text_vecs: np.ndarray, caption_image: np.ndarray
) -> dict[str, dict[str, float]]:
    """Metrics for unit vectors of N images and M captions; ``caption_image[j]`` is the image
    of caption ``j``."""
    sims = text_vecs @ image_vecs.T  # M×N
    m = len(text_vecs)
    own = sims[np.arange(m), caption_image]
    t2i_ranks = (sims >= own[:, None]).sum(axis=1)  # pessimistic ties: self counts once
    i2t_ranks = np.empty(len(image_vecs), dtype=np.int64)
    sims_t = sims.T  # N×M
    for i in range(len(image_vecs)):
        mine = caption_image == i
        if not mine.any():
            i2t_ranks[i] = m + 1
            continue
        best = sims_t[i, mine].max()
        # rank of the best own caption: captions scoring at least as high, counting the best once
        i2t_ranks[i] = int((sims_t[i, ~mine] >= best).sum()) + 1
    return {"text_to_image": _summary(t2i_ranks), "image_to_text": _summary(i2t_ranks)}


def split_metrics(image_vecs: np.ndarray, text_vecs: np.ndarray, caption_image: np.ndarray,
                  languages: tuple[str, ...] = (),
                  caption_lang: np.ndarray | None = None) -> dict[str, Any]:
    """:func:`retrieval_metrics`, per language when the captions come in several: each
    language's captions are scored against all the images on their own (so image→text is
    "any own caption *in that language*"), and the top-level figures are then the mean over
    the languages (each language counts once, whatever its number of captions), with the
    per-language figures under ``languages``."""
    if caption_lang is None or len(languages) < 2:
        out: dict[str, Any] = retrieval_metrics(image_vecs, text_vecs, caption_image)
        if caption_lang is not None and languages:
            out["languages"] = {languages[0]: dict(out)}
        return out
    per: dict[str, Any] = {}
    for li, lang in enumerate(languages):
        rows = np.flatnonzero(caption_lang == li)
        per[lang] = retrieval_metrics(image_vecs, text_vecs[rows], caption_image[rows])
    mean = {direction: {key: round(float(np.mean([per[lang][direction][key] for lang in per])),
                                   2)
                        for key in per[languages[0]][direction]}
            for direction in ("text_to_image", "image_to_text")}
    return {**mean, "languages": per}


def evaluate(
    encoder: Encoder,
    pairs: PairSet,
    *,
    batch_size: int = 64,
    workers: int = 0,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Embed the split through the indexing path (decode → encoder) and score it."""
    prepare = getattr(encoder, "prepare", None)  # one-time work, announced as its own phase
    if prepare is not None:
        prepare(lambda phase: progress(phase, 0, 0) if progress else None)
    image_vecs = embed_image_files(
        encoder, pairs.images, batch_size=batch_size, workers=workers,
        progress=(lambda d, t: progress("images", d, t)) if progress else None,
    )
    text_vecs = embed_texts(
        encoder, pairs.captions,
        progress=(lambda d, t: progress("texts", d, t)) if progress else None,
    )
    metrics: dict[str, Any] = split_metrics(image_vecs, text_vecs, pairs.caption_image,
                                            pairs.languages, pairs.caption_lang)
    metrics.update({"images": len(pairs.images), "texts": len(pairs.captions),
                    "model": encoder.spec})
    return metrics
