"""The cheap baselines every run reports next to the fine-tuned model, fitted on the same split.

* text: character n-gram TF-IDF + logistic regression: seconds on a CPU, no tokenizer assumptions
  (works on Korean, code-mixed text and typos), and often strong: on the NSMC sample it reaches
  about 0.81, so a fine-tuned model that does not beat it has not paid for its compute;
* images: a linear probe, logistic regression on the frozen pretrained backbone's pooled features
  (:mod:`aiforge.train.images`): what the backbone knows before any fine-tuning;
* audio: logistic regression on the mean and spread of log-mel bands (:mod:`aiforge.train.audio`);
* multi-label text: the same TF-IDF features, one logistic regression per label (one-vs-rest);
* token classification: logistic regression per word on the word itself, its affixes, its shape
  and its neighbours (scikit-learn's DictVectorizer): what a fine-tuned encoder must beat on tags.

Single-label ones end in :func:`fit_logreg`, so they report the same numbers the same way. Every
baseline also keeps its per-row predictions (``rows``) for each scored split: the report's paired
test compares them with the model's on the same rows (:mod:`aiforge.train.significance`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from aiforge.train.data import Dataset, Split
from aiforge.train.metrics import classification_metrics, multilabel_metrics, seqeval_metrics

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
    classifier: Any = None,
) -> dict[str, Any]:
    """Fit logistic regression on ``train = (features, label ids)``; return ``{split: {accuracy,
    macro_f1}}`` for each split of ``evaluate``, the baseline's name and its fit time (from ``started``,
    so feature extraction counts)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    start = time.perf_counter() if started is None else started
    classifier = classifier if classifier is not None else LogisticRegression(C=C, max_iter=2000)
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
    name: str,
    featurize: Callable[[Any], np.ndarray],
    prep: Prepared[Any],
    labels: list[str],
    classifier: Any = None,
) -> dict[str, Any]:
    """Standardised features -> logistic regression (or ``classifier``, a scikit-learn estimator):
    ``featurize(encoded split)`` gives one row per item of ``prep.train`` (fit) and of
    ``prep.validation`` / ``prep.test`` (scored)."""
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
        classifier=classifier,
    )


def scored_splits(dataset: Dataset) -> dict[str, Split]:
    """The splits a baseline is scored on: validation, and test when the run has one."""
    return {"validation": dataset.validation, **({"test": dataset.test} if dataset.test is not None else {})}


TFIDF_C = 4.0  # inverse regularisation of the TF-IDF logistic regressions (baseline and ensemble)


def tfidf_vectorizer() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer

    # char_wb 1-4 grams: sub-word pieces inside word boundaries; sublinear tf damps repeated characters
    return TfidfVectorizer(
        analyzer="char_wb", ngram_range=(1, 4), sublinear_tf=True, min_df=2, max_features=300_000
    )


def fit_text_baseline(train: Split, evaluate: dict[str, Split], labels: list[str]) -> dict[str, Any]:
    """Fit on ``train``; return ``{split: metrics}`` for each split in ``evaluate`` plus the fit time."""
    start = time.perf_counter()
    index = {label: i for i, label in enumerate(labels)}
    vectorizer = tfidf_vectorizer()
    ids = lambda split: [index[str(y)] for y in split.labels]  # noqa: E731
    return fit_logreg(
        "tfidf-char-ngrams+logreg",
        (vectorizer.fit_transform(train.inputs), ids(train)),
        {name: (vectorizer.transform(split.inputs), ids(split)) for name, split in evaluate.items()},
        labels,
        C=TFIDF_C,
        started=start,
    )


def fit_multilabel_text_baseline(
    train: Split, evaluate: dict[str, Split], labels: list[str]
) -> dict[str, Any]:
    """TF-IDF + one logistic regression per label (one-vs-rest); 0/1 per label at probability 0.5,
    as the model's sigmoid > 0.5. A label that training never leaves out (or never shows) gets a
    constant predictor: scikit-learn warns, the scores stay honest."""
    import warnings

    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier

    start = time.perf_counter()
    index = {label: i for i, label in enumerate(labels)}

    def matrix(split: Split) -> np.ndarray:
        rows = np.zeros((len(split.labels), len(labels)), dtype=int)
        for row, names in enumerate(split.labels):
            rows[row, [index[str(name)] for name in names]] = 1
        return rows

    vectorizer = tfidf_vectorizer()
    classifier = OneVsRestClassifier(LogisticRegression(C=TFIDF_C, max_iter=2000))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Label .* is present in all training examples")
        warnings.filterwarnings("ignore", message="Label not .* is present in all training examples")
        classifier.fit(vectorizer.fit_transform(train.inputs), matrix(train))
    out: dict[str, Any] = {"name": "tfidf-char-ngrams+one-vs-rest-logreg"}
    for name, split in evaluate.items():
        true, predicted = matrix(split), np.asarray(classifier.predict(vectorizer.transform(split.inputs)))
        metrics = multilabel_metrics(true, predicted, labels)
        out[name] = {k: metrics[k] for k in ("accuracy", "micro_f1", "macro_f1")}
        out[name]["rows"] = {"kind": "multi", "true": true.tolist(), "pred": predicted.astype(int).tolist()}
    out["fit_seconds"] = time.perf_counter() - start
    return out


def word_features(words: list[str], position: int) -> dict[str, Any]:
    """What the token baseline sees of one word: itself, affixes, shape, script and its neighbours."""
    word = words[position]
    lower = word.lower()
    features: dict[str, Any] = {
        "bias": 1,
        "word": lower,
        "prefix2": lower[:2],
        "suffix1": lower[-1:],
        "suffix2": lower[-2:],
        "suffix3": lower[-3:],
        "title": word.istitle(),
        "upper": word.isupper(),
        "digit": any(c.isdigit() for c in word),
        "hangul": any("\uac00" <= c <= "\ud7a3" for c in word),
        "length": min(len(word), 10),
        "first": position == 0,
    }
    for offset in (-2, -1, 1, 2):
        at = position + offset
        features[f"word{offset:+d}"] = words[at].lower() if 0 <= at < len(words) else "<pad>"
    features["suffix1-1"] = words[position - 1][-1:] if position > 0 else "<pad>"  # Korean particles
    return features


def fit_token_baseline(train: Split, evaluate: dict[str, Split], labels: list[str]) -> dict[str, Any]:
    """Per-word logistic regression on :func:`word_features`; scored like the model (seqeval, entity
    level). Tags are predicted word by word, so a lone ``I-`` tag can start an entity, as seqeval
    reads it for the model too."""
    from sklearn.feature_extraction import DictVectorizer
    from sklearn.linear_model import LogisticRegression

    start = time.perf_counter()

    def featurize(split: Split) -> list[dict[str, Any]]:
        return [word_features(words, i) for words in split.inputs for i in range(len(words))]

    vectorizer = DictVectorizer()
    classifier = LogisticRegression(C=1.0, max_iter=1000)
    train_tags = [str(tag) for tags in train.labels for tag in tags]
    classifier.fit(vectorizer.fit_transform(featurize(train)), train_tags)
    out: dict[str, Any] = {"name": "word-features+logreg"}
    for name, split in evaluate.items():
        flat = classifier.predict(vectorizer.transform(featurize(split))).tolist() if split.inputs else []
        predicted, cursor = [], 0
        for words in split.inputs:
            predicted.append([str(tag) for tag in flat[cursor : cursor + len(words)]])
            cursor += len(words)
        true = [[str(tag) for tag in tags] for tags in split.labels]
        metrics = seqeval_metrics(true, predicted)
        out[name] = {k: metrics[k] for k in ("f1", "precision", "recall", "accuracy")}
        out[name]["rows"] = {"kind": "entities", "true": true, "pred": predicted}
    out["fit_seconds"] = time.perf_counter() - start
    return out
