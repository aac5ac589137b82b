"""Scores that mean what they say: temperature scaling fitted on the validation split.

A fine-tuned classifier is usually over-confident (on the NSMC quickstart nearly every score was
0.94-0.96, whether the model was right or not). Temperature scaling (Guo et al. 2017) divides the
logits by one scalar T > 0 chosen to minimise the validation negative log-likelihood: the predicted
label never changes (argmax is unchanged, so accuracy and the paired test are untouched), only how
sure the scores are. T is saved in the model's ``config.json`` as ``aiforge_temperature`` (and in
``aiforge.json``); the text, image (transformers) and audio classification pipelines divide by
it, so ``aiforge run`` and ``aiforge serve`` give calibrated scores.

Multi-label models get one temperature shared by every label's sigmoid (minimising the binary
cross-entropy): a per-label temperature would be fitted on a few positives per label on small
validation splits. Token classification is not calibrated: its scores are aggregated over word
pieces into entities, and an entity's score is not a per-token probability to calibrate.

The expected calibration error (ECE, 15 equal-width confidence bins, weighted |accuracy -
confidence|) is reported before and after, on the report split (test when there is one), which the
temperature never saw.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from aiforge.tasks.base import TEMPERATURE_KEY  # where the classification pipelines read it

BINS = 15
LOG_BETA_RANGE = (math.log(0.02), math.log(50.0))  # 1/T: T from 0.02 to 50


def probabilities(logits: np.ndarray, temperature: float, multi_label: bool) -> np.ndarray:
    scaled = logits / temperature
    if multi_label:
        return 1.0 / (1.0 + np.exp(-scaled))
    shifted = scaled - scaled.max(axis=1, keepdims=True)
    exp = np.exp(shifted)
    return exp / exp.sum(axis=1, keepdims=True)


def negative_log_likelihood(
    logits: np.ndarray, truth: np.ndarray, temperature: float, multi_label: bool
) -> float:
    """Mean NLL of the true labels (ids; or a 0/1 matrix for multi-label) at ``temperature``."""
    scaled = logits / temperature
    if multi_label:  # binary cross-entropy with logits, numerically stable form
        return float(np.mean(np.logaddexp(0, scaled) - truth * scaled))
    log_norm = np.logaddexp.reduce(scaled, axis=1)
    return float(np.mean(log_norm - scaled[np.arange(len(truth)), truth]))


def fit_temperature(logits: np.ndarray, truth: np.ndarray, multi_label: bool, iterations: int = 80) -> float:
    """The T that minimises the NLL: golden-section search on log(1/T). The NLL is convex in 1/T
    (log-sum-exp of a linear function), so it has one minimum and the search finds it, without a
    gradient or scipy."""
    if len(logits) == 0:
        return 1.0
    nll = lambda log_beta: negative_log_likelihood(logits, truth, math.exp(-log_beta), multi_label)  # noqa: E731
    low, high = LOG_BETA_RANGE
    ratio = (math.sqrt(5) - 1) / 2
    a, b = high - ratio * (high - low), low + ratio * (high - low)
    fa, fb = nll(a), nll(b)
    for _ in range(iterations):
        if fa < fb:
            high, b, fb = b, a, fa
            a = high - ratio * (high - low)
            fa = nll(a)
        else:
            low, a, fa = a, b, fb
            b = low + ratio * (high - low)
            fb = nll(b)
    return float(math.exp(-(low + high) / 2))


def confidence_and_correct(
    probs: np.ndarray, truth: np.ndarray, multi_label: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Per prediction: how sure it was and whether it was right. Multi-label: each (row, label)
    decision at 0.5 is one prediction, sure by max(p, 1 - p)."""
    if multi_label:
        flat, true = probs.ravel(), truth.ravel()
        return np.maximum(flat, 1 - flat), ((flat > 0.5) == (true > 0.5)).astype(float)
    return probs.max(axis=1), (probs.argmax(axis=1) == truth).astype(float)


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> dict[str, list[float]]:
    """Per equal-width confidence bin: mean confidence, accuracy and count (empty bins: count 0)."""
    index = np.minimum((confidence * bins).astype(int), bins - 1)
    count = np.bincount(index, minlength=bins).astype(float)
    confidence_sum = np.bincount(index, weights=confidence, minlength=bins)
    correct_sum = np.bincount(index, weights=correct, minlength=bins)
    safe = np.maximum(count, 1)
    return {
        "confidence": (confidence_sum / safe).round(4).tolist(),
        "accuracy": (correct_sum / safe).round(4).tolist(),
        "count": count.astype(int).tolist(),
    }


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = BINS) -> float:
    """Sum over bins of (share of predictions) x |accuracy - mean confidence|."""
    table = reliability_bins(confidence, correct, bins)
    count = np.asarray(table["count"], dtype=float)
    gap = np.abs(np.asarray(table["accuracy"]) - np.asarray(table["confidence"]))
    return float((count * gap).sum() / max(1.0, count.sum()))


def calibrate(
    metrics: dict[str, dict[str, Any]], multi_label: bool, report_split: str
) -> dict[str, Any] | None:
    """Fit T on the validation logits; ECE and reliability tables before and after on ``report_split``.
    None where the evaluations carry no logits (token classification)."""
    fit_rows = metrics.get("validation", {}).get("rows") or {}
    report_rows = metrics.get(report_split, {}).get("rows") or {}
    if "logits" not in fit_rows or "logits" not in report_rows:
        return None
    temperature = fit_temperature(np.asarray(fit_rows["logits"]), np.asarray(fit_rows["true"]), multi_label)
    logits, truth = np.asarray(report_rows["logits"]), np.asarray(report_rows["true"])
    out: dict[str, Any] = {
        "temperature": round(temperature, 4),
        "fitted_on": "validation",
        "split": report_split,
    }
    for when, t in (("before", 1.0), ("after", temperature)):
        confidence, correct = confidence_and_correct(
            probabilities(logits, t, multi_label), truth, multi_label
        )
        out[f"ece_{when}"] = round(expected_calibration_error(confidence, correct), 4)
        out[f"nll_{when}"] = round(negative_log_likelihood(logits, truth, t, multi_label), 4)
        out[f"reliability_{when}"] = reliability_bins(confidence, correct)
    out["bins"] = BINS
    return out


def save_temperature(model_dir: Path, temperature: float) -> None:
    """Record T in the model's config.json, where the pipelines read it when they load the model."""
    path = model_dir / "config.json"
    config = json.loads(path.read_text(encoding="utf-8"))
    config[TEMPERATURE_KEY] = temperature
    path.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
