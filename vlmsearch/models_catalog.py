"""What ``--model`` can name, for ``vlmsearch models``: shipped bundles, open_clip
architectures with their pretrained tags, and the test encoder."""

from __future__ import annotations

import os
from typing import Any


def list_models() -> list[dict[str, Any]]:
    from .encoders.bundle import shipped_bundles

    entries: list[dict[str, Any]] = list(shipped_bundles())
    entries.extend(_openclip_models())
    entries.append({"spec": "fake", "kind": "fake", "dim": 32, "available": True,
                    "notes": "colour-word test encoder, no learning (tests and demos)"})
    return entries


def _openclip_models() -> list[dict[str, Any]]:
    try:
        import open_clip
    except ImportError:  # pragma: no cover - open_clip is a core dependency
        return []
    out = []
    for arch in open_clip.list_models():
        cfg = open_clip.get_model_config(arch) or {}
        for tag in open_clip.list_pretrained_tags_by_model(arch):
            pcfg = open_clip.get_pretrained_cfg(arch, tag)
            out.append({
                "spec": f"openclip:{arch}/{tag}",
                "kind": "openclip",
                "dim": cfg.get("embed_dim"),
                "available": _cached(pcfg),
                "notes": "" if _cached(pcfg) else "downloads on first use",
            })
    return out


def _cached(pcfg: dict[str, Any]) -> bool:
    """Whether open_clip would find these weights without a download."""
    hub = pcfg.get("hf_hub")
    if hub:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover
            return False
        parts = hub.strip("/").split("/")
        repo = "/".join(parts[:2])
        for filename in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            found = try_to_load_from_cache(repo, filename)
            if isinstance(found, str) and os.path.isfile(found):
                return True
        return False
    url = pcfg.get("url")
    if url:
        cache = os.path.expanduser(os.path.join("~", ".cache", "clip"))
        return os.path.isfile(os.path.join(cache, os.path.basename(url)))
    return False
