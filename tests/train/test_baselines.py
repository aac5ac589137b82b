"""The baselines of tasks that had none: one-vs-rest TF-IDF for multi-label text, per-word logistic
regression for token classification. Fitted directly on small synthetic splits (no model needed)."""

from __future__ import annotations

import random

from aiforge.train.baseline import fit_multilabel_text_baseline, fit_token_baseline, word_features
from aiforge.train.data import Split

TOPICS = {
    "sports": ["축구", "야구", "골", "경기"],
    "money": ["주식", "금리", "은행", "환율"],
    "food": ["김치", "라면"],
}


def _multilabel_split(name: str, n: int, seed: int) -> Split:
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(n):
        chosen = sorted(rng.sample(list(TOPICS), rng.choice([1, 2])))
        words = [w for topic in chosen for w in rng.sample(TOPICS[topic], 2)] + ["오늘", "뉴스"]
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(chosen)
    return Split(name, texts, labels)


def test_multilabel_text_baseline_learns_keyword_topics_and_keeps_rows() -> None:
    labels = sorted(TOPICS)
    result = fit_multilabel_text_baseline(
        _multilabel_split("train", 300, 0), {"test": _multilabel_split("test", 100, 1)}, labels
    )
    assert result["name"] == "tfidf-char-ngrams+one-vs-rest-logreg"
    assert result["test"]["micro_f1"] > 0.9
    assert {"accuracy", "micro_f1", "macro_f1"} <= set(result["test"])
    rows = result["test"]["rows"]
    assert rows["kind"] == "multi" and len(rows["pred"]) == 100 and len(rows["pred"][0]) == len(labels)


def _ner_split(name: str, n: int, seed: int) -> Split:
    rng = random.Random(seed)
    people, places = ["김철수", "이영희", "John", "Maria"], ["서울", "부산", "Paris", "Berlin"]
    words, tags = [], []
    for _ in range(n):
        words.append([rng.choice(people), "went", "to", rng.choice(places), "today"])
        tags.append(["B-PER", "O", "O", "B-LOC", "O"])
    return Split(name, words, tags)


def test_token_baseline_tags_entities_and_scores_like_seqeval() -> None:
    result = fit_token_baseline(
        _ner_split("train", 40, 0), {"test": _ner_split("test", 10, 1)}, ["B-LOC", "B-PER", "O"]
    )
    assert result["name"] == "word-features+logreg"
    assert result["test"]["f1"] == 1.0
    rows = result["test"]["rows"]
    assert rows["kind"] == "entities" and rows["pred"][0] == ["B-PER", "O", "O", "B-LOC", "O"]


def test_word_features_see_neighbours_and_the_edges() -> None:
    features = word_features(["서울", "에", "갔다"], 0)
    assert features["word-1"] == "<pad>" and features["word+1"] == "에" and features["hangul"]
    assert word_features(["서울", "에", "갔다"], 2)["word+1"] == "<pad>"


def test_multilabel_training_reports_the_baseline_and_the_paired_test(tiny_bert, tmp_path) -> None:
    import json

    from aiforge.train import load_config, train

    paths = {}
    for name, n, seed in (("train", 120, 0), ("test", 40, 1)):
        split = _multilabel_split(name, n, seed)
        paths[name] = tmp_path / f"{name}.jsonl"
        paths[name].write_text(
            "".join(
                json.dumps({"text": t, "label": y}, ensure_ascii=False) + "\n"
                for t, y in zip(split.inputs, split.labels, strict=True)
            ),
            encoding="utf-8",
        )
    config = load_config(
        None,
        [
            f"model={tiny_bert}",
            f"output_dir={tmp_path / 'run'}",
            f"data.train={paths['train']}",
            f"data.test={paths['test']}",
            "data.multi_label=true",
            "data.validation_split=0.25",
            "training.epochs=1",
            "training.batch_size=16",
            "training.num_threads=1",
            "training.max_length=32",
            "tracking.enabled=false",
        ],
    )
    result = train(config, progress=False)
    assert result.baseline is not None and result.baseline["test"]["micro_f1"] > 0.8
    comparison = result.comparison["test"]
    assert comparison["metric"] == "micro_f1" and comparison["test"] == "paired-bootstrap"
    assert comparison["n"] == 40 and "micro_f1" in result.metrics["test"]["ci"]
