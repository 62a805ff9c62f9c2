"""open_clip's multilingual models (an XLM-RoBERTa text tower, as in
``xlm-roberta-base-ViT-B-32``) through the real code path, offline: a tiny random-weight model
of the same text-tower type, with a tokenizer trained inside the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tests.imagegen import make_image


@pytest.fixture
def tiny_xlmr_spec(tmp_path: Path) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast, XLMRobertaConfig

    folder = tmp_path / "tiny-xlmr"
    corpus = ["a dog runs in the snow", "一只狗在雪地里奔跑", "two children play on the beach",
              "两个孩子在海滩上玩耍", "собака бежит по снегу", "a red car", "红色的汽车"] * 20
    tok = Tokenizer(models.Unigram())
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.train_from_iterator(corpus, trainers.UnigramTrainer(
        vocab_size=120, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        unk_token="<unk>"))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>",
                                   pad_token="<pad>", unk_token="<unk>", mask_token="<mask>",
                                   cls_token="<s>", sep_token="</s>", model_max_length=32)
    fast.save_pretrained(folder)
    XLMRobertaConfig(vocab_size=fast.vocab_size, hidden_size=32, num_hidden_layers=1,
                     num_attention_heads=2, intermediate_size=64, max_position_embeddings=40,
                     pad_token_id=1, bos_token_id=0, eos_token_id=2).save_pretrained(folder)
    config = tmp_path / "tiny-xlmr-clip.json"
    config.write_text(json.dumps({
        "embed_dim": 32,
        "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                       "patch_size": 8},
        "text_cfg": {"hf_model_name": str(folder), "hf_tokenizer_name": str(folder),
                     "hf_proj_type": "mlp", "hf_pooler_type": "mean_pooler",
                     "context_length": 32}}))
    return f"openclip:{config}/random"


def test_xlmr_text_tower_offline(tiny_xlmr_spec: str, tmp_path: Path,
                                 monkeypatch: pytest.MonkeyPatch) -> None:
    from vlmsearch import Engine
    from vlmsearch.encoders.registry import load_encoder
    from vlmsearch.models_catalog import files_needed

    assert files_needed(tiny_xlmr_spec) == []  # a local text tower: nothing to download
    enc = load_encoder(tiny_xlmr_spec, device="cpu")
    vecs = enc.encode_texts(["一只狗在雪地里奔跑", "a dog runs in the snow", "x" * 500])
    assert vecs.shape == (3, 32)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
    # no torch-free twin for this tokenizer: the fast text path declines, queries use torch
    assert enc.export_text_onnx(tmp_path / "export") is None  # type: ignore[attr-defined]
    root = tmp_path / "photos"
    for c in ("red", "green", "blue"):
        make_image(root / f"{c}.jpg", c, size=(60, 40))
    with Engine.open(tmp_path / "idx", model=tiny_xlmr_spec) as eng:
        assert eng.index([root]).added == 3
    with Engine.open(tmp_path / "idx", create=False) as eng:
        hits = eng.search(text="一只狗在雪地里奔跑", k=3)
        assert len(hits) == 3
        assert hits.warnings == []  # an XLM-R text tower reads Chinese: no script note
