"""An index's model, loaded only as far as each job needs it.

Indexing and image queries need the full encoder (torch, seconds to load). Text queries can
often do with the model's text side exported to ONNX (:mod:`vlmsearch.encoders.onnx_text`),
which starts without torch. :class:`LoadedModel` hands out whichever serves and checks that the
full encoder still loads the weights the index was built with.
"""

from __future__ import annotations

import os
from typing import Any

from ..errors import ModelMismatchError
from .base import Encoder
from .registry import load_encoder


class LoadedModel:
    """The model named ``spec`` whose weights are ``model_id``. ``encoder`` may be given
    already loaded (an app's own :class:`Encoder`)."""

    def __init__(
        self, spec: str, model_id: str, *, device: str = "auto", encoder: Encoder | None = None
    ) -> None:
        self.spec = spec
        self.model_id = model_id
        self.device = device
        self._encoder = encoder
        self._fast_text: Any = None

    @property
    def loaded(self) -> bool:
        """Whether the full encoder is loaded (else at most the fast text path is)."""
        return self._encoder is not None

    @property
    def full(self) -> Encoder:
        """The full encoder (loaded on first use)."""
        if self._encoder is None:
            encoder = load_encoder(self.spec, device=self.device)
            if encoder.model_id != self.model_id:
                raise ModelMismatchError(
                    f"the model {self.spec!r} now loads different weights than the index was "
                    f"built with ({encoder.model_id} vs {self.model_id}); rebuild with "
                    f"`vlmsearch index --reindex --model {self.spec} PATH`"
                )
            self._encoder = encoder
        return self._encoder

    def texts(self, *, need_images: bool = False) -> Any:
        """What encodes query texts: the full encoder when it is loaded (or images need it
        anyway), else the exported ONNX text side when one is cached (no torch import)."""
        if self._encoder is not None or need_images or os.environ.get("VLMSEARCH_NO_FAST_TEXT"):
            return self.full
        if self._fast_text is None:
            from .onnx_text import load_cached

            self._fast_text = load_cached(self.model_id) or False
        return self._fast_text or self.full

    def text_token_limit(self, text: str) -> int | None:
        """The model's text length limit in tokens when ``text`` exceeds it (and is therefore
        cut), else None."""
        texts = self.texts()
        limit_for = getattr(texts, "token_limit_for", None)  # models with several text paths
        limit = limit_for(text) if limit_for is not None else getattr(texts, "text_token_limit",
                                                                       None)
        count = getattr(texts, "count_text_tokens", None)
        if limit is None or count is None:
            return None
        return int(limit) if count(text) > limit else None
