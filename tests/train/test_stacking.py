"""``ensemble: baseline``: the model stacked with its TF-IDF baseline (aiforge.train.stacking), saved
with the model and applied by the text-classification pipeline through the same call; label smoothing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.io import resolve_data_path
from aiforge.tasks.stack import STACK_DIR, load_stack
from aiforge.train import load_config, train
from aiforge.train.baseline import fit_text_baseline
from aiforge.train.data import Split
from aiforge.train.loop import training_loss
from aiforge.train.stacking import fit_stack, score_stack

LABELS = ["negative", "positive"]


def nsmc_split(name: str, rows: slice) -> Split:
    frame = pd.read_csv(resolve_data_path("packaged:nsmc_sample/train.tsv"), sep="\t").iloc[rows]
    return Split(name, frame["text"].tolist(), frame["label"].tolist())


def model_logits(split: Split, right: float, seed: int) -> np.ndarray:
    """Two-class logits of a model that is right on a share ``right`` of the rows, sure by 2 nats."""
    rng = np.random.default_rng(seed)
    truth = np.array([LABELS.index(label) for label in split.labels])
    predicted = np.where(rng.random(len(truth)) < right, truth, 1 - truth)
    logits = np.zeros((len(truth), 2))
    logits[np.arange(len(truth)), predicted] = 2.0
    return logits


def test_stack_trusts_the_better_component_and_round_trips_without_pickle(tmp_path: Path) -> None:
    train_split, validation = nsmc_split("train", slice(0, 600)), nsmc_split("validation", slice(600, 900))
    sure = fit_stack(train_split, validation, model_logits(validation, 1.0, 0), LABELS, temperature=1.0)
    assert sure is not None
    # a model that is always right: the stacker follows it and the stack is right everywhere
    assert score_stack(sure, validation, model_logits(validation, 1.0, 0))["accuracy"] == 1.0
    weights = np.abs(sure.stack_coef[1])  # [model log-probs, TF-IDF log-probs] -> positive's logit
    assert weights[:2].sum() > weights[2:].sum()

    # the TF-IDF part is the baseline: same fit, same predictions on the same rows
    baseline = fit_text_baseline(train_split, {"validation": validation}, LABELS)
    tfidf = sure.tfidf_log_probs(list(validation.inputs)).argmax(axis=1).tolist()
    assert tfidf == baseline["validation"]["rows"]["pred"]

    # a coin-flipping model: the stacker leans on TF-IDF instead
    noisy_logits = model_logits(validation, 0.5, 1)
    noisy = fit_stack(train_split, validation, noisy_logits, LABELS, temperature=1.0)
    assert noisy is not None
    weights = np.abs(noisy.stack_coef[1])
    assert weights[2:].sum() > weights[:2].sum()

    noisy.save(tmp_path)
    assert {p.name for p in (tmp_path / STACK_DIR).iterdir()} == {
        "stack.json",
        "vocabulary.json",
        "tfidf.npz",
    }
    loaded = load_stack(tmp_path)
    assert loaded is not None and loaded.labels == LABELS
    texts = list(validation.inputs[:50])
    np.testing.assert_allclose(
        loaded.logits(noisy_logits[:50], texts), noisy.logits(noisy_logits[:50], texts)
    )
    assert load_stack(tmp_path / "elsewhere") is None  # a plain model dir has no stack


def test_stack_refuses_a_format_it_does_not_read(tmp_path: Path) -> None:
    (tmp_path / STACK_DIR).mkdir()
    (tmp_path / STACK_DIR / "stack.json").write_text(json.dumps({"format": "aiforge.tfidf-stack/99"}))
    with pytest.raises(AiforgeError, match="tfidf-stack/99") as caught:
        load_stack(tmp_path)
    assert caught.value.code == "AF-MODEL-003"


@pytest.mark.slow  # 67 s on the shared 2 cores at load ~12 (train, register, two pipelines)
def test_ensemble_is_reported_beside_model_and_baseline_and_served_identically(make_config) -> None:
    from aiforge.tasks import load_pipeline

    config = make_config(
        "ensemble=baseline",
        "tracking.enabled=true",
        "tracking.model_name=tiny-stacked",
        "tracking.experiment=tests",
        "tracking.alias=production",
    )
    result = train(config, progress=False)
    stacked = result.ensemble["test"]  # type: ignore[index]
    assert stacked["vs_baseline"]["n"] == stacked["vs_model"]["n"] == 40
    assert stacked["vs_baseline"]["verdict"] in ("beats", "tie", "below")
    low, high = stacked["ci"]["accuracy"]
    assert low <= stacked["accuracy"] <= high and 0 <= stacked["ece"] <= 1
    # the three predictors, each alone, in the report and the model's metadata
    meta = json.loads((result.model_dir / "aiforge.json").read_text(encoding="utf-8"))
    assert meta["ensemble"]["test"]["accuracy"] == stacked["accuracy"]
    assert meta["metrics"]["test"]["accuracy"] == result.metrics["test"]["accuracy"]
    assert stacked["vs_baseline"]["baseline"]["accuracy"] == pytest.approx(
        meta["baseline"]["test"]["accuracy"]
    )
    assert stacked["vs_model"]["baseline"]["accuracy"] == pytest.approx(meta["metrics"]["test"]["accuracy"])
    lines = result.lines()
    assert any(line.startswith("ensemble") and "accuracy" in line for line in lines)
    run = registry.client().get_run(result.run_id)
    assert run.data.metrics["ensemble_test_accuracy"] == pytest.approx(stacked["accuracy"])

    # run and serve score through the saved stack: the pipeline's labels reproduce the reported accuracy
    test = pd.read_json(config.data.test, lines=True)
    for model in (str(result.model_dir), "registry:tiny-stacked@production"):
        pipe = load_pipeline("text-classification", model=model, device="cpu")
        assert pipe.stack is not None
        outputs = pipe.predict([{"text": text} for text in test["text"]])
        right = np.mean([out["label"] == label for out, label in zip(outputs, test["label"], strict=True)])
        assert right == pytest.approx(stacked["accuracy"])
        assert all(abs(sum(s["score"] for s in out["scores"]) - 1) < 1e-6 for out in outputs)


def test_ensemble_and_label_smoothing_refuse_multi_label_runs() -> None:
    for option in ("ensemble=baseline", "training.label_smoothing=0.1"):
        with pytest.raises(AiforgeError, match="multi-label") as caught:
            load_config(None, ["data.multi_label=true", option])
        assert caught.value.code == "AF-CONFIG-001"


def test_label_smoothing_loss_spreads_the_target_and_skips_ignored_tokens() -> None:
    class Output:
        logits = torch.tensor([[2.0, -1.0], [0.5, 0.5], [-3.0, 3.0]])
        loss = torch.tensor(7.0)  # the model's own loss, returned untouched without smoothing

    labels = torch.tensor([0, -100, 1])
    assert training_loss(Output(), {"labels": labels}, 0.0) == 7.0
    smoothed = training_loss(Output(), {"labels": labels}, 0.2)
    rows = torch.log_softmax(Output.logits[[0, 2]], dim=1)
    target = torch.tensor([[0.9, 0.1], [0.1, 0.9]])  # 0.2 spread over 2 labels
    assert smoothed.item() == pytest.approx(float(-(target * rows).sum(1).mean()), rel=1e-6)
    floats = {"labels": torch.tensor([[1.0, 0.0]])}  # multi-label targets: the model's own loss
    assert training_loss(Output(), floats, 0.2) == 7.0
