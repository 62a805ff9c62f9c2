"""Model spec string → :class:`~vlmsearch.encoders.base.Encoder`.

Specs:

* ``openclip:...``: an open_clip model (see ``vlmsearch.encoders.openclip``);
* ``bundle:PATH``, a folder holding ``bundle.json``, or the name of a bundle shipped with
  vlmsearch: a dual encoder with a trained fusion head (see ``vlmsearch.encoders.bundle``);
* ``fake`` / ``fake:DIM``: a deterministic colour-word encoder without torch, for tests and demos.

Only the encoder modules import torch, and only when a model is really loaded.
"""

from __future__ import annotations

import os

from ..errors import ModelSpecError
from .base import Encoder

SPEC_HELP = (
    "use openclip:ARCH/TAG (e.g. openclip:ViT-B-32/laion2b_s34b_b79k), openclip:ARCH@CHECKPOINT, "
    "bundle:PATH, the name of a shipped bundle (see `vlmsearch models`), or fake"
)


def load_encoder(spec: str, *, device: str = "auto") -> Encoder:
    """Make the encoder a spec names. Cheap: weights load on first use."""
    spec = spec.strip()
    if not spec:
        raise ModelSpecError(f"empty model name; {SPEC_HELP}")
    prefix, _, body = spec.partition(":")
    if prefix == "fake":
        return _fake(spec, body)
    if prefix == "openclip":
        from .openclip import OpenClipEncoder

        return OpenClipEncoder(spec, body, device=device)
    from . import bundle

    if prefix == "bundle":
        return bundle.load_bundle_encoder(spec, body, device=device)
    path = bundle.resolve_bundle_path(spec)
    if path is not None:
        return bundle.load_bundle_encoder(spec, os.fspath(path), device=device)
    raise ModelSpecError(f"unknown model {spec!r}; {SPEC_HELP}")


def _fake(spec: str, body: str) -> Encoder:
    from .fake import FakeEncoder

    try:
        dim = int(body) if body else 32
        return FakeEncoder(spec, dim=dim)
    except ValueError as exc:
        raise ModelSpecError(f"bad fake model {spec!r}: {exc}; use fake or fake:DIM") from exc
