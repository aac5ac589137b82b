"""Is the fine-tuned model really better than its baseline? Intervals and a paired test on the same rows.

A 1,000-row test set has a 95 % interval of about ±2.5 accuracy points, so two scores 2 points apart
say nothing by themselves. For every split scored by both the model and its baseline this module
gives

* a 95 % percentile-bootstrap interval for each metric (resampling test rows, fixed seed);
* the difference model - baseline with a *paired* bootstrap interval (the same resampled rows for
  both, so row difficulty cancels out);
* a paired test and its verdict: ``beats`` (p < 0.05, model ahead), ``below`` (p < 0.05, behind),
  ``tie`` otherwise.

The test: single-label accuracy uses McNemar's exact test with the mid-p correction. Only the rows
where exactly one of the two is right carry information; under "no difference" each such row goes
either way with probability 1/2, so the p-value is an exact binomial tail, with no resampling noise
and no large-sample assumption (Dietterich 1998 recommends McNemar for comparing two classifiers on
one test set). The mid-p version (Fagerland, Lydersen & Laake 2013) removes the exact test's
conservatism while keeping its size close to nominal. F1 scores (multi-label micro-F1, entity F1 of
token classification) are not a sum of per-row right/wrong, so there the p-value comes from the
paired bootstrap of the difference (two-sided, add-one smoothed).

Each row is reduced to a few counts (right or wrong; true positives, predicted and true counts per
label or per entity) whose sums over any resample give the metrics, so 1,000 resamples of 25,000
rows are one bincount and one matrix product (tens of milliseconds), not 1,000 metric calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

RESAMPLES = 1000
SEED = 0
CONFIDENCE = 0.95
ALPHA = 0.05
# resample x row cells per bincount: 16 MB of int64. 1,000 resamples of 25,000 rows took 0.46-0.71 s
# with 20M-cell chunks and 0.61-0.71 s with 2M on the shared 2-core box: same speed, a tenth the memory.
CELLS_PER_CHUNK = 2_000_000


@dataclass
class RowCounts:
    """Per-row counts (rows x columns) and how their column sums turn into metrics."""

    counts: np.ndarray
    metrics: Callable[[np.ndarray, int], dict[str, np.ndarray]]  # (column sums per resample, n) -> metrics
    primary: str  # the metric the paired test compares
    correct_column: int | None = None  # a 0/1 "right" column whose mean is the primary metric: McNemar


def _f1(tp: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> np.ndarray:
    """2 tp / (predicted + true); 0 where a label is neither predicted nor present (zero_division=0)."""
    denominator = predicted + true
    return np.divide(2 * tp, denominator, out=np.zeros_like(tp, dtype=float), where=denominator > 0)


def single_label_counts(y_true: list[int], y_pred: list[int], n_labels: int) -> RowCounts:
    """Columns: right, then per class true positive, predicted, true (accuracy and macro-F1)."""
    true, pred = np.asarray(y_true), np.asarray(y_pred)
    eye = np.eye(n_labels)
    right = (true == pred).astype(float)
    counts = np.column_stack([right, eye[true] * right[:, None], eye[pred], eye[true]])

    def metrics(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        c = n_labels
        per_class = _f1(sums[:, 1 : 1 + c], sums[:, 1 + c : 1 + 2 * c], sums[:, 1 + 2 * c :])
        return {"accuracy": sums[:, 0] / n, "macro_f1": per_class.mean(axis=1)}

    return RowCounts(counts, metrics, "accuracy", correct_column=0)


def multi_label_counts(y_true: np.ndarray, y_pred: np.ndarray) -> RowCounts:
    """0/1 matrices (rows x labels). Columns: exact match, then per label tp, predicted, true."""
    true, pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    exact = (true == pred).all(axis=1).astype(float)
    counts = np.column_stack([exact, true * pred, pred, true])
    n_labels = true.shape[1]

    def metrics(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        c = n_labels
        tp, predicted, present = sums[:, 1 : 1 + c], sums[:, 1 + c : 1 + 2 * c], sums[:, 1 + 2 * c :]
        return {
            "accuracy": sums[:, 0] / n,
            "micro_f1": _f1(tp.sum(1), predicted.sum(1), present.sum(1)),
            "macro_f1": _f1(tp, predicted, present).mean(axis=1),
        }

    return RowCounts(counts, metrics, "micro_f1")


def entity_counts(true_tags: list[list[str]], pred_tags: list[list[str]]) -> RowCounts:
    """Per sentence: entities found with type and both boundaries right, predicted, true (seqeval's F1)."""
    from seqeval.metrics.sequence_labeling import get_entities

    rows = []
    for true, pred in zip(true_tags, pred_tags, strict=True):
        gold, found = set(get_entities(true)), set(get_entities(pred))
        rows.append((len(gold & found), len(found), len(gold)))
    counts = np.asarray(rows, dtype=float).reshape(-1, 3)

    def metrics(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        return {"f1": _f1(sums[:, 0], sums[:, 1], sums[:, 2])}

    return RowCounts(counts, metrics, "f1")


def span_counts(true_answers: list[list[str]], predictions: list[str]) -> RowCounts:
    """Per question: exact match and character F1 (KorQuAD's, best over the gold answers)."""
    from aiforge.tasks.qa import best_over_truths, exact_match, f1_score

    counts = np.asarray(
        [
            (best_over_truths(exact_match, p, t), best_over_truths(f1_score, p, t))
            for t, p in zip(true_answers, predictions, strict=True)
        ],
        dtype=float,
    ).reshape(-1, 2)

    def metrics(sums: np.ndarray, n: int) -> dict[str, np.ndarray]:
        return {"exact_match": sums[:, 0] / n, "f1": sums[:, 1] / n}

    return RowCounts(counts, metrics, "f1")


def row_counts(rows: dict[str, Any], n_labels: int) -> RowCounts:
    """The counts for an evaluation's ``rows`` record (``{"kind", "true", "pred"}``)."""
    kind = rows["kind"]
    if kind == "single":
        return single_label_counts(rows["true"], rows["pred"], n_labels)
    if kind == "multi":
        return multi_label_counts(np.asarray(rows["true"]), np.asarray(rows["pred"]))
    if kind == "entities":
        return entity_counts(rows["true"], rows["pred"])
    if kind == "spans":
        return span_counts(rows["true"], rows["pred"])
    raise ValueError(f"unknown row kind {kind!r}")


def resample_sums(counts: np.ndarray, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """Column sums of ``counts`` over ``resamples`` bootstrap resamples of its rows (resamples x columns).

    Each resample's row multiplicities come from one bincount, and the sums from one matrix
    product: no per-resample Python loop over metrics."""
    n = counts.shape[0]
    rng = np.random.default_rng(seed)
    chunk = max(1, CELLS_PER_CHUNK // max(1, n))
    out = []
    for start in range(0, resamples, chunk):
        size = min(chunk, resamples - start)
        picks = rng.integers(0, n, size=(size, n))
        picks += (np.arange(size) * n)[:, None]  # resample r's rows count in bins r*n .. r*n + n-1
        weights = np.bincount(picks.ravel(), minlength=size * n).reshape(size, n)
        # float weights: an int64 @ float64 product skips BLAS and took 4x as long (0.54 s vs 0.13 s)
        out.append(weights.astype(np.float64) @ counts)
    return np.concatenate(out)


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> list[float]:
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return [round(float(low), 4), round(float(high), 4)]


def bootstrap_intervals(
    counts: RowCounts, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, list[float]]:
    """95 % percentile-bootstrap intervals of each metric ``counts`` defines."""
    n = counts.counts.shape[0]
    sums = resample_sums(counts.counts, resamples, seed)
    return {name: interval(values) for name, values in counts.metrics(sums, n).items()}


def mcnemar_mid_p(model_only: int, baseline_only: int) -> float:
    """Two-sided McNemar mid-p: ``model_only`` rows only the model got right, ``baseline_only`` only
    the baseline. With X ~ Binomial(b + c, 1/2) and m = min(b, c): 2 P(X < m) + P(X = m), the exact
    binomial tail (no normal approximation), summed in log space so 25,000 rows cost microseconds."""
    discordant = model_only + baseline_only
    if discordant == 0:
        return 1.0
    smaller = min(model_only, baseline_only)
    k = np.arange(1, smaller + 1)
    log_pmf = np.concatenate([[0.0], np.cumsum(np.log((discordant - k + 1) / k))]) - discordant * math.log(2)
    tail = 2 * np.exp(log_pmf[:smaller]).sum() + np.exp(log_pmf[smaller])
    return float(min(1.0, tail))


def verdict(difference: float, p_value: float, alpha: float = ALPHA) -> str:
    """``beats`` / ``below`` only when the paired test says the difference is real; ``tie`` otherwise."""
    if p_value < alpha and difference > 0:
        return "beats"
    if p_value < alpha and difference < 0:
        return "below"
    return "tie"


def compare(
    model: RowCounts, baseline: RowCounts, resamples: int = RESAMPLES, seed: int = SEED
) -> dict[str, Any]:
    """Model vs baseline on the same rows: each one's metrics with intervals, the paired difference of
    the primary metric with its interval, the test, its p-value and the verdict."""
    n = model.counts.shape[0]
    if baseline.counts.shape[0] != n:
        raise ValueError(f"model scored {n} rows, the baseline {baseline.counts.shape[0]}: not paired")
    width = model.counts.shape[1]
    # one set of resampled rows for both: the paired bootstrap
    sums = resample_sums(np.hstack([model.counts, baseline.counts]), resamples, seed)
    ours, theirs = model.metrics(sums[:, :width], n), baseline.metrics(sums[:, width:], n)
    full = np.hstack([model.counts, baseline.counts]).sum(axis=0, keepdims=True)
    point_ours, point_theirs = model.metrics(full[:, :width], n), baseline.metrics(full[:, width:], n)
    primary = model.primary
    difference = float(point_ours[primary][0] - point_theirs[primary][0])
    differences = ours[primary] - theirs[primary]
    if model.correct_column is not None and baseline.correct_column is not None:
        right_ours = model.counts[:, model.correct_column] > 0
        right_theirs = baseline.counts[:, baseline.correct_column] > 0
        model_only = int((right_ours & ~right_theirs).sum())
        baseline_only = int((~right_ours & right_theirs).sum())
        test, p_value = "mcnemar-mid-p", mcnemar_mid_p(model_only, baseline_only)
        discordant: dict[str, int] = {"model_only_right": model_only, "baseline_only_right": baseline_only}
    else:
        at_or_below = (np.sum(differences <= 0) + 1) / (resamples + 1)
        at_or_above = (np.sum(differences >= 0) + 1) / (resamples + 1)
        test, p_value = "paired-bootstrap", float(min(1.0, 2 * min(at_or_below, at_or_above)))
        discordant = {}
    return {
        "n": n,
        "metric": primary,
        "model": {k: round(float(v[0]), 4) for k, v in point_ours.items()},
        "model_ci": {k: interval(v) for k, v in ours.items()},
        "baseline": {k: round(float(v[0]), 4) for k, v in point_theirs.items()},
        "baseline_ci": {k: interval(v) for k, v in theirs.items()},
        "difference": round(difference, 4),
        "difference_ci": interval(differences),
        "test": test,
        **discordant,
        "p_value": round(p_value, 4) if p_value >= 1e-4 else float(f"{p_value:.2e}"),
        "verdict": verdict(difference, p_value),
        "resamples": resamples,
        "confidence": CONFIDENCE,
    }


VERDICT_WORDS = {"beats": "beats its baseline", "tie": "tie with its baseline", "below": "below its baseline"}


def describe(comparison: dict[str, Any]) -> str:
    """One line: ``beats its baseline: accuracy +0.020 [0.004, 0.036], mcnemar-mid-p p=0.012, n=1000``."""
    low, high = comparison["difference_ci"]
    return (
        f"{VERDICT_WORDS[comparison['verdict']]}: {comparison['metric']} {comparison['difference']:+.4f} "
        f"[{low:+.4f}, {high:+.4f}], {comparison['test']} p={comparison['p_value']:.3g}, n={comparison['n']}"
    )


def assess(
    metrics: dict[str, dict[str, Any]], baseline: dict[str, Any] | None, n_labels: int
) -> dict[str, dict[str, Any]]:
    """For each split of ``metrics`` that carries ``rows``: add the model's intervals (``ci``) and,
    where the baseline scored the same split, compare the two. Removes every ``rows`` record (they
    are per-row data, not report content). Returns ``{split: comparison}``."""
    comparisons: dict[str, dict[str, Any]] = {}
    for split, scores in metrics.items():
        rows = scores.pop("rows", None)
        if rows is None:
            continue
        ours = row_counts(rows, n_labels)
        theirs_rows = (baseline or {}).get(split, {}).pop("rows", None)
        if theirs_rows is not None and len(theirs_rows["true"]) == len(rows["true"]):
            comparison = compare(ours, row_counts(theirs_rows, n_labels))
            scores["ci"] = comparison["model_ci"]
            baseline[split]["ci"] = comparison["baseline_ci"]  # type: ignore[index]
            comparisons[split] = comparison
        else:
            scores["ci"] = bootstrap_intervals(ours)
    for split in list((baseline or {}).keys()):
        if isinstance(baseline[split], dict):  # type: ignore[index]
            baseline[split].pop("rows", None)  # type: ignore[index]
    return comparisons
