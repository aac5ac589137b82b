"""Sequence packing: packed rows must give every text exactly the output it gets padded, alone."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModelForSequenceClassification, AutoModelForTokenClassification

from aiforge.tasks import load_pipeline
from aiforge.tasks._packing import ROW_TOKENS, pack, plan_rows, verified_packer
from tests.tiny_models import TINY_ENCODER, make_tiny_bert, save_bert_tokenizer

TEXTS = [
    "짧다",
    "배우들 연기가 훌륭했다",
    "a",
    "this one is a little longer than the first, and it has some punctuation!",
    " ".join(["a much longer review that goes on and on"] * 20),  # > ROW_TOKENS tokens: a row of its own
    "좋아요 최고",
    "ok ok ok",
]


def make_encoder(directory: Path, model_type: str, head: str) -> Path:
    """A tiny random encoder of ``model_type`` with a sequence or token head and the MiniLM tokenizer."""
    config = AutoConfig.for_model(
        model_type,
        **TINY_ENCODER,
        max_position_embeddings=520,
        pad_token_id=0,
        num_labels=3,
    )
    auto = AutoModelForSequenceClassification if head == "sequence" else AutoModelForTokenClassification
    torch.manual_seed(0)
    model = auto.from_config(config)
    model.eval().save_pretrained(directory)
    return save_bert_tokenizer(directory)


def test_rows_are_first_fit_decreasing_within_capacity() -> None:
    lengths = [100, 30, 30, 60, 200, 10, 90, 5]
    rows = plan_rows(lengths, 128)
    assert sorted(i for row in rows for i in row) == list(range(len(lengths))), "each item exactly once"
    assert [4] in rows, "an item longer than a row gets a row of its own"
    assert all(sum(lengths[i] for i in row) <= 128 for row in rows if row != [4])
    # longest first, each into the first row it fits: 100+10+5 | 90+30 | 60+30
    assert rows == [[4], [0, 5, 7], [6, 1], [3, 2]]
    assert plan_rows([], 128) == []


def test_pack_gives_each_text_its_own_positions_and_a_block_diagonal_mask() -> None:
    batch = [{"input_ids": [101, 7, 102]}, {"input_ids": [101, 8, 9, 102]}, {"input_ids": [101, 102]}]
    packed = pack(batch, pad_id=0, position_offset=0, dtype=torch.float32, row_tokens=8)
    ids, positions, mask = (packed.inputs[k] for k in ("input_ids", "position_ids", "attention_mask"))
    assert ids.shape == (2, 7)  # 4+3 in one row, 2 in the next (padded to the widest row)
    row, column, length = packed.spans[0]
    assert ids[row, column : column + length].tolist() == [101, 7, 102]
    assert positions[row, column : column + length].tolist() == [0, 1, 2], "positions restart per text"
    allowed = mask[row, 0] == 0
    inside = allowed[column : column + length, column : column + length]
    assert bool(inside.all()), "a text attends to itself"
    assert int(allowed[column : column + length].sum()) == length * length, "and to nothing else"


@pytest.mark.parametrize(
    ("model_type", "head"),
    [("bert", "sequence"), ("roberta", "sequence"), ("electra", "sequence"), ("bert", "token")],
)
def test_packed_outputs_equal_padded_outputs(tmp_path: Path, model_type: str, head: str) -> None:
    task = "text-classification" if head == "sequence" else "token-classification"
    pipe = load_pipeline(task, str(make_encoder(tmp_path / "m", model_type, head)), device="cpu")
    assert pipe.packs, f"a {model_type} {head} head packs on CPU"
    features = pipe.preprocess_many([pipe.parse_input(t) for t in TEXTS])
    assert max(pipe.length(f) for f in features) > ROW_TOKENS
    packed = pipe.packer.logits(features)
    padded = [pipe.padded_logits([f])[0] for f in features]  # each text alone: no padding at all
    for got, want in zip(packed, padded, strict=True):
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-4)
    if head == "sequence":  # end to end: predict (packed, arrival order) answers as the padded path
        packed_scores = label_scores(pipe.predict(TEXTS, batch_size=4))
        pipe.packer = None
        assert packed_scores == pytest.approx(label_scores(pipe.predict(TEXTS, batch_size=4)), abs=1e-5)


def label_scores(outputs: list[dict]) -> list[float]:
    return [s["score"] for o in outputs for s in sorted(o["scores"], key=lambda s: s["label"])]


def test_sentence_pairs_pack_with_their_token_types(tmp_path: Path) -> None:
    pipe = load_pipeline(
        "text-classification", str(make_tiny_bert(tmp_path / "nli", "seq-cls")), device="cpu"
    )
    enc = pipe.tokenizer(
        ["배우들 연기가 훌륭했다", "short", "a longer premise sentence with more words"],
        ["This example is 긍정.", "This example is negative.", "yes"],
    )
    features = [{k: v[i] for k, v in enc.items()} for i in range(3)]
    assert any(1 in f["token_type_ids"] for f in features)
    packed = pipe.packer.logits(features)
    for got, f in zip(packed, features, strict=True):
        np.testing.assert_allclose(got, pipe.padded_logits([f])[0], atol=1e-4, rtol=1e-4)


def test_a_model_whose_packed_output_differs_stays_padded(tmp_path: Path) -> None:
    pipe = load_pipeline("text-classification", str(make_tiny_bert(tmp_path / "m", "seq-cls")), device="cpu")
    probe = pipe.preprocess_many([pipe.parse_input(t) for t in TEXTS[:3]])
    padded = pipe.padded_logits(probe)
    assert verified_packer(pipe.model, "sequence", 0, probe, padded) is not None
    wrong = [logits + 0.5 for logits in padded]  # as if the head read the wrong token
    assert verified_packer(pipe.model, "sequence", 0, probe, wrong) is None
    assert verified_packer(pipe.model, "token", 0, probe, padded) is None, "a head layout that fails"
