"""The shipped offline model: listed, usable by name, measured on the real Flickr8k dev split
through the indexing path, and failing clearly when its tower weights are missing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import FLICKR, MOBILENET
from vlmsearch.cli import app

NAME = "flickr8k-mobilenetv2-minilm"
BUNDLE = Path(__file__).resolve().parent.parent / "vlmsearch" / "bundles" / NAME
runner = CliRunner()

pytestmark = pytest.mark.skipif(
    not (FLICKR / "captions.tsv").is_file() or not MOBILENET.is_file(),
    reason=f"needs the Flickr8k data and MobileNetV2 weights under {FLICKR.parent.parent}",
)


def test_shipped_bundle_is_listed_and_available() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    entries = {e["spec"]: e for e in json.loads(result.stdout)}
    entry = entries[NAME]
    assert entry["kind"] == "bundle" and entry["available"] is True
    config = json.loads((BUNDLE / "bundle.json").read_text())
    assert entry["dim"] == config["head"]["dim"] * config["head"]["members"]
    assert entry["dev_metrics"]["text_to_image"]["R@1"] >= 25.0
    assert entry["dev_metrics"]["image_to_text"]["R@1"] >= 33.0
    assert any(e["kind"] == "openclip" for e in entries.values())


@pytest.mark.slow
def test_dev_split_quality_through_the_indexing_path() -> None:
    """The figures the README quotes, measured again: the standard protocol on the 1,000 dev
    images and their 5,000 captions, decoding and encoding exactly as `vlmsearch index` does."""
    result = runner.invoke(app, ["eval", "--pairs", str(FLICKR / "captions.tsv"),
                                 "--images", str(FLICKR / "images"), "--list",
                                 str(FLICKR / "dev.txt"), "--model", NAME, "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["images"], metrics["texts"]) == (1000, 5000)
    assert metrics["text_to_image"]["R@1"] >= 25.0, metrics
    assert metrics["image_to_text"]["R@1"] >= 33.0, metrics
    recorded = json.loads((BUNDLE / "bundle.json").read_text())["dev_metrics"]
    for direction in ("text_to_image", "image_to_text"):
        for k in ("R@1", "R@5", "R@10"):
            assert metrics[direction][k] == pytest.approx(recorded[direction][k], abs=1.0)


@pytest.mark.slow
def test_index_and_query_with_the_shipped_model(tmp_path: Path) -> None:
    names = (FLICKR / "dev.txt").read_text().split()[:120]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        (photos / name).symlink_to(FLICKR / "images" / name)
    captions: dict[str, str] = {}
    for line in (FLICKR / "captions.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        image, caption = line.split("\t", 1)
        if image in names and image not in captions:
            captions[image] = caption
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", str(photos), "--model", NAME, "--index-dir",
                                 str(index), "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["added"] == 120
    hits_at_10 = 0
    for image in names[:40]:
        out = runner.invoke(app, ["query", captions[image], "--index-dir", str(index),
                                  "--paths-only"])
        assert out.exit_code == 0, out.stderr
        hits_at_10 += any(Path(p).name == image for p in out.stdout.split("\n")[:10])
    # 120 candidates: chance is 10/120; the model finds the described photo most of the time
    assert hits_at_10 >= 28, hits_at_10


def test_missing_tower_weights_give_one_clear_message(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    import vlmsearch.encoders.bundle as bundle

    monkeypatch.setattr(bundle, "CHECKOUT_MODELS", tmp_path / "nothing-here")
    monkeypatch.delenv("VLMSEARCH_SHARED", raising=False)
    monkeypatch.setenv("VLMSEARCH_WEIGHTS_PATH", str(tmp_path / "empty"))
    (tmp_path / "p").mkdir()
    result = runner.invoke(app, ["index", str(tmp_path / "p"), "--model", NAME,
                                 "--index-dir", str(tmp_path / "i")])
    assert result.exit_code == 1
    assert "mobilenet_v2_imagenet/model.safetensors" in result.stderr
    assert "VLMSEARCH_WEIGHTS_PATH" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "i").exists()  # nothing created for a model that cannot load


@pytest.mark.slow
def test_draft_decoding_keeps_the_embeddings(tmp_path: Path) -> None:
    """Camera-sized JPEGs are decoded in draft mode (DCT scaling) straight to about the model's
    input size; the embeddings must match full decoding (docs/benchmarks.md has the recall on
    all 1,000 dev images)."""

    from bench.draft_quality import camera_copy, compare
    from vlmsearch.decode import open_image
    from vlmsearch.pairs import build_pairs

    copy = camera_copy(FLICKR / "images" / (FLICKR / "dev.txt").read_text().split()[0], 4)
    drafted, full_size = open_image(copy, max_pixels=10**8, min_side=224)
    assert full_size == (896, 896) and drafted.size == (224, 224)  # draft mode really ran
    names = (FLICKR / "dev.txt").read_text().split()[:120]
    (tmp_path / "list.txt").write_text("\n".join(names) + "\n")
    pairs = build_pairs(FLICKR / "captions.tsv", FLICKR / "images", tmp_path / "list.txt")
    result = compare(NAME, pairs, scale=4, recall=False, device="cpu")
    assert result["images"] == 120
    assert result["cosine"]["mean"] >= 0.99, result["cosine"]
    assert result["cosine"]["min"] >= 0.95, result["cosine"]


def test_onnx_image_tower_matches_torch(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """On CPU the bundle's MobileNetV2 runs in ONNX Runtime (exported once into the cache);
    its embeddings must be the torch ones."""
    import numpy as np

    from vlmsearch.decode import decode_file
    from vlmsearch.encoders.registry import load_encoder

    monkeypatch.setenv("VLMSEARCH_HOME", str(tmp_path / "home"))
    names = (FLICKR / "dev.txt").read_text().split()[:8]
    fast = load_encoder(NAME, device="cpu")
    pixels = np.stack([decode_file(str(FLICKR / "images" / n), fast.image_spec,
                                   max_pixels=10**8).pixels for n in names])
    got = fast.encode_images(pixels)
    assert list((tmp_path / "home" / ".cache" / "image-onnx").glob("*/image.ort"))
    monkeypatch.setenv("VLMSEARCH_TORCH_IMAGES", "1")
    expected = load_encoder(NAME, device="cpu").encode_images(pixels)
    assert np.sum(got * expected, axis=1).min() > 0.99999
    np.testing.assert_allclose(got, expected, atol=1e-5)
