"""Indexing throughput against the limits of the hardware, measured side by side in one run.

For one model and one corpus it prints one JSON object with images/s of:

* ``model_forward``: the encoder alone on pre-decoded, pre-cropped uint8 batches (the compute
  limit of this machine for this model);
* ``decode``: decoding + resizing + cropping alone, with the indexer's parallel decoder;
* ``end_to_end``: a real ``vlmsearch index`` process on a fresh index (``seconds`` from its
  JSON report: walking, decoding, encoding, committing and writing FAISS; model loading and
  interpreter start-up excluded, reported separately as ``process_wall_s``), plus its peak RSS;
* ``naive``: the tutorial loop, one image at a time in one thread:
  ``model.encode_image(preprocess(Image.open(path)).unsqueeze(0))``;

and the ratios ``end_to_end / model_forward`` and ``end_to_end / naive``.

    python bench/indexing.py --corpus photos            # 100 × 4000×3000 + 100 × 1600×1200 JPEGs
    python bench/indexing.py --corpus flickr --limit 500
    python bench/indexing.py --model flickr8k-mobilenetv2-minilm --corpus photos

Random weights cost the same as trained ones, so ``openclip:ViT-B-32/random`` (the default
architecture) needs no download.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.corpus import photo_corpus  # noqa: E402
from vlmsearch.encoders.registry import load_encoder  # noqa: E402
from vlmsearch.pipeline import decode_parallel  # noqa: E402

FLICKR = Path(os.environ.get("VLMSEARCH_SHARED", REPO.parent / "shared")) / "data/flickr8k/images"


def corpus_paths(kind: str, limit: int | None, folder: Path) -> list[Path]:
    if kind == "photos":  # alternate 4000×3000 and 1600×1200 so any prefix has both
        all_paths = photo_corpus(folder)
        big = [p for p in all_paths if p.name.startswith("big")]
        medium = [p for p in all_paths if p.name.startswith("medium")]
        paths = [p for pair in zip(big, medium, strict=False) for p in pair]
    else:
        paths = sorted(FLICKR.glob("*.jpg"))
    return paths[:limit] if limit else paths


def bench_decode(paths: list[Path], spec: object) -> tuple[float, list[np.ndarray]]:
    start = time.perf_counter()
    pixels = []
    for _, result in decode_parallel(paths, str, spec, max_pixels=10**9):  # type: ignore[arg-type]
        pixels.append(result.pixels)  # type: ignore[union-attr]
    return len(paths) / (time.perf_counter() - start), pixels


def bench_forward(encoder: object, pixels: list[np.ndarray], batch: int) -> float:
    enc = encoder
    enc.encode_images(np.stack(pixels[:batch]))  # type: ignore[attr-defined]  # warm-up
    start = time.perf_counter()
    for i in range(0, len(pixels), batch):
        enc.encode_images(np.stack(pixels[i:i + batch]))  # type: ignore[attr-defined]
    return len(pixels) / (time.perf_counter() - start)


def bench_end_to_end(paths: list[Path], model: str, batch: int, folder: Path) -> dict[str, float]:
    corpus = folder / "e2e"
    corpus.mkdir(parents=True, exist_ok=True)
    for p in paths:  # a folder holding exactly these files
        link = corpus / p.name
        if not link.exists():
            link.symlink_to(p)
    index = folder / "e2e-index"
    cmd = ["/usr/bin/time", "-f", "%M", sys.executable, "-m", "vlmsearch.cli", "index",
           str(corpus), "--index-dir", str(index), "--model", model, "--batch-size", str(batch),
           "--json"]
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - start
    report = json.loads(done.stdout)
    assert report["added"] == len(paths), report
    peak_kb = int(done.stderr.strip().splitlines()[-1])
    return {"images_per_s": len(paths) / report["seconds"], "run_s": report["seconds"],
            "process_wall_s": wall, "peak_rss_mb": peak_kb / 1024}


def bench_naive(paths: list[Path], model: str) -> float:
    """The loop most tutorials show, with the model's own preprocessing transform."""
    import torch
    from PIL import Image

    if model.startswith("openclip:"):
        import open_clip

        arch = model.removeprefix("openclip:").split("/")[0]
        torch.manual_seed(0)
        net, _, preprocess = open_clip.create_model_and_transforms(arch, pretrained=None)
        net.eval()

        def encode(x: torch.Tensor) -> torch.Tensor:
            return net.encode_image(x)
    else:
        from torchvision import transforms

        enc = load_encoder(model, device="cpu")
        spec = enc.image_spec
        preprocess = transforms.Compose([
            transforms.Resize(spec.resize), transforms.CenterCrop(spec.size),
            transforms.ToTensor(), transforms.Normalize(spec.mean, spec.std)])
        from vlmsearch.encoders.head import HeadConfig
        from vlmsearch.encoders.towers import tower_features

        head = enc.head()  # type: ignore[attr-defined]
        tower = enc.towers.image_tower()  # type: ignore[attr-defined]
        form = HeadConfig.from_dict(enc.config["head"]).image_input  # type: ignore[attr-defined]
        views = enc.views  # type: ignore[attr-defined]

        def encode(x: torch.Tensor) -> torch.Tensor:  # the bundle's own views, e.g. + mirrored
            out = torch.zeros(())
            for view in views:
                v = x.flip(3) if view == "flip" else x
                out = out + head.encode_image(tower_features(tower, v, form))
            return out

    with torch.inference_mode():
        encode(preprocess(Image.open(paths[0]).convert("RGB")).unsqueeze(0))
        start = time.perf_counter()
        for p in paths:
            encode(preprocess(Image.open(p).convert("RGB")).unsqueeze(0))
    return len(paths) / (time.perf_counter() - start)


def machine() -> dict[str, object]:
    import torch

    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "python": platform.python_version(), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="openclip:ViT-B-32/random")
    parser.add_argument("--corpus", choices=["photos", "flickr"], default="photos")
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--naive-limit", type=int, default=60,
                        help="images for the (slow) naive loop")
    parser.add_argument("--work", type=Path,
                        default=Path(tempfile.gettempdir()) / "vlmsearch-bench")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    paths = corpus_paths(args.corpus, args.limit, args.work / "photos")
    encoder = load_encoder(args.model, device=args.device)
    decode_rate, pixels = bench_decode(paths, encoder.image_spec)
    forward_rate = bench_forward(encoder, pixels, args.batch_size)
    with tempfile.TemporaryDirectory(dir=args.work) as tmp:
        e2e = bench_end_to_end(paths, args.model, args.batch_size, Path(tmp))
    step = max(1, len(paths) // args.naive_limit)
    naive_rate = bench_naive(paths[::step][: args.naive_limit], args.model)
    result = {
        "benchmark": "indexing",
        "model": args.model,
        "corpus": args.corpus,
        "images": len(paths),
        "device": encoder.device,
        "images_per_s": {"model_forward": round(forward_rate, 2), "decode": round(decode_rate, 2),
                         "end_to_end": round(e2e["images_per_s"], 2),
                         "naive": round(naive_rate, 2)},
        "ratios": {"end_to_end_over_model_forward": round(e2e["images_per_s"] / forward_rate, 3),
                   "end_to_end_over_naive": round(e2e["images_per_s"] / naive_rate, 3)},
        "end_to_end": {k: round(v, 2) for k, v in e2e.items()},
        "naive_images": min(len(paths), args.naive_limit),
        "machine": machine(),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
