"""The cheap baselines every run reports next to the fine-tuned model, fitted on the same split.

* text: character n-gram TF-IDF + logistic regression: seconds on a CPU, no tokenizer assumptions
  (works on Korean, code-mixed text and typos), and often strong: on the NSMC sample it reaches
  about 0.81, so a fine-tuned model that does not beat it has not paid for its compute;
* images: a linear probe, logistic regression on the frozen pretrained backbone's pooled features
  (:mod:`aiforge.train.images`): what the backbone knows before any fine-tuning;
* audio: logistic regression on the mean and spread of log-mel bands (:mod:`aiforge.train.audio`).

All of them end in :func:`fit_logreg`, so they report the same numbers the same way.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.train.data import Split
from aiforge.train.metrics import classification_metrics

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared


def fit_logreg(
    name: str,
    train: tuple[Any, list[int]],
    evaluate: dict[str, tuple[Any, list[int]]],
    labels: list[str],
    *,
    C: float = 1.0,
    scale: bool = False,
    started: float | None = None,
) -> dict[str, Any]:
    """Fit logistic regression on ``train = (features, label ids)``; return ``{split: {accuracy,
    macro_f1}}`` for each split of ``evaluate``, the baseline's name and its fit time (from ``started``,
    so feature extraction counts)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter() if started is None else started
    classifier = LogisticRegression(C=C, max_iter=2000)
    model = make_pipeline(StandardScaler(), classifier) if scale else classifier
    model.fit(*train)
    out: dict[str, Any] = {"name": name}
    for split, (features, y) in evaluate.items():
        predicted = model.predict(features).tolist()
        metrics = classification_metrics(y, predicted, labels)
        out[split] = {k: metrics[k] for k in ("accuracy", "macro_f1")}
        out[split]["rows"] = {"kind": "single", "true": list(y), "pred": predicted}  # for the paired test
    out["fit_seconds"] = time.perf_counter() - start
    return out


def fit_feature_baseline(
    name: str, featurize: Callable[[Any], np.ndarray], prep: Prepared[Any], labels: list[str]
) -> dict[str, Any]:
    """Standardised features -> logistic regression: ``featurize(encoded split)`` gives one row per
    item of ``prep.train`` (fit) and of ``prep.validation`` / ``prep.test`` (scored)."""
    started = time.perf_counter()
    splits = {"validation": prep.validation, **({"test": prep.test} if prep.test is not None else {})}
    features = lambda encoded: (featurize(encoded), encoded.labels)  # noqa: E731
    return fit_logreg(
        name,
        features(prep.train),
        {split: features(encoded) for split, encoded in splits.items()},
        labels,
        scale=True,
        started=started,
    )


def fit_text_baseline(train: Split, evaluate: dict[str, Split], labels: list[str]) -> dict[str, Any]:
    """Fit on ``train``; return ``{split: metrics}`` for each split in ``evaluate`` plus the fit time."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    start = time.perf_counter()
    index = {label: i for i, label in enumerate(labels)}
    # char_wb 1-4 grams: sub-word pieces inside word boundaries; sublinear tf damps repeated characters
    vectorizer = TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2, max_features=300_000
    )
    ids = lambda split: [index[str(y)] for y in split.labels]  # noqa: E731
    return fit_logreg(
        "tfidf-char-ngrams+logreg",
        (vectorizer.fit_transform(train.inputs), ids(train)),
        {name: (vectorizer.transform(split.inputs), ids(split)) for name, split in evaluate.items()},
        labels,
        C=4.0,
        started=start,
    )
