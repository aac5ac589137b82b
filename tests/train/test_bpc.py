"""The per-review bits-per-character comparison of a character LM and the Kneser-Ney n-gram
(``aiforge.train.bpc``): both sides score the same symbols, unseen characters are one symbol on both
sides, long reviews are scored once per character, and the bootstrap brackets the estimate."""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from aiforge.train import load_config
from aiforge.train.bpc import (
    UNSEEN,
    bootstrap,
    lm_alphabet,
    lm_document_bits,
    map_unseen,
    ngram_document_bits,
)
from aiforge.train.config import TokenizerConfig
from aiforge.train.ngram import KneserNey
from aiforge.train.tokenizer import train_tokenizer

TRAIN = ["이 영화 정말 재밌어요", "배우 연기가 최고", "다시 보고 싶은 영화"] * 10
REVIEWS = ["영화 최고", "정말 재밌어요 다시 보고 싶은 영화 배우 연기가 최고 이 영화", "햏 영화"]  # 햏: unseen


class FixedDistribution(torch.nn.Module):
    """An 'LM' that ignores its context: its bits per review are known exactly."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.logits = torch.linspace(-2.0, 2.0, vocab)

    def forward(self, input_ids: torch.Tensor) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def test_both_sides_score_each_character_and_the_end_of_review_once() -> None:
    tokenizer = train_tokenizer(TRAIN, TokenizerConfig(kind="char"), 8)
    model = FixedDistribution(len(tokenizer))
    log_p = torch.log_softmax(model.logits, -1)
    # context 8 < the second review's 39 symbols: scored in overlapping windows
    lm = lm_document_bits(model, tokenizer, REVIEWS, context=8)
    for review, bits in zip(REVIEWS, lm.bits, strict=True):
        targets = tokenizer(review + "\n", add_special_tokens=False)["input_ids"]
        assert bits == pytest.approx(-float(log_p[targets].sum()) / math.log(2))
    alphabet = lm_alphabet(tokenizer)
    ngram = ngram_document_bits(KneserNey("\n".join(TRAIN)), [map_unseen(r, alphabet) for r in REVIEWS])
    assert lm.symbols == ngram.symbols == [len(r) + 1 for r in REVIEWS]


def test_an_unseen_character_is_one_symbol_for_both_models() -> None:
    tokenizer = train_tokenizer(TRAIN, TokenizerConfig(kind="char"), 16)
    alphabet = lm_alphabet(tokenizer)
    assert map_unseen("햏 영화", alphabet) == UNSEEN + " 영화" == map_unseen("뷁 영화", alphabet)
    ids = tokenizer(["햏", "뷁"], add_special_tokens=False)["input_ids"]
    assert ids == [[tokenizer.unk_token_id]] * 2
    ngram = KneserNey("\n".join(TRAIN))
    assert ngram_document_bits(ngram, [map_unseen("햏 영화", alphabet)]).bits == pytest.approx(
        ngram_document_bits(ngram, [map_unseen("뷁 영화", alphabet)]).bits
    )


def test_paired_bootstrap_brackets_each_side_and_the_difference() -> None:
    tokenizer = train_tokenizer(TRAIN, TokenizerConfig(kind="char"), 64)
    reviews = TRAIN[:3] + REVIEWS
    alphabet = lm_alphabet(tokenizer)
    ngram = ngram_document_bits(KneserNey("\n".join(TRAIN)), [map_unseen(r, alphabet) for r in reviews])
    uniform = lm_document_bits(FixedDistribution(len(tokenizer)), tokenizer, reviews, context=64)
    intervals = bootstrap({"ngram": ngram, "lm": uniform}, rounds=200)
    for name, side in (("ngram", ngram), ("lm", uniform)):
        low, high = intervals[name]
        assert low <= side.bits_per_char <= high
    low, high = intervals["lm - ngram"]
    assert 0 < low <= uniform.bits_per_char - ngram.bits_per_char <= high  # the n-gram learnt the text


def test_the_korean_example_is_a_valid_config() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "korean-char-lm.yaml")
    assert config.task == "text-generation" and config.training.mixed_precision == "no"
