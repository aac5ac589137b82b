"""Intervals and the paired test against the baseline (aiforge.train.significance) on known cases."""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, f1_score

from aiforge.train.significance import (
    assess,
    bootstrap_intervals,
    compare,
    entity_counts,
    mcnemar_mid_p,
    multi_label_counts,
    single_label_counts,
    verdict,
)


def noisy(truth: np.ndarray, error_rate: float, seed: int, n_labels: int = 2) -> np.ndarray:
    rng = np.random.default_rng(seed)
    wrong = rng.random(len(truth)) < error_rate
    return np.where(wrong, (truth + rng.integers(1, n_labels, len(truth))) % n_labels, truth)


def test_mcnemar_mid_p_matches_the_hand_computed_binomial_tail() -> None:
    # 10 rows only the model got right, 2 only the baseline: X ~ Bin(12, 1/2)
    # exact = 2 P(X <= 2) = 2 (1 + 12 + 66) / 4096; mid-p = exact - P(X = 2) = 92 / 4096
    assert mcnemar_mid_p(10, 2) == pytest.approx(92 / 4096)
    assert mcnemar_mid_p(2, 10) == pytest.approx(92 / 4096)  # two-sided: symmetric
    assert mcnemar_mid_p(0, 0) == 1.0
    assert mcnemar_mid_p(5, 5) == pytest.approx(1.0)  # 2 P(X < 5) + P(X = 5) = 1: no evidence either way
    assert mcnemar_mid_p(7, 3) == pytest.approx((2 * (1 + 10 + 45) + 120) / 1024)  # 2 P(X<3) + P(X=3)


def test_identical_predictions_are_a_tie() -> None:
    truth = np.random.default_rng(0).integers(0, 2, 2000)
    pred = noisy(truth, 0.2, seed=1)
    result = compare(single_label_counts(truth, pred, 2), single_label_counts(truth, pred, 2))
    assert result["verdict"] == "tie"
    assert result["difference"] == 0.0 and result["p_value"] == 1.0
    assert result["test"] == "mcnemar-mid-p"


def test_a_clearly_better_model_on_2000_rows_beats_and_a_worse_one_is_below() -> None:
    truth = np.random.default_rng(0).integers(0, 2, 2000)
    good, weak = noisy(truth, 0.10, seed=1), noisy(truth, 0.20, seed=2)
    better = compare(single_label_counts(truth, good, 2), single_label_counts(truth, weak, 2))
    assert better["verdict"] == "beats" and better["p_value"] < 1e-6
    low, high = better["difference_ci"]
    assert 0 < low < better["difference"] < high
    worse = compare(single_label_counts(truth, weak, 2), single_label_counts(truth, good, 2))
    assert worse["verdict"] == "below"


def test_a_small_difference_on_few_rows_is_a_tie() -> None:
    truth = np.random.default_rng(0).integers(0, 2, 200)
    a, b = truth.copy(), truth.copy()
    a[:20] = 1 - a[:20]  # 90 % right
    b[:24] = 1 - b[:24]  # 88 % right: 4 discordant rows
    assert compare(single_label_counts(truth, a, 2), single_label_counts(truth, b, 2))["verdict"] == "tie"


def test_point_metrics_match_sklearn_and_intervals_cover_them() -> None:
    truth = np.random.default_rng(3).integers(0, 3, 1000)
    pred = noisy(truth, 0.3, seed=4, n_labels=3)
    counts = single_label_counts(truth, pred, 3)
    result = compare(counts, counts)
    assert result["model"]["accuracy"] == pytest.approx(accuracy_score(truth, pred), abs=1e-4)
    assert result["model"]["macro_f1"] == pytest.approx(f1_score(truth, pred, average="macro"), abs=1e-4)
    low, high = bootstrap_intervals(counts)["accuracy"]
    assert low < accuracy_score(truth, pred) < high
    assert 0.04 < high - low < 0.07  # about ±1.4 points at n = 1000, p = 0.7


def test_bootstrap_on_25k_rows_takes_about_a_second_at_most() -> None:
    # 0.5-0.7 s on the shared 2-core box; the bound leaves room for a loaded machine
    truth = np.random.default_rng(0).integers(0, 2, 25_000)
    ours, theirs = (
        single_label_counts(truth, noisy(truth, 0.15, 1), 2),
        single_label_counts(truth, noisy(truth, 0.2, 2), 2),
    )
    start = time.perf_counter()
    compare(ours, theirs)
    assert time.perf_counter() - start < 2.0


def test_f1_metrics_use_the_paired_bootstrap() -> None:
    rng = np.random.default_rng(0)
    truth = (rng.random((1500, 4)) < 0.3).astype(int)
    good = np.where(rng.random(truth.shape) < 0.05, 1 - truth, truth)
    weak = np.where(rng.random(truth.shape) < 0.25, 1 - truth, truth)
    result = compare(multi_label_counts(truth, good), multi_label_counts(truth, weak))
    assert result["test"] == "paired-bootstrap" and result["metric"] == "micro_f1"
    assert result["verdict"] == "beats"
    assert result["model"]["micro_f1"] == pytest.approx(f1_score(truth, good, average="micro"), abs=1e-4)
    same = compare(multi_label_counts(truth, good), multi_label_counts(truth, good))
    assert same["verdict"] == "tie"


def test_entity_f1_matches_seqeval() -> None:
    from seqeval.metrics import f1_score as entity_f1

    true = [["B-PER", "O", "B-LOC"], ["O", "B-ORG", "I-ORG"], ["O"]]
    pred = [["B-PER", "O", "O"], ["O", "B-ORG", "O"], ["B-LOC"]]
    result = compare(entity_counts(true, pred), entity_counts(true, true))
    assert result["model"]["f1"] == pytest.approx(entity_f1(true, pred), abs=1e-4)
    assert result["baseline"]["f1"] == 1.0


def test_verdict_needs_significance_and_a_sign() -> None:
    assert verdict(0.02, 0.3) == "tie"
    assert verdict(0.02, 0.01) == "beats"
    assert verdict(-0.02, 0.01) == "below"


def test_assess_adds_intervals_compares_and_drops_rows() -> None:
    truth = np.random.default_rng(0).integers(0, 2, 500).tolist()
    rows = {"kind": "single", "true": truth, "pred": truth}
    metrics = {
        "validation": {"accuracy": 1.0, "rows": dict(rows)},
        "test": {"accuracy": 1.0, "rows": dict(rows)},
    }
    baseline = {"name": "b", "test": {"accuracy": 1.0, "rows": dict(rows)}}
    comparison = assess(metrics, baseline, 2)
    assert set(comparison) == {"test"}
    assert "rows" not in metrics["test"] and "rows" not in baseline["test"]
    assert metrics["validation"]["ci"]["accuracy"] == [1.0, 1.0]
    assert baseline["test"]["ci"]["accuracy"] == [1.0, 1.0]
