"""``ensemble: baseline``: stack the fine-tuned text classifier with its TF-IDF baseline.

The TF-IDF + logistic regression is refitted on the training rows exactly as the baseline was (same
vectorizer, same C: deterministic, so its predictions are the baseline's), then the stacker, a
logistic regression from [model log-probs, TF-IDF log-probs] to the label, is fitted on the
validation rows only: neither component saw them, so the stacker learns how far to trust each on
unseen text. The test split never touches any fit. Scoring goes through
:meth:`aiforge.tasks.stack.TextStack.logits`, the call the text-classification pipeline makes, so
the figures in the report are what `aiforge run` and `aiforge serve` return.

The report keeps the model alone, the baseline alone and the stack apart, with intervals and paired
tests of the stack against each (:func:`stack_report`).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from aiforge.tasks.stack import TextStack, class_logits, log_softmax
from aiforge.train.baseline import TFIDF_C, tfidf_vectorizer
from aiforge.train.calibration import confidence_and_correct, expected_calibration_error
from aiforge.train.data import Split
from aiforge.train.metrics import classification_metrics
from aiforge.train.significance import bootstrap_intervals, compare, row_counts

log = logging.getLogger(__name__)

# Which vectorizer settings the saved stack needs to transform text as the fitted one did (min_df and
# max_features only chose the vocabulary, which is saved itself).
VECTORIZER_KEYS = (
    "analyzer", "ngram_range", "lowercase", "strip_accents", "binary", "norm", "use_idf", "smooth_idf",
    "sublinear_tf",
)  # fmt: skip
STACKER_C = 1.0  # the stacker has 2 x labels inputs; mild regularisation on a few hundred rows


def fit_stack(
    train: Split, validation: Split, validation_logits: np.ndarray, labels: list[str], temperature: float
) -> TextStack | None:
    """TF-IDF on ``train``, the stacker on ``validation`` (the model's logits on it, row by row).
    None when the validation rows miss a label (the stacker could not learn that label's weight)."""
    from sklearn.linear_model import LogisticRegression

    index = {label: i for i, label in enumerate(labels)}
    ids = lambda split: np.asarray([index[str(y)] for y in split.labels])  # noqa: E731
    vectorizer = tfidf_vectorizer()
    tfidf = LogisticRegression(C=TFIDF_C, max_iter=2000).fit(
        vectorizer.fit_transform(train.inputs), ids(train)
    )
    truth = ids(validation)
    if len(tfidf.classes_) != len(labels) or len(set(truth.tolist())) != len(labels):
        log.warning("ensemble: every label must occur in train and validation; the model is saved unstacked")
        return None
    terms = sorted(vectorizer.vocabulary_.items(), key=lambda item: item[1])
    params = vectorizer.get_params()
    stack = TextStack(
        labels=list(labels),
        vectorizer_params={key: params[key] for key in VECTORIZER_KEYS},
        vocabulary=[term for term, _ in terms],
        idf=np.asarray(vectorizer.idf_, dtype=np.float64),
        tfidf_coef=np.asarray(tfidf.coef_, dtype=np.float64),
        tfidf_intercept=np.asarray(tfidf.intercept_, dtype=np.float64),
        stack_coef=np.zeros((len(labels), 2 * len(labels))),
        stack_intercept=np.zeros(len(labels)),
        temperature=temperature,
    )
    stacker = LogisticRegression(C=STACKER_C, max_iter=1000)
    stacker.fit(stack.features(validation_logits, list(validation.inputs)), truth)
    stack.stack_coef = class_logits(stacker.coef_.T, len(labels)).T if len(labels) == 2 else stacker.coef_
    stack.stack_intercept = class_logits(stacker.intercept_[None, :], len(labels))[0]
    stack.info = {
        "fitted_on": "validation",
        "n_validation": len(truth),
        "tfidf_fitted_on": "train",
        "n_train": len(train.labels),
        "inputs": ["model log-probs", "tfidf log-probs"],
    }
    return stack


def score_stack(stack: TextStack, split: Split, model_logits: np.ndarray) -> dict[str, Any]:
    """The stack's metrics on a split, with the per-row ``rows`` the paired tests need and its ECE."""
    truth = [stack.labels.index(str(y)) for y in split.labels]
    logits = stack.logits(model_logits, list(split.inputs))
    predicted = logits.argmax(axis=1).tolist()
    metrics = classification_metrics(truth, predicted, stack.labels)
    probs = np.exp(log_softmax(logits))
    metrics["ece"] = round(
        expected_calibration_error(*confidence_and_correct(probs, np.asarray(truth), False)), 4
    )
    metrics["rows"] = {"kind": "single", "true": truth, "pred": predicted}
    return metrics


def stack_report(
    stack: TextStack,
    splits: dict[str, Split],
    metrics: dict[str, dict[str, Any]],
    baseline: dict[str, Any] | None,
) -> dict[str, Any]:
    """``{split: stack metrics with intervals, vs_model and vs_baseline paired tests}`` for each split
    the model was scored on, plus the stack's weights. Call before :func:`significance.assess`, which
    drops the per-row records this compares."""
    n_labels = len(stack.labels)
    out: dict[str, Any] = {"info": stack.info, "weights": stack.stack_coef.round(4).tolist()}
    for name, split in splits.items():
        model_rows = metrics.get(name, {}).get("rows")
        if model_rows is None or "logits" not in model_rows:
            continue
        scores = score_stack(stack, split, np.asarray(model_rows["logits"]))
        ours = row_counts(scores.pop("rows"), n_labels)
        scores["ci"] = bootstrap_intervals(ours)
        scores["vs_model"] = compare(ours, row_counts(model_rows, n_labels))
        base_rows = (baseline or {}).get(name, {}).get("rows")
        if base_rows is not None:
            scores["vs_baseline"] = compare(ours, row_counts(base_rows, n_labels))
        out[name] = {k: v for k, v in scores.items() if k != "confusion_matrix"}
    return out
