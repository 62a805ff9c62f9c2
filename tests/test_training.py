"""The fusion head: loss and shapes, evaluation metrics, training on real Flickr8k data, and a
bundle round trip."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import FLICKR, MOBILENET, needs_flickr
from vlmsearch.encoders.head import FusionHead, HeadConfig, build_head, info_nce
from vlmsearch.encoders.towers import TextFeatures
from vlmsearch.evaluation import retrieval_metrics


# --- loss and shapes -----------------------------------------------------------------------------
def test_info_nce_prefers_matching_pairs_and_handles_several_captions() -> None:
    torch.manual_seed(0)
    img = torch.nn.functional.normalize(torch.randn(8, 16), dim=-1)
    scale = torch.tensor(np.log(1 / 0.07), dtype=torch.float32)
    aligned = info_nce(img, img, scale)
    shuffled = info_nce(img, img[torch.randperm(8)], scale)
    assert aligned < 0.1 < shuffled
    # three captions per image: rows 3j..3j+2 belong to image j; all equal to the image
    three = img.repeat_interleave(3, dim=0)
    multi = info_nce(img, three, scale, captions_per_image=3)
    assert multi < 0.1, "an image's other captions must not count as its negatives"
    with pytest.raises(ValueError):
        info_nce(img, three[:-1], scale, captions_per_image=3)


@pytest.mark.parametrize("img_arch, txt_arch, extra", [
    ("linear", "linear", "none"), ("mlp", "mlp", "none"), ("attn", "attn", "none"),
    ("mlp", "tf", "none"), ("mlp", "mlp", "f96stat")])
def test_head_shapes_and_unit_outputs(img_arch: str, txt_arch: str, extra: str) -> None:
    cfg = HeadConfig(dim=64, img_arch=img_arch, txt_arch=txt_arch, img_dmodel=32, img_heads=4,
                     txt_dmodel=48, txt_heads=4, img_hidden=32, txt_hidden=32, img_extra=extra)
    head = FusionHead(cfg).eval()
    fmap = torch.rand(3, 1280, 7, 7)
    if extra != "none":  # pooled features followed by the block statistics
        fmap = torch.cat([fmap.mean(dim=(2, 3)), torch.rand(3, cfg.img_extra_dim)], 1)
    tokens = torch.randn(5, 11, 384)
    mask = torch.ones(5, 11, dtype=torch.bool)
    mask[0, 6:] = False
    feats = TextFeatures(tokens, mask, torch.nn.functional.normalize(tokens.mean(1), dim=-1))
    img, txt = head.encode_image(fmap), head.encode_text(feats)
    assert img.shape == (3, 64) and txt.shape == (5, 64)
    assert torch.allclose(img.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert torch.allclose(txt.norm(dim=-1), torch.ones(5), atol=1e-5)
    if fmap.dim() == 4 and not cfg.needs_spatial:  # pooled input gives the same result
        assert torch.allclose(head.encode_image(fmap.mean(dim=(2, 3))), img, atol=1e-5)


def test_views_transform_the_crop() -> None:
    from vlmsearch.training.features import VIEWS, view_pixels

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (2, 224, 224, 3), dtype=np.uint8)
    pixels[:, :112, :112] = 255  # a white top-left quadrant
    for view in VIEWS:
        out = view_pixels(pixels, view)
        assert out.shape == pixels.shape and out.dtype == np.uint8, view
    np.testing.assert_array_equal(view_pixels(pixels, "flip"), pixels[:, :, ::-1])
    assert view_pixels(pixels, "crop_tl")[:, :100, :100].min() == 255  # zoomed into the corner
    assert view_pixels(pixels, "crop_br")[:, -50:, -50:].mean() < 200


# --- metrics -------------------------------------------------------------------------------------
def test_retrieval_metrics_against_a_hand_computed_example() -> None:
    # 3 images, 2 captions each (caption j belongs to image j // 2). Similarities chosen so the
    # ranks are known: text->image ranks per caption and image->text best-caption ranks.
    sims = np.array([
        # img0  img1  img2
        [0.9, 0.1, 0.0],   # cap0 (img0): rank 1
        [0.2, 0.8, 0.1],   # cap1 (img0): rank 2
        [0.1, 0.7, 0.3],   # cap2 (img1): rank 1
        [0.5, 0.4, 0.6],   # cap3 (img1): rank 3
        [0.3, 0.2, 0.1],   # cap4 (img2): rank 3
        [0.0, 0.1, 0.9],   # cap5 (img2): rank 1
    ])
    owner = np.array([0, 0, 1, 1, 2, 2])
    # realise the similarities with unit vectors: images = identity, texts = rows
    m = retrieval_metrics(np.eye(3, dtype=np.float32), sims.astype(np.float32), owner)
    t2i = m["text_to_image"]
    assert t2i["R@1"] == pytest.approx(100 * 3 / 6, abs=0.01)
    assert t2i["R@5"] == 100.0 and t2i["median_rank"] == 1.5  # ranks 1,2,1,3,3,1
    # image->text: img0's captions score 0.9 (cap0 best, rank 1); img1: best own 0.7 (cap2)
    # behind cap1 (0.8) -> rank 2; img2: best own 0.9 (cap5) -> rank 1
    i2t = m["image_to_text"]
    assert i2t["R@1"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert i2t["median_rank"] == 1.0 and i2t["R@5"] == 100.0


def test_ties_are_not_counted_as_hits() -> None:
    same = np.ones((4, 8), dtype=np.float32) / np.sqrt(8)
    m = retrieval_metrics(same, same, np.arange(4))
    assert m["text_to_image"]["R@1"] == 0.0 and m["image_to_text"]["R@1"] == 0.0


# --- real data -----------------------------------------------------------------------------------
def _subset(tmp: Path, n_train: int, n_dev: int) -> tuple[Path, Path]:
    train = [n for n in (FLICKR / "train.txt").read_text().split() if n][:n_train]
    dev = [n for n in (FLICKR / "dev.txt").read_text().split() if n][:n_dev]
    (tmp / "train.txt").write_text("\n".join(train) + "\n")
    (tmp / "dev.txt").write_text("\n".join(dev) + "\n")
    return tmp / "train.txt", tmp / "dev.txt"


@pytest.fixture(scope="module")
def trained_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict, Path]:
    if not (FLICKR / "captions.tsv").is_file() or not MOBILENET.is_file():
        pytest.skip(f"needs the Flickr8k data and MobileNetV2 weights in {FLICKR.parent.parent}")
    from vlmsearch.training.bundle_train import train_bundle

    tmp = tmp_path_factory.mktemp("train")
    old_home = os.environ.get("VLMSEARCH_HOME")
    os.environ["VLMSEARCH_HOME"] = str(tmp / "home")
    try:
        train_list, dev_list = _subset(tmp, 1200, 250)
        config = train_bundle(
            pairs_file=FLICKR / "captions.tsv", images_dir=FLICKR / "images",
            train_list=train_list, dev_list=dev_list, out=tmp / "bundle", name="test-bundle",
            training={"epochs": 8, "patience": 8, "train_views": ["center", "flip"]},
            head={"members": 2},
            device="cpu")
    finally:
        if old_home is None:
            os.environ.pop("VLMSEARCH_HOME", None)
        else:
            os.environ["VLMSEARCH_HOME"] = old_home
    return tmp / "bundle", config, dev_list


@needs_flickr()
@pytest.mark.slow
def test_training_on_real_data_learns(trained_bundle: tuple[Path, dict, Path]) -> None:
    _, config, _ = trained_bundle
    m = config["dev_metrics"]
    # 250 dev images: chance is R@1 0.4%, R@10 4%. A head that learned nothing stays there.
    assert m["text_to_image"]["R@1"] > 8.0, m
    assert m["image_to_text"]["R@1"] > 10.0, m
    assert m["text_to_image"]["R@10"] > 35.0, m
    history = config["members"][0]["history"]
    assert history[-1]["loss"] < history[0]["loss"]


@needs_flickr()
@pytest.mark.slow
def test_bundle_round_trip_and_eval_matches_training(
    trained_bundle: tuple[Path, dict, Path], tmp_path: Path
) -> None:
    from safetensors.torch import load_file

    from vlmsearch.encoders.registry import load_encoder
    from vlmsearch.evaluation import evaluate
    from vlmsearch.pairs import build_pairs

    folder, config, dev_list = trained_bundle
    enc = load_encoder(str(folder), device="cpu")
    again = load_encoder(f"bundle:{folder}", device="cpu")
    head_cfg = HeadConfig.from_dict(config["head"])
    assert enc.model_id == again.model_id
    assert enc.dim == head_cfg.dim * head_cfg.members == 2 * head_cfg.dim
    texts = ["a dog runs on the grass", "two children playing in the water"]
    np.testing.assert_array_equal(enc.encode_texts(texts), again.encode_texts(texts))
    # the saved weights are exactly the trained ones
    state = load_file(str(folder / "head.safetensors"))
    fresh = build_head(head_cfg)
    fresh.load_state_dict(state)  # strict: every trained tensor is there, nothing else
    # eval through the indexing path reproduces the dev metrics recorded at training time
    split = build_pairs(FLICKR / "captions.tsv", FLICKR / "images", dev_list)
    metrics = evaluate(enc, split)
    for direction in ("text_to_image", "image_to_text"):
        assert metrics[direction]["R@1"] == pytest.approx(
            config["dev_metrics"][direction]["R@1"], abs=1.0)
    saved = json.loads((folder / "bundle.json").read_text())
    assert saved["training"]["settings"]["seed"] == 0


def test_misspelt_recipe_settings_are_refused(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from vlmsearch.cli import app

    for name in ("pairs.tsv", "train.txt", "dev.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "photos").mkdir()
    args = ["train", "--pairs", str(tmp_path / "pairs.tsv"), "--images", str(tmp_path / "photos"),
            "--train-list", str(tmp_path / "train.txt"), "--dev-list", str(tmp_path / "dev.txt"),
            "--out", str(tmp_path / "bundle"), "--config", str(tmp_path / "recipe.json")]
    cases = {'{"head": {"dims": 256}}': "'dims'",
             '{"training": {"epoch": 3}}': "'epoch'",
             '{"heads": {}}': "only the keys"}
    for recipe, expected in cases.items():
        (tmp_path / "recipe.json").write_text(recipe)
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 2, (recipe, result.output)
        assert expected in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / "bundle").exists()
