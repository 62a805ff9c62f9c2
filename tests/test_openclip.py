"""The real open_clip code path, with a tiny random-weight model (no download)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.imagegen import make_image, picture
from vlmsearch import Engine, ModelUnavailableError
from vlmsearch.decode import prepare
from vlmsearch.encoders.registry import load_encoder
from vlmsearch.errors import OfflineError
from vlmsearch.models_catalog import SHIPPED_DEFAULT


def test_tiny_clip_matches_open_clips_own_preprocessing(tiny_clip_spec: str) -> None:
    import open_clip
    import torch

    enc = load_encoder(tiny_clip_spec, device="cpu")
    img = picture((30, 140, 200), (90, 57))
    ours = enc.encode_images(prepare(img, enc.image_spec)[None])
    model = enc._model  # type: ignore[attr-defined]
    _, _, preprocess = open_clip.create_model_and_transforms(
        Path(tiny_clip_spec.removeprefix("openclip:").removesuffix("/random")).stem)
    with torch.no_grad():
        ref = model.encode_image(preprocess(img)[None]).float()
        ref = torch.nn.functional.normalize(ref, dim=-1).numpy()
    assert ours.shape == (1, 32) and ours.dtype == np.float32
    np.testing.assert_allclose(ours, ref, atol=1e-5)
    texts = enc.encode_texts(["a dog", "a cat", "x" * 5000])
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)


def test_index_and_query_with_tiny_clip(tiny_clip_spec: str, tmp_path: Path) -> None:
    root = tmp_path / "photos"
    colours = ["red", "green", "blue", "yellow", "purple", "white"]
    for c in colours:
        make_image(root / f"{c}.jpg", c, size=(120, 90))
    with Engine.open(tmp_path / "idx", model=tiny_clip_spec) as eng:
        report = eng.index([root])
        assert report.added == 6 and report.encoded == 6
        # the same picture under another name is found first, with a near-perfect score
        query = make_image(tmp_path / "query.jpg", "blue", size=(120, 90))
        hit = eng.search(image=query, k=1)[0]
        assert hit.path.endswith("blue.jpg") and hit.score > 0.99
        assert len(eng.search(text="a photo of a dog", k=3)) == 3
        info = eng.info()
        assert info.dim == 32 and info.model == tiny_clip_spec


def test_vectors_are_reproducible_across_loads(tiny_clip_spec: str) -> None:
    a = load_encoder(tiny_clip_spec, device="cpu").encode_texts(["hello world"])
    b = load_encoder(tiny_clip_spec, device="cpu").encode_texts(["hello world"])
    np.testing.assert_array_equal(a, b)


def test_local_checkpoint_file(tiny_clip_spec: str, tmp_path: Path) -> None:
    import torch

    enc = load_encoder(tiny_clip_spec, device="cpu")
    expected = enc.encode_texts(["a red bus"])
    ckpt = tmp_path / "tiny.pt"
    torch.save(enc._model.state_dict(), ckpt)  # type: ignore[attr-defined]
    config = tiny_clip_spec.removeprefix("openclip:").removesuffix("/random")
    local = load_encoder(f"openclip:{config}@{ckpt}", device="cpu")
    np.testing.assert_allclose(local.encode_texts(["a red bus"]), expected, atol=1e-6)
    assert local.model_id != enc.model_id


def test_weights_that_cannot_be_downloaded_give_one_clear_message(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # an empty cache
    enc = load_encoder("openclip:ViT-B-32/laion2b_s34b_b79k", device="cpu")
    with pytest.raises(ModelUnavailableError) as info:
        enc.encode_texts(["x"])
    message = str(info.value)
    assert isinstance(info.value, OfflineError) and "\n" not in message
    assert "ViT-B-32/laion2b_s34b_b79k" in message and "HF_HUB_OFFLINE is set" in message
    assert f"--model {SHIPPED_DEFAULT}" in message
    assert "--model openclip:ViT-B-32/laion2b_s34b_b79k@/path/to/" in message


@pytest.mark.slow
def test_reparameterizable_image_towers_are_fused_with_the_same_outputs(
    monkeypatch: pytest.MonkeyPatch
) -> None:
    """MobileCLIP's FastViT runs in its inference form (2× faster on a CPU, same vectors)."""
    from vlmsearch.encoders import openclip

    spec = "openclip:MobileCLIP2-S0/random"
    fused_enc = load_encoder(spec, device="cpu")
    pixels = np.stack([prepare(picture(colour), fused_enc.image_spec)
                       for colour in ("red", "green", "blue")])
    fused = fused_enc.encode_images(pixels)
    assert any(getattr(m, "reparam_conv", None) is not None
               for m in fused_enc._model.modules())  # type: ignore[attr-defined]
    monkeypatch.setattr(openclip, "_reparameterize", lambda model: None)
    plain = load_encoder(spec, device="cpu").encode_images(pixels)
    assert float((fused * plain).sum(axis=1).min()) > 0.9999
