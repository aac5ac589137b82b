"""Extractive QA training: SQuAD / JSONL reading, whole-article splits, window labels shared with the
inference pipeline, and a tiny model trained end to end that the QA pipeline then answers with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from aiforge.errors import AiforgeError
from aiforge.tasks.qa import WindowSpec, answer_tokens, encode_windows
from aiforge.train import load_config, train
from aiforge.train.config import DataConfig, TrainConfig, init_template
from aiforge.train.qa import best_sentence, load_qa_dataset, read_qa_split

CITIES = ["Seoul", "Busan", "Paris", "Berlin", "Tokyo", "Lima"]


def _squad(n_articles: int = 6) -> dict:
    data = []
    for a in range(n_articles):
        city = CITIES[a % len(CITIES)]
        context = f"The article {a} is long. The capital city named here is {city}. It has many parks."
        qas = [
            {"id": f"{a}-{q}", "question": f"Which capital city is named in article {a}?",
             "answers": [{"text": city, "answer_start": context.index(city)}]}
            for q in range(4)
        ]  # fmt: skip
        data.append({"title": f"Article {a}", "paragraphs": [{"context": context, "qas": qas}]})
    return {"version": "test", "data": data}


@pytest.fixture
def squad_file(tmp_path: Path) -> Path:
    path = tmp_path / "train.json"
    path.write_text(json.dumps(_squad()), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tiny_qa(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-qa"), head="qa")


def test_window_labels_point_at_the_answer_in_every_window_that_holds_it(tiny_qa: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(tiny_qa)
    context = " ".join(f"word{i}" for i in range(120)) + " the answer is Gyeongbokgung palace ." * 1
    start = context.index("Gyeongbokgung")
    end = start + len("Gyeongbokgung palace")
    spec = WindowSpec(max_length=64, stride=16)
    features = encode_windows(tokenizer, "where is it?", context, spec, ["input_ids", "attention_mask"])
    assert features.windows > 2  # the long context became overlapping windows
    holding = 0
    for window in range(features.windows):
        first, last = answer_tokens(features, window, start, end)
        if (first, last) == (0, 0):
            continue  # the [CLS] label: this window does not hold the whole answer
        holding += 1
        offsets = features.offsets[window]
        assert context[offsets[first][0] : offsets[last][1]] == "Gyeongbokgung palace"
    assert holding >= 1
    # a window that holds only part of an answer is labelled "no answer", never a cut span
    assert answer_tokens(features, 0, start, end) == (0, 0)


def test_squad_and_jsonl_reading(tmp_path: Path, squad_file: Path) -> None:
    split, skipped = read_qa_split("train", str(squad_file), DataConfig(), strict=False)
    assert len(split) == 24 and not skipped
    assert split.inputs[0].group == "Article 0"
    rows = [
        {"question": "capital?", "context": "The capital is Seoul.", "answer": "Seoul", "answer_start": 3},
        {"question": "river?", "context": "No river here.", "answer": "Han", "answer_start": 0},
    ]
    jsonl = tmp_path / "qa.jsonl"
    jsonl.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    cfg = DataConfig(input_column="question", label_column="answer")
    split, skipped = read_qa_split("train", str(jsonl), cfg, strict=False)
    assert [(a.text, a.start) for a in split.labels[0]] == [("Seoul", 15)]  # a wrong start is relocated
    assert skipped == {"answer not in context": 1}
    with pytest.raises(AiforgeError, match="answer not in context"):
        read_qa_split("train", str(jsonl), cfg, strict=True)
    with pytest.raises(AiforgeError, match="column 'text' not found"):
        read_qa_split("train", str(jsonl), DataConfig(input_column="question", label_column="text"), False)


def test_held_out_splits_keep_whole_articles(squad_file: Path) -> None:
    cfg = DataConfig(train=str(squad_file), validation_split=0.2, test_split=0.2)
    dataset = load_qa_dataset(cfg, seed=42)
    groups = {name: {e.group for e in s.inputs} for name, s in (("train", dataset.train),
              ("validation", dataset.validation), ("test", dataset.test))}  # fmt: skip
    assert all(groups.values())
    assert not (groups["train"] & groups["test"]) and not (groups["train"] & groups["validation"])
    assert load_qa_dataset(cfg, seed=42).test.inputs == dataset.test.inputs  # type: ignore[union-attr]


def test_sentence_baseline_picks_the_sentence_sharing_the_question() -> None:
    context = "Paris is in France. The capital city named here is Seoul. It rains."
    wanted = "The capital city named here is Seoul."
    assert best_sentence("Which capital city is named here?", context) == wanted


def test_init_template_for_question_answering() -> None:
    text = init_template("question-answering")
    assert "task: question-answering" in text and "input_column: question" in text
    assert "test_split" in text


def qa_config(model: Path, squad_file: Path, output_dir: Path, *overrides: str) -> TrainConfig:
    """A question-answering config on the tiny model and the synthetic SQuAD file, untracked, 1 thread."""
    base = [
        "task=question-answering",
        f"model={model}",
        f"output_dir={output_dir}",
        f"data.train={squad_file}",
        "data.validation_split=0.2",
        "training.num_threads=1",
        "tracking.enabled=false",
    ]
    return load_config(None, [*base, *overrides])


@pytest.mark.slow
def test_tiny_qa_model_trains_and_answers_with_the_pipeline(tiny_qa: Path, squad_file: Path, tmp_path: Path):
    config = qa_config(
        tiny_qa,
        squad_file,
        tmp_path / "qa",
        "data.test_split=0.2",
        "training.max_length=64",
        "training.epochs=1",
        "training.batch_size=8",
    )
    result = train(config, progress=False)
    scores = result.metrics["test"]
    assert 0.0 <= scores["exact_match"] <= scores["f1"] <= 1.0 and "ci" in scores
    assert "f1" in result.baseline["test"]  # type: ignore[index]
    assert "test" in result.comparison
    saved = json.loads((result.model_dir / "aiforge.json").read_text())
    assert saved["task"] == "question-answering" and "f1" in saved["metrics"]["test"]

    from aiforge.tasks import load_pipeline

    pipe = load_pipeline("question-answering", model=str(result.model_dir), device="cpu")
    context = "The capital city named here is Lima."
    answer = pipe.predict([{"question": "Which capital city?", "context": context}])[0]
    assert context[answer["start"] : answer["end"]] == answer["answer"]


def test_dry_run_of_a_qa_config_times_steps_without_counting_answers_as_classes(
    tiny_qa: Path, squad_file: Path, tmp_path: Path
) -> None:
    """Gold answers are not class labels: the dry run once crashed sorting them for its imbalance check."""
    from aiforge.train import dry_run

    # max_length shorter than the contexts: windows, not cuts
    report = dry_run(qa_config(tiny_qa, squad_file, tmp_path / "qa", "training.max_length=24"))
    assert report.parameters["trainable"] > 0 and report.seconds_per_step > 0 and report.labels == {}
    assert report.warnings == []  # no class imbalance, and windows cut nothing (contexts > 24 tokens)
    assert max(report.token_lengths.values()) > 24
    assert not (tmp_path / "qa").exists()  # a dry run writes nothing


def test_training_reads_the_answer_window_and_a_share_of_the_others_held_out_reads_all(
    tiny_qa: Path, tmp_path: Path
) -> None:
    from aiforge.models import ModelRef
    from aiforge.train.qa import QuestionAnsweringTask

    long_articles = _squad(10)
    for article in long_articles["data"]:
        paragraph = article["paragraphs"][0]
        paragraph["context"] = "Nothing to see here. " * 40 + paragraph["context"]
        for qa in paragraph["qas"]:
            qa["answers"][0]["answer_start"] += len("Nothing to see here. ") * 40
    squad_file = tmp_path / "long.json"
    squad_file.write_text(json.dumps(long_articles), encoding="utf-8")
    config = load_config(
        None,
        [
            "task=question-answering",
            f"model={tiny_qa}",
            f"output_dir={tmp_path}",
            f"data.train={squad_file}",
            "training.max_length=64",  # several windows per question
        ],
    )
    dataset = load_qa_dataset(config.data, config.training.seed)
    task = QuestionAnsweringTask(config, dataset, ModelRef(str(tiny_qa), "local", str(tiny_qa)))
    task.load_processor()
    task.model_config = None
    task.resolve_max_length([])
    train, held_out = task.encode(dataset.train), task.encode(dataset.validation)
    windows = sum(f.windows for f in train.features)
    holding = [label for label in train.labels if label != (0, 0)]
    assert len(holding) == len(train.examples)  # exactly one window with the answer per question
    assert len(train) < windows  # most windows without the answer are left out
    assert held_out.features[0].inputs["input_ids"].shape[1] > 64  # scored on the serving windows
    assert len(held_out) == sum(f.windows for f in held_out.features)


def test_korquad_recipe_loads_and_models_says_how_to_build_it() -> None:
    from aiforge.tasks import default_status, get_task
    from aiforge.train.data import resolve_data_path

    config = load_config("examples/korquad-qa.yaml")
    assert config.task == "question-answering" and resolve_data_path(config.data.train).exists()
    status = default_status(get_task("question-answering"))
    assert status["offline_default"] == "registry:korquad-qa@production"
    if not status["offline_available"]:
        assert status["offline_build"] == "aiforge train examples/korquad-qa.yaml"
