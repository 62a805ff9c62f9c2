"""The fast query path: torch-free tokenizer and the ONNX export of a model's text side."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.imagegen import make_image
from vlmsearch import Engine
from vlmsearch.encoders.clip_tokenizer import ClipTokenizer
from vlmsearch.encoders.onnx_text import cache_folder, load_cached, preload_for_index
from vlmsearch.encoders.registry import load_encoder

pytest.importorskip("onnxruntime")

_OURS = ClipTokenizer()


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=400))
def test_clip_tokenizer_matches_open_clip(text: str) -> None:
    import open_clip

    theirs = open_clip.get_tokenizer("ViT-B-32")([text]).numpy()
    np.testing.assert_array_equal(_OURS.tokenize([text]), theirs)


def test_clip_tokenizer_edge_cases() -> None:
    import open_clip

    texts = ["", "A Photo of a CAT!", "naïve café — &amp; déjà vu", "x" * 3000,
             "日本語のテキスト", "emoji 🐱🐶 ok", "  lots   of\tspace\n", "it's we're they'll"]
    theirs = open_clip.get_tokenizer("ViT-B-32")(texts).numpy()
    np.testing.assert_array_equal(_OURS.tokenize(texts), theirs)


def test_index_exports_text_side_and_queries_skip_torch(tiny_clip_spec: str,
                                                        tmp_path: Path) -> None:
    for c in ("red", "green", "blue"):
        make_image(tmp_path / "photos" / f"{c}.png", c)
    with Engine.open(tmp_path / "index", model=tiny_clip_spec) as eng:
        eng.index([tmp_path / "photos"])
        model_id = eng.info().model_id
        texts = ["a red square", "something else entirely", "x" * 2000]
        torch_vecs = eng._model.full.encode_texts(texts)
    fast = load_cached(model_id)
    assert fast is not None and (cache_folder(model_id) / "text.ort").is_file()
    _assert_same_vectors(fast.encode_texts(texts), torch_vecs)
    assert fast.count_text_tokens("x " * 100) > fast.text_token_limit == 77
    # a fresh process answers a text query without importing torch, same results
    code = ("import sys, json; from vlmsearch import Engine;"
            "eng = Engine.open(sys.argv[1], create=False);"
            "hits = eng.search(text='a green picture', k=3);"
            "print(json.dumps({'torch': 'torch' in sys.modules,"
            " 'paths': [h.path for h in hits]}))")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "index")],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout)
    assert result["torch"] is False
    with Engine.open(tmp_path / "index", create=False) as eng:
        eng.warm_up()  # force the torch path for comparison
        assert [h.path for h in eng.search(text="a green picture", k=3)] == result["paths"]
    # the CLI starts building the ONNX session before it imports the engine: same answer
    cli = subprocess.run([sys.executable, "-m", "vlmsearch.cli", "query", "a green picture",
                          "--index-dir", str(tmp_path / "index"), "--top-k", "3", "--json"],
                         capture_output=True, text=True, check=True)
    assert [h["path"] for h in json.loads(cli.stdout)] == result["paths"]
    preload_for_index(tmp_path / "index")
    preloaded = load_cached(model_id)
    assert preloaded is not None and preloaded is not fast
    _assert_same_vectors(preloaded.encode_texts(texts), torch_vecs)
    preload_for_index(tmp_path / "nothing-here")  # no index: silently nothing to do


def _assert_same_vectors(fast: np.ndarray, reference: np.ndarray) -> None:
    """The exported graph keeps its big weights in half precision (float32 arithmetic): rows
    agree to a cosine of 0.9999 and no value moves by more than 1e-3."""
    cosine = np.sum(fast * reference, axis=1)
    assert cosine.min() > 0.9999, cosine
    np.testing.assert_allclose(fast, reference, atol=1e-3)


def test_index_files_and_caches_are_readable_by_others(tiny_clip_spec: str,
                                                       tmp_path: Path) -> None:
    """Temp files are created owner-only; what replaces the real files must not stay so, or a
    shared index (or its text-encoder cache) is unreadable for everyone else."""
    import os

    old = os.umask(0o022)
    try:
        make_image(tmp_path / "photos" / "red.png", "red")
        with Engine.open(tmp_path / "index", model=tiny_clip_spec) as eng:
            eng.index([tmp_path / "photos"])
            cache = cache_folder(eng.info().model_id)
    finally:
        os.umask(old)
    for path in [*(tmp_path / "index").iterdir(), cache, *cache.iterdir()]:
        if path.name == "write.lock":
            continue
        mode = path.stat().st_mode & 0o777
        assert mode == (0o755 if path.is_dir() else 0o644), (path, oct(mode))


def test_models_that_cannot_be_exported_still_work(tmp_path: Path) -> None:
    enc = load_encoder("fake")
    assert getattr(enc, "export_text_onnx", None) is None
    for c in ("red", "green"):
        make_image(tmp_path / "p" / f"{c}.png", c)
    with Engine.open(tmp_path / "i", model="fake") as eng:
        eng.index([tmp_path / "p"])
        assert load_cached(eng.info().model_id) is None
        assert eng.search(text="red", k=1)[0].path.endswith("red.png")
