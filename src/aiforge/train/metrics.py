"""Task metrics and the plots saved with every run.

Classification: accuracy, macro-F1 and a per-class report (scikit-learn); multi-label: micro/macro
F1 and subset accuracy; token classification: entity-level precision/recall/F1 (seqeval), the
number NER papers report. Plots use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
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


# ---- plots ----------------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only; never needs a display
    import matplotlib.pyplot as plt

    return plt


def plot_confusion_matrix(matrix: list[list[int]], labels: list[str], path: Path, title: str = "") -> Path:
    plt = _pyplot()
    data = np.asarray(matrix)
    size = max(4.0, 0.5 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title or "confusion matrix")
    if len(labels) <= 30:
        threshold = data.max() / 2 if data.size else 0
        for (i, j), value in np.ndenumerate(data):
            ax.text(
                j, i, str(value), ha="center", va="center", color="white" if value > threshold else "black"
            )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_loss_curve(
    steps: list[int], losses: list[float], evals: list[dict[str, float]], path: Path, metric: str
) -> Path:
    """Training loss per logged step, validation loss and the chosen metric per evaluation."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot(steps, losses, label="train loss", alpha=0.8)
    eval_steps = [e["step"] for e in evals]
    if evals and "loss" in evals[0]:
        ax.plot(eval_steps, [e["loss"] for e in evals], "o-", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    if evals and metric in evals[0]:
        other = ax.twinx()
        other.plot(
            eval_steps, [e[metric] for e in evals], "s--", color="tab:green", label=f"validation {metric}"
        )
        other.set_ylabel(metric)
        other.legend(loc="upper right")
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
