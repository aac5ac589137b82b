"""Token classification: tags aligned to first sub-words, seqeval scores, a loadable NER model."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from aiforge.models import resolve
from aiforge.train import load_config, train
from aiforge.train.data import Dataset, Split
from aiforge.train.tokens import IGNORE_INDEX, TokenClassificationTask

PEOPLE = ["김철수", "이영희", "John", "Maria"]
PLACES = ["서울", "부산", "Paris", "Berlin"]


def _sentences(n: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        person, place = rng.choice(PEOPLE), rng.choice(PLACES)
        rows.append(
            {"tokens": [person, "went", "to", place, "today"], "tags": ["B-PER", "O", "O", "B-LOC", "O"]}
        )
    return rows


@pytest.fixture
def ner_files(tmp_path: Path) -> dict[str, Path]:
    paths = {}
    for name, n, seed in (("train", 48, 0), ("test", 12, 1)):
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text(
            "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in _sentences(n, seed)), encoding="utf-8"
        )
    return paths


@pytest.fixture(scope="module")
def tiny_ner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-ner"), head="token-cls", num_labels=3)


def _config(tiny_ner: Path, ner_files: dict[str, Path], tmp_path: Path, *extra: str):
    return load_config(
        None,
        [
            "task=token-classification",
            f"model={tiny_ner}",
            f"output_dir={tmp_path / 'ner'}",
            f"data.train={ner_files['train']}",
            f"data.test={ner_files['test']}",
            "data.text_column=tokens",
            "data.label_column=tags",
            "training.epochs=2",
            "training.batch_size=8",
            "training.num_threads=1",
            "training.lr=1e-3",
            "tracking.enabled=false",
            *extra,
        ],
    )


def test_tags_go_to_first_sub_words_only(tiny_ner: Path, ner_files, tmp_path: Path) -> None:
    config = _config(tiny_ner, ner_files, tmp_path)
    split = Split("train", [["김철수", "went", "to", "Berlin"]], [["B-PER", "O", "O", "B-LOC"]])
    task = TokenClassificationTask(
        config, Dataset(split, split, None, ["B-LOC", "B-PER", "O"]), resolve(str(tiny_ner))
    )
    task.load()
    task.max_length = 64
    encoded = task.encode(split)
    word_ids = task.tokenizer(split.inputs, is_split_into_words=True).word_ids(0)
    labels = encoded.labels[0]
    assert len(labels) == len(encoded.input_ids[0])
    assert [lab for lab in labels if lab != IGNORE_INDEX] == [1, 2, 2, 0]  # one tag per word, in order
    assert labels[0] == IGNORE_INDEX and labels[-1] == IGNORE_INDEX  # [CLS], [SEP]
    assert sum(w == 0 for w in word_ids) > 1  # 김철수 splits into several pieces; only the first is tagged


def test_ner_training_reports_seqeval_and_loads_as_a_pipeline(
    tiny_ner: Path, ner_files, tmp_path: Path
) -> None:
    from aiforge.tasks import load_pipeline

    result = train(_config(tiny_ner, ner_files, tmp_path), progress=False)
    test = result.metrics["test"]
    assert {"f1", "precision", "recall", "accuracy"} <= set(test)
    assert set(test["per_class"]) == {"LOC", "PER"}  # entity types, not BIO tags
    # the per-word logistic regression baseline, scored on the same sentences, compared by paired bootstrap
    assert result.baseline is not None and result.baseline["name"] == "word-features+logreg"
    assert result.baseline["test"]["f1"] > 0.9  # names and places sit in fixed slots of the sentence
    comparison = result.comparison["test"]
    assert comparison["test"] == "paired-bootstrap" and comparison["metric"] == "f1" and comparison["n"] == 12
    assert comparison["verdict"] in ("beats", "tie", "below")
    assert any(line.startswith("verdict") for line in result.lines())
    pipe = load_pipeline("token-classification", model=str(result.model_dir), device="cpu")
    out = pipe("Maria went to 서울 today")
    assert isinstance(out["entities"], list)
    meta = json.loads((result.model_dir / "aiforge.json").read_text(encoding="utf-8"))
    assert meta["labels"] == ["B-LOC", "B-PER", "O"] and meta["task"] == "token-classification"


def test_mismatched_token_and_tag_counts_are_skipped(tiny_ner: Path, ner_files, tmp_path: Path) -> None:
    from aiforge.train.dataset import load_dataset

    bad = tmp_path / "bad.jsonl"
    rows = _sentences(10, 2) + [{"tokens": ["a", "b"], "tags": ["O"]}]
    bad.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    config = _config(tiny_ner, ner_files, tmp_path, f"data.train={bad}")
    data = load_dataset(config.data, seed=0, sequence=True)
    assert data.skipped["train"] == {"token and tag counts differ": 1}
    assert data.labels == ["B-LOC", "B-PER", "O"]
