"""Shared torch plumbing for the encoders: device choice, input tensors, mixed precision."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import torch

from ..decode import ImageSpec
from ..errors import UsageError


def pick_device(requested: str = "auto") -> torch.device:
    """``auto``: cuda, then mps, then cpu. An explicit device that is not there is an error."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise UsageError("--device cuda was asked for but no CUDA GPU is usable here; "
                         "use --device cpu (or auto)")
    if requested == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise UsageError("--device mps was asked for but Metal is not available; "
                             "use --device cpu (or auto)")
    return torch.device(requested)


def pixels_to_tensor(pixels: np.ndarray, spec: ImageSpec, device: torch.device) -> torch.Tensor:
    """uint8 N×H×W×3 → normalised float N×3×H×W on ``device`` (the copy is the last step, so
    only uint8 crosses to a GPU: a quarter of the bytes)."""
    batch = torch.from_numpy(np.require(pixels, np.uint8, requirements=["C", "W"]))
    if device.type == "cuda":
        batch = batch.pin_memory().to(device, non_blocking=True)
    else:
        batch = batch.to(device)
    x = batch.permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(spec.mean, device=device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=device).view(1, 3, 1, 1)
    x = (x - mean) / std
    return x.contiguous(memory_format=torch.channels_last)


@contextlib.contextmanager
def inference(device: torch.device) -> Iterator[None]:
    """``inference_mode`` everywhere, plus fp16 autocast on CUDA (bf16 where supported is no
    faster for these models) and on MPS."""
    with torch.inference_mode():
        if device.type == "cuda":
            with torch.autocast("cuda", dtype=torch.float16):
                yield
        elif device.type == "mps":
            with torch.autocast("mps", dtype=torch.float16):
                yield
        else:
            yield


def to_unit_numpy(x: torch.Tensor) -> np.ndarray:
    x = x.float()
    x = torch.nn.functional.normalize(x, dim=-1)
    return x.cpu().numpy().astype(np.float32, copy=False)
