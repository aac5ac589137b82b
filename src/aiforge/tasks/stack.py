"""A text classifier stacked with its TF-IDF baseline: the one code path that turns (model logits,
texts) into the scores `aiforge train` reports and `aiforge run` / `aiforge serve` return.

`aiforge train` with ``ensemble: baseline`` (:mod:`aiforge.train.stacking`) fits the character
n-gram TF-IDF + logistic regression on the training rows, then a small logistic regression (the
"stacker") on the validation rows only: its inputs are the fine-tuned model's calibrated
log-probabilities and the TF-IDF model's log-probabilities, its output the class logits. On the NSMC
quickstart the two err on different reviews (sub-word meaning versus exact character n-grams), so
the stack beats either alone; see examples/nsmc-sentiment.yaml for the figures.

Saved beside the model, in ``STACK_DIR`` of the model directory, without pickle (a model
directory from elsewhere must not run code when it loads): ``stack.json`` (vectorizer settings,
labels, stacker weights), ``vocabulary.json`` (the n-grams by column) and ``tfidf.npz`` (idf and the
TF-IDF logistic regression's weights). A model directory without it is a plain classifier.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

STACK_DIR = "aiforge_stack"
FORMAT = "aiforge.tfidf-stack/1"


def log_softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def class_logits(decision: np.ndarray, n_labels: int) -> np.ndarray:
    """scikit-learn's decision function (one column for two classes) -> one logit per class."""
    decision = decision.reshape(len(decision), -1)
    if n_labels == 2 and decision.shape[1] == 1:
        return np.column_stack([np.zeros(len(decision)), decision[:, 0]])
    return decision


@dataclass
class TextStack:
    """TF-IDF component + stacker; :meth:`logits` combines them with the model's logits."""

    labels: list[str]
    vectorizer_params: dict[str, Any]
    vocabulary: list[str]
    idf: np.ndarray
    tfidf_coef: np.ndarray  # (classes or 1, n-grams)
    tfidf_intercept: np.ndarray
    stack_coef: np.ndarray  # (labels, 2 x labels): [model log-probs, TF-IDF log-probs] -> class logits
    stack_intercept: np.ndarray
    temperature: float = 1.0  # the model's: its logits are divided by it before the stacker sees them
    info: dict[str, Any] | None = None  # what the report shows (fitted on, weights), saved as is
    _vectorizer: Any = None

    def vectorizer(self) -> Any:
        """The fitted TfidfVectorizer rebuilt from its vocabulary and idf (no refit, no pickle)."""
        if self._vectorizer is None:
            from sklearn.feature_extraction.text import TfidfVectorizer

            params = dict(self.vectorizer_params)
            params["ngram_range"] = tuple(params["ngram_range"])
            vectorizer = TfidfVectorizer(**params)
            vectorizer.vocabulary_ = {term: i for i, term in enumerate(self.vocabulary)}
            vectorizer.idf_ = self.idf
            self._vectorizer = vectorizer
        return self._vectorizer

    def tfidf_log_probs(self, texts: list[str]) -> np.ndarray:
        features = self.vectorizer().transform(texts)
        decision = np.asarray(features @ self.tfidf_coef.T) + self.tfidf_intercept
        return log_softmax(class_logits(decision, len(self.labels)))

    def features(self, model_logits: np.ndarray, texts: list[str]) -> np.ndarray:
        """The stacker's inputs: [model log-probs at the model's temperature, TF-IDF log-probs]."""
        model_part = log_softmax(np.asarray(model_logits, dtype=np.float64) / self.temperature)
        return np.hstack([model_part, self.tfidf_log_probs(texts)])

    def logits(self, model_logits: np.ndarray, texts: list[str]) -> np.ndarray:
        """Class logits of the stack for a batch (rows of ``model_logits`` match ``texts``); their
        softmax is the stack's calibrated probabilities (the stacker was fitted by log-loss)."""
        return self.features(model_logits, texts) @ self.stack_coef.T + self.stack_intercept

    # ---- files ----------------------------------------------------------------------------------
    def save(self, model_dir: Path) -> Path:
        target = Path(model_dir) / STACK_DIR
        target.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "labels": self.labels,
            "vectorizer": self.vectorizer_params,
            "temperature": self.temperature,
            "stack_coef": self.stack_coef.tolist(),
            "stack_intercept": self.stack_intercept.tolist(),
            "info": self.info or {},
        }
        (target / "stack.json").write_text(
            json.dumps(meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        (target / "vocabulary.json").write_text(
            json.dumps(self.vocabulary, ensure_ascii=False), encoding="utf-8"
        )
        np.savez_compressed(
            target / "tfidf.npz", idf=self.idf, coef=self.tfidf_coef, intercept=self.tfidf_intercept
        )
        return target


def load_stack(model_dir: str | Path) -> TextStack | None:
    """The stack saved in ``model_dir`` (None when the model has none)."""
    from aiforge.errors import AiforgeError

    source = Path(model_dir) / STACK_DIR
    if not (source / "stack.json").is_file():
        return None
    meta = json.loads((source / "stack.json").read_text(encoding="utf-8"))
    if meta.get("format") != FORMAT:
        raise AiforgeError(
            "AF-MODEL-003",
            f"{source} holds a stack in format {meta.get('format')!r}; this aiforge reads {FORMAT!r}",
            "retrain the model with this aiforge version, or upgrade aiforge",
        )
    with np.load(source / "tfidf.npz", allow_pickle=False) as arrays:
        idf, coef, intercept = arrays["idf"], arrays["coef"], arrays["intercept"]
    return TextStack(
        labels=list(meta["labels"]),
        vectorizer_params=meta["vectorizer"],
        vocabulary=json.loads((source / "vocabulary.json").read_text(encoding="utf-8")),
        idf=idf,
        tfidf_coef=coef,
        tfidf_intercept=intercept,
        stack_coef=np.asarray(meta["stack_coef"], dtype=np.float64),
        stack_intercept=np.asarray(meta["stack_intercept"], dtype=np.float64),
        temperature=float(meta.get("temperature", 1.0)),
        info=meta.get("info") or {},
    )
