"""How a query becomes one unit vector.

* text only: the text's vector; image only (a file, bytes or an indexed image): its vector;
* text and image: the normalised mean of the two (each normalised first, so neither dominates);
* each ``--not`` text subtracts ``NEGATIVE_WEIGHT`` × its vector, then the result is normalised.

The score of a hit is the cosine similarity between that query vector and the item's vector,
in [-1, 1]; higher is more similar. Scores are comparable within one query, not across models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..encoders.base import l2_normalize
from ..errors import UsageError

NEGATIVE_WEIGHT = 0.5


def combine(
    positives: Sequence[np.ndarray], negatives: Sequence[np.ndarray] = ()
) -> np.ndarray:
    """The query vector for some positive and negative unit vectors (see module docstring)."""
    if not positives:
        raise UsageError("a query needs text, an image, or both (--not alone is not a query)")
    if any(not np.any(p) for p in positives):
        raise UsageError("this model found nothing to go on in the query; use some words")
    q = l2_normalize(np.mean([l2_normalize(p.reshape(1, -1))[0] for p in positives], axis=0))
    for neg in negatives:
        q = q - NEGATIVE_WEIGHT * l2_normalize(neg.reshape(1, -1))[0]
    q = l2_normalize(q.reshape(1, -1))[0]
    if not np.any(q):
        raise UsageError("the query and its --not terms cancel out; drop a --not term")
    return q.astype(np.float32)
