"""Training a fusion head on cached tower features.

AdamW (no weight decay on biases, norms, positional embeddings, queries and the temperature),
linear warm-up then cosine decay, batches of images each with ``captions_per_image`` of its
captions, a random augmented view per image, optional EMA of the weights. After every epoch the
dev split is scored with the standard protocol and the best epoch (mean of text→image and
image→text R@1) is kept; training stops after ``patience`` epochs without improvement. Everything
is seeded: the same data, config and seed give the same head.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..encoders.head import FusionHead, HeadConfig, TextPathHead, info_nce
from ..encoders.towers import TextFeatures
from ..evaluation import split_metrics


@dataclass
class TrainConfig:
    epochs: int = 30
    batch_size: int = 256
    captions_per_image: int = 1
    lr: float = 1e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    min_lr_fraction: float = 0.0
    i2t_weight: float = 0.5
    label_smoothing: float = 0.0
    ema: float = 0.0
    clip_grad: float = 0.0
    train_views: list[str] = field(default_factory=lambda: ["center"])
    eval_views: list[str] = field(default_factory=lambda: ["center"])
    """Views whose image embeddings are averaged when scoring (and, in a bundle, when
    encoding: test-time augmentation)."""
    patience: int = 8
    seed: int = 0
    max_captions_per_language: int = 0
    """Train on at most this many captions of each image per language (0: all); the dev
    split is always scored on all of its captions. Fewer captions cost fewer text-tower
    passes on the first run."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class SplitFeatures:
    """Cached features of one split. ``images[view]``: N×C(×H×W) float16; texts: M rows;
    ``caption_image[j]``: the image of caption j; ``image_captions``: N×5 caption rows."""

    images: dict[str, np.ndarray]
    text_mean: np.ndarray
    text_tokens: np.ndarray | None
    text_mask: np.ndarray | None
    caption_image: np.ndarray
    languages: tuple[str, ...] = ()
    caption_lang: np.ndarray | None = None
    """With captions in several languages: ``caption_lang[j]`` indexes ``languages``, and the
    split is scored per language (:func:`vlmsearch.evaluation.split_metrics`)."""

    def image_captions(self) -> list[np.ndarray]:
        order = np.argsort(self.caption_image, kind="stable")
        bounds = np.searchsorted(self.caption_image[order], np.arange(len(self) + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(len(self))]

    def __len__(self) -> int:
        return len(next(iter(self.images.values())))

    def text_batch(self, rows: np.ndarray) -> TextFeatures:
        mean = torch.from_numpy(self.text_mean[rows].astype(np.float32))
        if self.text_tokens is None or self.text_mask is None:
            empty = torch.zeros(len(rows), 1, mean.shape[1])
            return TextFeatures(empty, torch.ones(len(rows), 1), mean)
        mask = self.text_mask[rows]
        longest = max(1, int(mask.sum(1).max()))
        tokens = torch.from_numpy(self.text_tokens[rows, :longest].astype(np.float32))
        return TextFeatures(tokens, torch.from_numpy(mask[:, :longest]), mean)


Progress = Callable[[dict[str, Any]], None]


@dataclass
class TrainResult:
    state: dict[str, torch.Tensor]
    best: dict[str, Any]
    history: list[dict[str, Any]]
    seconds: float
    parameters: int


def head_optimizer(head: torch.nn.Module, config: TrainConfig,
                   undecayed: tuple[str, ...] = (".pos", ".q")) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only: not on biases, norms, the temperature
    or parameters named ending in ``undecayed`` (an attention pool's position and query
    vectors)."""
    decay: list[torch.nn.Parameter] = []
    no_decay: list[torch.nn.Parameter] = []
    for name, p in head.named_parameters():
        skip = p.ndim < 2 or "logit_scale" in name or name.endswith(undecayed)
        (no_decay if skip else decay).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": config.weight_decay},
                              {"params": no_decay, "weight_decay": 0.0}],
                             lr=config.lr, betas=(0.9, 0.98))


def warmup_cosine(config: TrainConfig, steps_per_epoch: int) -> Callable[[int], float]:
    """The learning-rate factor of each step: linear warm-up, then cosine down to
    ``min_lr_fraction``."""
    total = config.epochs * steps_per_epoch
    warm = max(1, int(config.warmup_epochs * steps_per_epoch))

    def lr_factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        p = (step - warm) / max(1, total - warm)
        lo = config.min_lr_fraction
        return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * p))

    return lr_factor


def caption_rows(rng: np.random.RandomState, caps: Sequence[np.ndarray], images: np.ndarray,
                 k: int) -> np.ndarray:
    """``k`` caption rows of each of ``images`` (``caps[i]``: image ``i``'s rows), without
    repeats unless an image has fewer than ``k``: the captions of one batch."""
    return np.concatenate([rng.choice(caps[i], size=k, replace=len(caps[i]) < k)
                           for i in images])


def optimiser_step(opt: torch.optim.Optimizer, loss: torch.Tensor, lr: float,
                   params: Any, clip_grad: float = 0.0) -> None:
    """One step of ``opt`` on ``loss`` at learning rate ``lr``, the gradient norm of
    ``params`` clipped to ``clip_grad`` when that is positive."""
    for group in opt.param_groups:
        group["lr"] = lr
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip_grad > 0:
        torch.nn.utils.clip_grad_norm_(params, clip_grad)
    opt.step()


class BestEpoch:
    """Each epoch's dev metrics, the best epoch (by mean R@1) with its weights, and when
    ``patience`` epochs without a better one say stop."""

    def __init__(self, patience: int, progress: Progress | None = None) -> None:
        self.patience = patience
        self.progress = progress
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.state: dict[str, torch.Tensor] = {}
        self.since_best = 0
        self.start = time.perf_counter()

    def record(self, metrics: dict[str, Any], *, epoch: int, loss: float,
               head: FusionHead | TextPathHead, kept: torch.nn.Module) -> bool:
        """Take an epoch's ``metrics`` (``head`` gives the temperature, ``kept`` the weights
        kept if it is the best); True when training should stop."""
        metrics.update({"epoch": epoch, "loss": round(loss, 4),
                        "temperature": round(1 / float(head.logit_scale.detach().exp()), 4),
                        "seconds": round(time.perf_counter() - self.start, 1)})
        self.history.append(metrics)
        if self.best is None or metrics["mean_R@1"] > self.best["mean_R@1"]:
            self.best = metrics
            self.state = {n: v.detach().clone() for n, v in kept.state_dict().items()}
            self.since_best = 0
        else:
            self.since_best += 1
        if self.progress:
            self.progress(metrics)
        return self.since_best >= self.patience

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.start


@torch.no_grad()
def embed_split(head: torch.nn.Module, split: SplitFeatures, views: Sequence[str] = ("center",),
                batch: int = 500) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors of a split's images (averaged over ``views``) and captions."""
    head.eval()
    encode_image: Any = head.encode_image
    encode_text: Any = head.encode_text
    imgs, txts = [], []
    for s in range(0, len(split), batch):
        parts = [encode_image(torch.from_numpy(split.images[v][s:s + batch].astype(np.float32)))
                 for v in views]
        imgs.append(F.normalize(torch.stack(parts).sum(0), dim=-1))
    for s in range(0, len(split.text_mean), batch):
        rows = np.arange(s, min(s + batch, len(split.text_mean)))
        txts.append(encode_text(split.text_batch(rows)))
    return torch.cat(imgs).numpy(), torch.cat(txts).numpy()


def score(head: torch.nn.Module, split: SplitFeatures,
          views: Sequence[str] = ("center",)) -> dict[str, Any]:
    image_vecs, text_vecs = embed_split(head, split, views)
    metrics: dict[str, Any] = split_metrics(image_vecs, text_vecs, split.caption_image,
                                            split.languages, split.caption_lang)
    for part in [metrics, *metrics.get("languages", {}).values()]:
        part["mean_R@1"] = round(0.5 * (part["text_to_image"]["R@1"]
                                        + part["image_to_text"]["R@1"]), 2)
    return metrics


def train_head(head_config: HeadConfig, config: TrainConfig, train: SplitFeatures,
               dev: SplitFeatures, progress: Progress | None = None) -> TrainResult:
    torch.manual_seed(config.seed)
    rng = np.random.RandomState(config.seed)
    head = FusionHead(head_config)
    if head_config.img_extra != "none":  # standardise the extra statistics on training data
        extra = train.images["center"][:, head_config.image_features:].astype(np.float32)
        head.image.extra_mean.copy_(torch.from_numpy(extra.mean(0)))
        head.image.extra_std.copy_(torch.from_numpy(extra.std(0) + 1e-3))
    opt = head_optimizer(head, config)
    caps = train.image_captions()
    n_img = len(train)
    b = min(config.batch_size, n_img)
    steps_per_epoch = max(1, n_img // b)
    lr_factor = warmup_cosine(config, steps_per_epoch)
    ema = copy.deepcopy(head) if config.ema > 0 else None
    k = config.captions_per_image
    epochs = BestEpoch(config.patience, progress)
    step = 0
    for epoch in range(1, config.epochs + 1):
        head.train()
        perm = rng.permutation(n_img)
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * b:(s + 1) * b]
            views = rng.choice(config.train_views, size=len(idx))
            fmap = torch.from_numpy(np.stack(
                [train.images[v][i] for i, v in zip(idx, views, strict=True)]).astype(np.float32))
            rows = caption_rows(rng, caps, idx, k)
            img = F.normalize(head.image(fmap), dim=-1)
            txt = F.normalize(head.text(train.text_batch(rows)), dim=-1)
            loss = info_nce(img, txt, head.logit_scale, captions_per_image=k,
                            i2t_weight=config.i2t_weight,
                            label_smoothing=config.label_smoothing)
            optimiser_step(opt, loss, config.lr * lr_factor(step), head.parameters(),
                           config.clip_grad)
            if ema is not None:
                with torch.no_grad():
                    for pe, pm in zip(ema.parameters(), head.parameters(), strict=True):
                        pe.mul_(config.ema).add_(pm.detach(), alpha=1 - config.ema)
            step += 1
            total_loss += float(loss.item())
        scored = ema if ema is not None else head
        if epochs.record(score(scored, dev, config.eval_views), epoch=epoch,
                         loss=total_loss / steps_per_epoch, head=head, kept=scored):
            break
    assert epochs.best is not None
    return TrainResult(epochs.state, epochs.best, epochs.history, epochs.seconds,
                       sum(p.numel() for p in head.parameters()))
