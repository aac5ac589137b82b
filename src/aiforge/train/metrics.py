"""Task metrics.

Classification: accuracy, macro-F1 and a per-class report (scikit-learn); multi-label: micro/macro
F1 and subset accuracy; token classification: entity-level precision/recall/F1 (seqeval), the
number NER papers report. Recognition (OCR, speech): edit distance, for character and word
error rates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def classification_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: list[str]) -> dict[str, Any]:
    """accuracy, macro_f1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "per_class": {
            labels[i]: {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in ids
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def multilabel_metrics(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict[str, Any]:
    """For 0/1 matrices (rows x labels): subset accuracy, micro- and macro-F1, per-label F1."""
    from sklearn.metrics import accuracy_score, f1_score

    per_label = f1_score(y_true, y_pred, average=None, zero_division=0)
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "micro_f1": float(f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": {labels[i]: {"f1": float(per_label[i])} for i in range(len(labels))},
    }


def seqeval_metrics(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict[str, Any]:
    """Entity-level scores: an entity counts only when its type and both boundaries are right."""
    from seqeval.metrics import accuracy_score, classification_report, f1_score, precision_score, recall_score

    report = classification_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    return {
        "f1": float(f1_score(true_tags, pred_tags, zero_division=0)),
        "precision": float(precision_score(true_tags, pred_tags, zero_division=0)),
        "recall": float(recall_score(true_tags, pred_tags, zero_division=0)),
        "accuracy": float(accuracy_score(true_tags, pred_tags)),
        "per_class": {
            k: {m: float(v) for m, v in row.items()} for k, row in report.items() if "avg" not in k
        },
    }


def scalar_metrics(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    """The numbers of a metrics dict (no per-class tables), ready for MLflow."""
    return {f"{prefix}{k}": float(v) for k, v in metrics.items() if isinstance(v, int | float)}


def edit_distance(expected: Sequence[Any], got: Sequence[Any]) -> int:
    """Levenshtein distance (insertions, deletions, substitutions) between two sequences: characters
    for a character error rate, words for a word error rate."""
    previous = list(range(len(got) + 1))
    for i, a in enumerate(expected, 1):
        current = [i]
        for j, b in enumerate(got, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1]
