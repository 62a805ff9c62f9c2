"""CPU inference options for the image towers, side by side in one run. Prints one JSON object.

For the default open_clip architecture (ViT-B-32, random weights: same cost as trained ones)
and the shipped bundle's MobileNetV2 tower (real ImageNet weights), on batches of real Flickr8k
images already decoded to the model's input:

* ``fp32``: what vlmsearch runs today (``inference_mode``, channels-last for convolutions);
* ``fp32_contiguous``: the same without channels-last;
* ``bf16_autocast``: ``torch.autocast("cpu", dtype=torch.bfloat16)``;
* ``int8_dynamic``: ``torch.ao.quantization.quantize_dynamic`` on the linear layers;
* ``onnxruntime``: the module exported to ONNX and run by ONNX Runtime (all cores);

each with images/s and the agreement of its outputs with ``fp32`` (mean and minimum cosine per
image of the tower output). An option is worth keeping only if it is faster and agrees (cosine
≥ 0.99, which keeps retrieval within noise).

    python bench/cpu_inference.py [--batch 32] [--batches 4]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from vlmsearch.decode import decode_file  # noqa: E402
from vlmsearch.encoders.torchutil import pixels_to_tensor  # noqa: E402
from vlmsearch.encoders.towers import tower_features  # noqa: E402

FLICKR = Path(os.environ.get("VLMSEARCH_SHARED", REPO.parent / "shared")) / "data/flickr8k/images"


def timed(fn: Callable[[torch.Tensor], torch.Tensor], batches: list[torch.Tensor]
          ) -> tuple[float, np.ndarray]:
    fn(batches[0][:4])  # warm-up (allocations, one-off kernels)
    start = time.perf_counter()
    outs = [fn(b) for b in batches]
    seconds = time.perf_counter() - start
    n = sum(len(b) for b in batches)
    return n / seconds, torch.cat(outs).float().numpy()


def agreement(ref: np.ndarray, out: np.ndarray) -> dict[str, float]:
    a = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    b = out / np.linalg.norm(out, axis=1, keepdims=True)
    cos = np.sum(a * b, axis=1)
    return {"cosine_mean": round(float(cos.mean()), 5), "cosine_min": round(float(cos.min()), 5)}


def onnx_runner(module: torch.nn.Module, example: torch.Tensor
                ) -> Callable[[torch.Tensor], torch.Tensor]:
    import onnxruntime as ort

    path = Path(tempfile.mkdtemp()) / "tower.onnx"
    torch.onnx.export(module, (example,), str(path), input_names=["x"], output_names=["y"],
                      dynamic_axes={"x": {0: "n"}, "y": {0: "n"}}, opset_version=17,
                      dynamo=False)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = os.cpu_count() or 1
    session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    return lambda x: torch.from_numpy(session.run(None, {"x": x.contiguous().numpy()})[0])


def variants(module: torch.nn.Module, conv: bool, example: torch.Tensor
             ) -> dict[str, Callable[[torch.Tensor], torch.Tensor]]:
    module = module.eval()

    def run(m: torch.nn.Module, channels_last: bool, autocast: bool = False
            ) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(x: torch.Tensor) -> torch.Tensor:
            if channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                if autocast:
                    with torch.autocast("cpu", dtype=torch.bfloat16):
                        return m(x).float()
                return m(x)
        return fn

    cl_module = module.to(memory_format=torch.channels_last) if conv else module
    quantized = torch.ao.quantization.quantize_dynamic(module, {torch.nn.Linear},
                                                       dtype=torch.qint8)
    out = {"fp32": run(cl_module, conv), "fp32_contiguous": run(module, False),
           "bf16_autocast": run(cl_module, conv, autocast=True),
           "int8_dynamic": run(quantized, conv)}
    try:
        out["onnxruntime"] = onnx_runner(module, example)
    except Exception as exc:  # report, do not hide the other figures
        print(f"onnx export failed: {exc}", file=sys.stderr)
    return out


class _VitImage(torch.nn.Module):
    def __init__(self, model: Any) -> None:
        super().__init__()
        self.visual = model.visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.visual(x)


class _MobileNet(torch.nn.Module):
    def __init__(self, tower: Any) -> None:
        super().__init__()
        self.tower = tower

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tower_features(self.tower, x, "pool+f96stat")  # what the shipped head reads


def towers() -> dict[str, tuple[torch.nn.Module, Any, bool]]:
    import open_clip

    from vlmsearch.encoders.registry import load_encoder

    vit = open_clip.create_model("ViT-B-32", pretrained=None)
    vit_spec = load_encoder("openclip:ViT-B-32/random", device="cpu").image_spec
    bundle = load_encoder("flickr8k-mobilenetv2-minilm", device="cpu")
    mobilenet = _MobileNet(bundle.towers.image_tower().cpu())  # type: ignore[attr-defined]
    return {"openclip:ViT-B-32": (_VitImage(vit), vit_spec, False),
            "mobilenet_v2 (bundle tower)": (mobilenet, bundle.image_spec, True)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=4)
    args = parser.parse_args()
    paths = sorted(FLICKR.glob("*.jpg"))[: args.batch * args.batches]
    result: dict[str, Any] = {
        "benchmark": "cpu_inference", "cpu": platform.processor() or platform.machine(),
        "cores": os.cpu_count(), "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(), "images": len(paths), "models": {}}
    for name, (module, spec, conv) in towers().items():
        pixels = np.stack([decode_file(str(p), spec, max_pixels=10**8).pixels for p in paths])
        x = pixels_to_tensor(pixels, spec, torch.device("cpu")).contiguous()
        batches = list(torch.split(x, args.batch))
        figures: dict[str, Any] = {}
        reference: np.ndarray | None = None
        for label, fn in variants(module, conv, batches[0][:2]).items():
            rate, out = timed(fn, batches)
            if reference is None:
                reference = out
            figures[label] = {"images_per_s": round(rate, 2), **agreement(reference, out)}
        base = figures["fp32"]["images_per_s"]
        for fig in figures.values():
            fig["speed_vs_fp32"] = round(fig["images_per_s"] / base, 3)
        result["models"][name] = figures
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
