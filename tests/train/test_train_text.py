"""Text batching: the Hangul fallback tokenizer, length-grouped epochs, dynamic padding, max_length."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from transformers import AutoTokenizer

from aiforge.models import resolve
from aiforge.train.batches import epoch_batches
from aiforge.train.data import Dataset, Split
from aiforge.train.text import Encoded, TextClassificationTask, hangul_fallback
from tests.tiny_models import minilm_dir

KOREAN = ["명성때문에 봤지만 참 어려운 영화.", "오늘밤은 잠들지 못할 것 같습니다.", "했다 있었다 괜찮았어요"]


def _unk_words(tokenizer, texts: list[str]) -> int:
    return sum(tokenizer.unk_token in tokenizer.tokenize(w) for t in texts for w in t.split())


def test_hangul_fallback_keeps_korean_words_and_survives_saving(tmp_path: Path) -> None:
    original = AutoTokenizer.from_pretrained(minilm_dir())
    before = _unk_words(original, KOREAN)
    adapted, rewrites = hangul_fallback(AutoTokenizer.from_pretrained(minilm_dir()))
    assert before >= 5  # the English vocabulary loses most of these words
    assert _unk_words(adapted, KOREAN) == 0
    assert rewrites["ᆻ"] == "ᄉᄉ"  # final ㅆ of 했다/있다
    adapted.save_pretrained(tmp_path)
    reloaded = AutoTokenizer.from_pretrained(tmp_path)  # what the inference pipeline will load
    assert reloaded(KOREAN)["input_ids"] == adapted(KOREAN)["input_ids"]
    assert reloaded("plain english")["input_ids"] == original("plain english")["input_ids"]


def test_epoch_batches_are_a_function_of_seed_and_epoch() -> None:
    lengths = list(np.random.default_rng(0).integers(5, 200, size=500))
    first = epoch_batches(lengths, 16, seed=1, epoch=0, group_by_length=True)
    assert first == epoch_batches(lengths, 16, seed=1, epoch=0, group_by_length=True)  # resume replays it
    assert first != epoch_batches(lengths, 16, seed=1, epoch=1, group_by_length=True)
    assert sorted(i for b in first for i in b) == list(range(500))  # every item exactly once


def test_length_grouping_cuts_padding() -> None:
    lengths = list(np.random.default_rng(0).integers(5, 200, size=2000))

    def padded(batches: list[list[int]]) -> int:
        return sum(max(lengths[i] for i in b) * len(b) for b in batches)

    grouped = padded(epoch_batches(lengths, 32, 0, 0, group_by_length=True))
    plain = padded(epoch_batches(lengths, 32, 0, 0, group_by_length=False))
    assert grouped < 0.7 * plain


def _task(tiny_bert: Path, max_length: int | str = "auto", percentile: float = 90) -> TextClassificationTask:
    from aiforge.train.config import TrainConfig

    split = Split("train", KOREAN * 10 + ["short"] * 10, ["a", "b", "a"] * 10 + ["b"] * 10)
    config = TrainConfig.model_validate(
        {"model": str(tiny_bert), "training": {"max_length": max_length, "max_length_percentile": percentile}}
    )
    task = TextClassificationTask(config, Dataset(split, split, None, ["a", "b"]), resolve(str(tiny_bert)))
    task.model_config = task.load().config
    return task


def test_collate_pads_to_the_longest_item_of_the_batch(tiny_bert: Path) -> None:
    task = _task(tiny_bert)
    task.max_length = 512
    encoded = task.encode(task.dataset.train)
    short, long = 30, 0  # "short" and the first Korean text
    batch = task.collate(encoded, [short, long], "cpu")
    assert batch["input_ids"].shape[1] == len(encoded.input_ids[long])
    assert batch["attention_mask"][0].sum() == len(encoded.input_ids[short])
    assert batch["labels"].tolist() == [1, 0]


def test_auto_max_length_is_a_percentile_rounded_to_8(tiny_bert: Path) -> None:
    task = _task(tiny_bert, percentile=50)
    lengths = task.input_lengths(task.dataset.train)
    value = task.resolve_max_length(lengths)
    assert value % 8 == 0 and value >= np.percentile(lengths, 50) and value < max(lengths)
    encoded = task.encode(task.dataset.train)
    assert max(encoded.lengths()) <= value
    assert encoded.truncated == sum(n > value for n in lengths)


@pytest.mark.parametrize("wanted", [4096, 48])
def test_explicit_max_length_is_capped_by_the_model(tiny_bert: Path, wanted: int) -> None:
    task = _task(tiny_bert, max_length=wanted)
    assert task.resolve_max_length([10, 20]) == min(wanted, 512)


def test_encoded_lengths() -> None:
    assert Encoded([[1, 2], [3]], [0, 1], 0).lengths() == [2, 1]
