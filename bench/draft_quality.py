"""Does JPEG draft decoding cost retrieval quality? Prints one JSON object.

The indexer decodes JPEGs in draft mode (libjpeg's DCT scaling by 1/2, 1/4 or 1/8) straight to
just above the model's input size, instead of decoding every pixel and then shrinking. Camera
photos are where that matters, and the Flickr8k files are only 224×224, so this script makes
camera-sized copies: each dev image upscaled ``--scale`` times (bicubic) and saved as a JPEG
(quality 92). Both decoders then feed the same encoder:

* ``cosine``: per image, the cosine between the draft-decoded and the fully decoded embedding
  (mean, min, 1st percentile, share ≥ 0.99);
* ``full`` / ``draft``: the standard retrieval metrics of the dev split (each caption against
  all images and back) with each decoder, and their difference in points.

    python bench/draft_quality.py --model flickr8k-mobilenetv2-minilm
    python bench/draft_quality.py --model openclip:ViT-B-32/random --limit 200 --no-recall
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vlmsearch.decode import open_image, prepare  # noqa: E402
from vlmsearch.encoders.registry import load_encoder  # noqa: E402
from vlmsearch.evaluation import retrieval_metrics  # noqa: E402
from vlmsearch.pairs import PairSet, build_pairs  # noqa: E402
from vlmsearch.pipeline import embed_texts  # noqa: E402

FLICKR = Path(os.environ.get("VLMSEARCH_SHARED", REPO.parent / "shared")) / "data/flickr8k"
MAX_PIXELS = 10**9


def camera_copy(source: Path, scale: int) -> bytes:
    with Image.open(source) as img:
        big = img.convert("RGB").resize((img.width * scale, img.height * scale),
                                        Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    big.save(buf, "JPEG", quality=92)
    return buf.getvalue()


def embed(encoder: Any, files: list[bytes], *, draft: bool, batch: int = 32) -> np.ndarray:
    spec = encoder.image_spec
    out = []
    for i in range(0, len(files), batch):
        pixels = []
        for data in files[i:i + batch]:
            img, _ = open_image(data, max_pixels=MAX_PIXELS,
                                min_side=spec.resize if draft else None)
            pixels.append(prepare(img, spec))
        out.append(encoder.encode_images(np.stack(pixels)))
    return np.concatenate(out)


def compare(model: str, pairs: PairSet, *, scale: int, recall: bool,
            device: str = "auto") -> dict[str, Any]:
    """The comparison for the images of ``pairs`` (the library entry point for tests)."""
    encoder = load_encoder(model, device=device)
    start = time.perf_counter()
    files = [camera_copy(Path(p), scale) for p in pairs.images]
    make_s = time.perf_counter() - start
    timings = {}
    vecs = {}
    for name, draft in (("full", False), ("draft", True)):
        start = time.perf_counter()
        vecs[name] = embed(encoder, files, draft=draft)
        timings[f"{name}_decode_and_encode_s"] = round(time.perf_counter() - start, 2)
    cos = np.sum(vecs["full"] * vecs["draft"], axis=1)
    with Image.open(io.BytesIO(files[0])) as first:
        size = first.size
    result: dict[str, Any] = {
        "model": model, "images": len(files), "camera_size": list(size),
        "cosine": {"mean": round(float(cos.mean()), 5), "min": round(float(cos.min()), 5),
                   "p01": round(float(np.percentile(cos, 1)), 5),
                   "share_at_least_0.99": round(float(np.mean(cos >= 0.99)), 4)},
        "seconds": {"make_copies": round(make_s, 1), **timings},
    }
    if recall:
        texts = embed_texts(encoder, pairs.captions)
        metrics = {n: retrieval_metrics(v, texts, pairs.caption_image) for n, v in vecs.items()}
        result["full"], result["draft"] = metrics["full"], metrics["draft"]
        result["draft_minus_full"] = {
            d: {k: round(metrics["draft"][d][k] - metrics["full"][d][k], 2)
                for k in ("R@1", "R@5", "R@10")}
            for d in ("text_to_image", "image_to_text")}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="flickr8k-mobilenetv2-minilm")
    parser.add_argument("--list", type=Path, default=FLICKR / "dev.txt")
    parser.add_argument("--limit", type=int, default=None, help="first N images of the list")
    parser.add_argument("--scale", type=int, default=4, help="upscale factor of the copies")
    parser.add_argument("--no-recall", action="store_true", help="embeddings only")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    names = [n for n in args.list.read_text().split() if n]
    if args.limit:
        names = names[: args.limit]
    with tempfile.TemporaryDirectory() as tmp:
        subset = Path(tmp) / "list.txt"
        subset.write_text("\n".join(names) + "\n")
        pairs = build_pairs(FLICKR / "captions.tsv", FLICKR / "images", subset)
    print(json.dumps(compare(args.model, pairs, scale=args.scale, recall=not args.no_recall,
                             device=args.device), indent=2))


if __name__ == "__main__":
    main()
