"""Image-side speed of the models ``vlmsearch models`` recommends, side by side in one run.

For each model of the short list (the shipped bundles and the recommended open_clip models,
from ``vlmsearch.models_catalog``) it prints images/s of the encoder alone on real Flickr8k
images already decoded to the model's input (``encode_images`` on uint8 batches, after one
warm-up batch): the compute limit of indexing on this machine. Indexing end to end runs at
0.87-0.99 of this figure (``bench/indexing.py``). open_clip models run with random weights
(``ARCH/random``: the same cost as trained ones, and no download); bundles with their real
towers. A model whose image tower is the same architecture as one already measured (the
multilingual ViT-B-32 has ViT-B-32's) reuses that figure, marked ``same_image_tower_as``.

    python bench/model_speed.py [--images 96] [--batch 32] [--models SPEC ...]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.indexing import FLICKR, machine  # noqa: E402
from vlmsearch.encoders.registry import load_encoder  # noqa: E402
from vlmsearch.pipeline import decode_parallel  # noqa: E402


def random_twin(spec: str) -> str:
    """``openclip:ARCH/TAG`` → ``openclip:ARCH/random`` (same architecture, no download)."""
    if spec.startswith("openclip:") and "/" in spec:
        return spec.rsplit("/", 1)[0] + "/random"
    return spec


def vision_key(spec: str) -> str | None:
    """The image tower's architecture, to spot two models that share it."""
    if not spec.startswith("openclip:"):
        return None
    import open_clip

    arch = spec.removeprefix("openclip:").rsplit("/", 1)[0]
    cfg = open_clip.get_model_config(arch) or {}
    return json.dumps([cfg.get("embed_dim"), cfg.get("vision_cfg")], sort_keys=True)


def measure(spec: str, paths: list[Path], batch: int) -> dict[str, Any]:
    encoder = load_encoder(random_twin(spec), device="cpu")
    load_start = time.perf_counter()
    spec_in = encoder.image_spec
    load_s = time.perf_counter() - load_start
    pixels = [r.pixels for _, r in decode_parallel(paths, str, spec_in, max_pixels=10**9)]  # type: ignore[union-attr,arg-type]
    encoder.encode_images(np.stack(pixels[:batch]))  # warm-up (and a bundle's ONNX export)
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        encoder.encode_images(np.stack(pixels[i:i + batch]))
    rate = len(pixels) / (time.perf_counter() - start)
    return {"images_per_s": round(rate, 2), "input_px": spec_in.size, "load_s": round(load_s, 1)}


def main() -> None:
    from vlmsearch.models_catalog import short_list_specs

    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=96)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--models", nargs="*", default=None)
    args = parser.parse_args()

    paths = sorted(FLICKR.glob("*.jpg"))[: args.images]
    results: dict[str, Any] = {}
    seen: dict[str, str] = {}
    for spec in args.models or short_list_specs():
        key = vision_key(spec)
        if key is not None and key in seen:
            results[spec] = {**results[seen[key]], "same_image_tower_as": seen[key]}
            continue
        results[spec] = measure(spec, paths, args.batch)
        if key is not None:
            seen[key] = spec
        print(f"{spec}: {results[spec]}", file=sys.stderr, flush=True)
    print(json.dumps({"benchmark": "model_speed", "images": len(paths), "batch": args.batch,
                      "threads": os.cpu_count(), "models": results, "machine": machine()},
                     indent=2))


if __name__ == "__main__":
    main()
