"""Extractive question answering for ``aiforge train``: learn where the answer span starts and ends.

Data: SQuAD v1.1 JSON (KorQuAD's format: ``data[].paragraphs[].qas[]``, the article title kept as
the example's group) or a table (JSONL, CSV, Parquet) with the question in ``data.input_column``,
the answer text in ``data.label_column``, and ``context`` and ``answer_start`` columns (or one
``answers`` column of ``{"text": [...], "answer_start": [...]}``, the Hugging Face datasets shape).
An answer whose ``answer_start`` does not point at its text is searched for in the context (the
nearest occurrence); one that the context does not contain is skipped and counted.

Held-out splits keep whole groups: the questions of one article are all in train, all in
validation or all in test (``data.validation_split`` / ``data.test_split``, shares of the articles),
because questions on a paragraph that training read are easier than questions on an unseen one.

Windows come from :func:`aiforge.tasks.qa.encode_windows`, the very function the inference
pipeline uses, so a model learns on the windows it later answers from. The label of a window is
the token span of the answer, or ``(0, 0)`` (the [CLS] position) when the window does not hold the
whole answer; the loss is the model's start/end cross-entropy. Evaluation runs every window of a
question, picks the best span with the pipeline's :func:`~aiforge.tasks.qa.rank_spans` and scores it
with KorQuAD 1.0's official exact match and character F1. The baseline is the sentence of the
context that shares most of the question's character bigrams: what a retrieval system answers
without a reader, so every report shows what the span model adds.
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.errors import AiforgeError
from aiforge.io import resolve_data_path
from aiforge.models import ModelRef
from aiforge.tasks.qa import (
    QAFeatures,
    QAParams,
    WindowSpec,
    answer_tokens,
    best_over_truths,
    encode_windows,
    exact_match,
    f1_score,
    rank_spans,
)
from aiforge.train.classifier import ClassifierTask
from aiforge.train.config import DataConfig, TrainConfig
from aiforge.train.data import Dataset, Split, file_hash, read_table, skip_or_raise
from aiforge.train.task import Autocast
from aiforge.train.text import model_token_limit

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask

# The inference defaults (stride 128, answers up to 30 tokens): training windows match serving ones.
_DEFAULTS = QAParams()
# max_length: auto -> 384 tokens, the SQuAD recipe; 95 % of KorQuAD paragraphs fit one window with
# the question (median paragraph 272 XLM-R tokens, 95th percentile 535).
AUTO_MAX_LENGTH = 384
# Training contexts are never cut: a window past the inference cap still holds answers to learn.
TRAIN_MAX_WINDOWS = 256
# Training reads one window holding the answer per question and this share of the windows without it
# (labelled [CLS]): at 192 tokens a KorQuAD paragraph makes ~3 windows, so all of them would triple the
# cost of a step budget that is the limit on 2 CPU cores, for windows that teach only "not here".
TRAIN_NEGATIVE_SHARE = 0.1
CONTEXT_COLUMN, START_COLUMN, ANSWERS_COLUMN = "context", "answer_start", "answers"


@dataclass(frozen=True)
class QAExample:
    """One question on one context; ``group`` (the article) keeps held-out splits whole."""

    question: str
    context: str
    group: str
    id: str = ""


@dataclass(frozen=True)
class GoldAnswer:
    text: str
    start: int  # character offset in the context: context[start:start + len(text)] == text


# ---- reading ----------------------------------------------------------------------------------------
def read_qa_split(name: str, path: str, cfg: DataConfig, strict: bool) -> tuple[Split, dict[str, int]]:
    """SQuAD JSON or a table -> a Split of QAExample inputs and list[GoldAnswer] labels."""
    records = _squad_records(path) if Path(path).suffix.lower() == ".json" else None
    if records is None:
        records = _table_records(path, cfg)
    records = records[: cfg.max_rows]
    inputs: list[QAExample] = []
    labels: list[list[GoldAnswer]] = []
    skipped: Counter[str] = Counter()
    for row, (example, answers) in enumerate(records, 1):
        problem = _record_problem(example, answers)
        located = [a for a in (_locate(example.context, text, start) for text, start in answers) if a]
        if problem is None and not located:
            problem = "answer not in context: the answer text does not occur in its context"
        if problem:
            skip_or_raise(strict, f"'{path}' question {row}", problem, skipped, "question")
            continue
        inputs.append(example)
        labels.append(located)
    if not inputs:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{path}': no usable question (each needs a question, a context and an answer found in it)",
            "use SQuAD JSON (data/paragraphs/qas) or JSONL with question, context, answer, answer_start",
        )
    return Split(name, inputs, labels), dict(skipped)


def _squad_records(path: str) -> list[tuple[QAExample, list[tuple[str, int]]]] | None:
    """The questions of a SQuAD-format file; None when the JSON is not SQuAD-shaped (a plain table)."""
    resolved = resolve_data_path(path)
    if not resolved.exists():
        read_table(path)  # the shared "does not exist" error
    try:
        data = json.loads(resolved.read_text(encoding="utf-8", errors="replace"))
    except json.JSONDecodeError as exc:
        raise AiforgeError(
            "AF-INPUT-002", f"'{path}' is not valid JSON: {exc}", "use SQuAD JSON or JSONL"
        ) from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        return None
    records = []
    for number, article in enumerate(data["data"]):
        group = str(article.get("title") or f"article {number}")
        for paragraph in article.get("paragraphs", []):
            context = str(paragraph.get("context", ""))
            for qa in paragraph.get("qas", []):
                answers = [
                    (str(a.get("text", "")), int(a.get("answer_start", -1))) for a in qa.get("answers", [])
                ]
                records.append(
                    (QAExample(str(qa.get("question", "")), context, group, str(qa.get("id", ""))), answers)
                )
    return records


def _table_records(path: str, cfg: DataConfig) -> list[tuple[QAExample, list[tuple[str, int]]]]:
    frame = read_table(path, cfg.max_rows)
    found = [str(c) for c in frame.columns]
    answer_columns = [ANSWERS_COLUMN] if ANSWERS_COLUMN in found else [cfg.label_column, START_COLUMN]
    missing = [c for c in (cfg.input_column, CONTEXT_COLUMN, *answer_columns) if c not in found]
    if missing:
        raise AiforgeError(
            "AF-DATA-001",
            f"column {', '.join(repr(m) for m in missing)} not found in '{path}'; "
            f"columns found: {', '.join(found)}",
            "question answering reads the question (data.input_column), context, the answer text "
            "(data.label_column) and answer_start; map yours with --set data.input_column=NAME "
            "--set data.label_column=NAME, or use SQuAD JSON",
        )
    records = []
    for row in frame.to_dict("records"):
        context = str(row[CONTEXT_COLUMN] or "")
        if ANSWERS_COLUMN in found:
            cell = row[ANSWERS_COLUMN] if isinstance(row[ANSWERS_COLUMN], dict) else {}
            answers = [
                (str(t), int(s))
                for t, s in zip(cell.get("text", []), cell.get("answer_start", []), strict=False)
            ]
        else:
            answers = [(str(row[cfg.label_column] or ""), _as_int(row[START_COLUMN]))]
        records.append((QAExample(str(row[cfg.input_column] or ""), context, context), answers))
    return records


def _as_int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _record_problem(example: QAExample, answers: list[tuple[str, int]]) -> str | None:
    if not example.question.strip():
        return "empty question"
    if not example.context.strip():
        return "empty context"
    if not any(text.strip() for text, _ in answers):
        return "empty answer"
    return None


def _locate(context: str, text: str, start: int) -> GoldAnswer | None:
    """The answer at ``start``, or the occurrence of its text nearest to ``start``; None when absent."""
    text = text.strip()
    if not text:
        return None
    if start >= 0 and context[start : start + len(text)] == text:
        return GoldAnswer(text, start)
    found = [m.start() for m in re.finditer(re.escape(text), context)]
    if not found:
        return None
    return GoldAnswer(text, min(found, key=lambda at: abs(at - start)))


def split_by_group(split: Split, share: float, seed: int, name: str) -> tuple[Split, Split]:
    """Hold out ``share`` of the groups (articles), whole: (the rest, the held-out split). Seeded."""
    groups = sorted({example.group for example in split.inputs})
    if len(groups) < 2:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{name}' needs questions from at least 2 articles (contexts) to hold whole ones out; "
            f"found {len(groups)}",
            "add articles, or give data.validation / data.test files",
        )
    random.Random(seed).shuffle(groups)
    held = set(groups[: max(1, min(len(groups) - 1, round(share * len(groups))))])
    keep = [i for i, example in enumerate(split.inputs) if example.group not in held]
    out = [i for i, example in enumerate(split.inputs) if example.group in held]
    pick = lambda label, idx: Split(label, [split.inputs[i] for i in idx], [split.labels[i] for i in idx])  # noqa: E731
    return pick(split.name, keep), pick(name, out)


def load_qa_dataset(cfg: DataConfig, seed: int, strict: bool = False) -> Dataset:
    """Train / validation / test of a QA run; held-out splits cut from train keep articles whole
    (test first, then validation, each with its own seed-derived order)."""
    if not cfg.train:
        raise AiforgeError(
            "AF-CONFIG-001", "data.train is not set", "set data.train to SQuAD JSON or a JSONL of questions"
        )
    train, skipped_train = read_qa_split("train", cfg.train, cfg, strict)
    skipped = {"train": skipped_train}
    test = None
    if cfg.test:
        test, skipped["test"] = read_qa_split("test", cfg.test, cfg, strict)
    elif cfg.test_split:
        train, test = split_by_group(train, cfg.test_split, seed + 1, "test")
    if cfg.validation:
        validation, skipped["validation"] = read_qa_split("validation", cfg.validation, cfg, strict)
    else:
        train, validation = split_by_group(train, cfg.validation_split, seed, "validation")
    files = [p for p in (cfg.train, cfg.validation, cfg.test) if p]
    return Dataset(
        train,
        validation,
        test,
        [],
        {k: v for k, v in skipped.items() if v},
        file_hash(files),
        cfg.validation is None,
    )


# ---- encoding ---------------------------------------------------------------------------------------
@dataclass
class QAEncoded:
    """A split as windows (the items the loop batches), with what maps them back to questions."""

    examples: list[QAExample]
    answers: list[list[str]]  # gold answer texts per question
    features: list[QAFeatures]  # per question: all its windows
    window_example: list[int]  # item -> its question
    window_index: list[int]  # item -> its window in the question's features
    labels: list[tuple[int, int]]  # item -> (start token, end token); (0, 0): not in this window
    truncated: int  # questions whose question or context was cut

    def lengths(self) -> list[int]:
        return [
            int(self.features[e].inputs["attention_mask"][w].sum())
            for e, w in zip(self.window_example, self.window_index, strict=True)
        ]

    def __len__(self) -> int:
        return len(self.window_example)


class QuestionAnsweringTask(ClassifierTask[QAEncoded]):
    """Start/end span head on an encoder; EM / character F1; the sentence-retrieval baseline."""

    name = "question-answering"
    auto_class = "AutoModelForQuestionAnswering"
    backbone_hint = "use an encoder backbone (BERT, RoBERTa, ELECTRA, e5...) with a fast tokenizer"
    default_metric = "f1"
    length_unit: str | None = "tokens"
    max_length_cuts = False  # a long context becomes overlapping windows: max_length cuts nothing

    def __init__(self, config: TrainConfig, dataset: Dataset, ref: ModelRef) -> None:
        super().__init__(config, dataset, ref)
        self.tokenizer: Any = None
        self.model_config: Any = None
        self.input_names: list[str] = []

    def load_processor(self) -> None:
        import transformers

        from aiforge.train.text import _has_hangul, hangul_fallback

        self.tokenizer = transformers.AutoTokenizer.from_pretrained(self.location)
        if not getattr(self.tokenizer, "is_fast", False):
            raise AiforgeError(
                "AF-MODEL-003",
                "question answering needs a fast tokenizer (character offsets); "
                f"'{self.config.model}' has a slow one",
                "save a tokenizer.json beside the backbone, or pick another backbone",
            )
        questions = [example.question for example in self.dataset.train.inputs]
        if self.config.training.hangul_fallback and _has_hangul(questions):
            self.tokenizer, _ = hangul_fallback(self.tokenizer)
        uses_types = "token_type_ids" in self.tokenizer.model_input_names
        self.input_names = ["input_ids", "attention_mask", *(["token_type_ids"] if uses_types else [])]

    def load_model(self) -> torch.nn.Module:
        import transformers

        try:
            model: torch.nn.Module = transformers.AutoModelForQuestionAnswering.from_pretrained(self.location)
        except (ValueError, KeyError, OSError) as exc:
            raise AiforgeError(
                "AF-MODEL-003",
                f"'{self.config.model}' cannot be loaded for {self.name}: {exc}",
                self.backbone_hint,
            ) from None
        self.model_config = getattr(model, "config", None)
        return model

    def input_lengths(self, split: Split) -> list[int]:
        """Untruncated (question, context) token counts, special tokens included."""
        questions = [e.question for e in split.inputs]
        contexts = [e.context for e in split.inputs]
        return [len(ids) for ids in self.tokenizer(questions, contexts, truncation=False)["input_ids"]]

    def resolve_max_length(self, lengths: list[int]) -> int:
        """Tokens per window: ``auto`` is 384 (the SQuAD recipe), within the model's limit."""
        limit = model_token_limit(self.tokenizer, self.model_config)
        wanted = self.config.training.max_length
        self.max_length = max(64, min(AUTO_MAX_LENGTH if wanted == "auto" else int(wanted), limit))
        return self.max_length

    def window_spec(self, max_windows: int = TRAIN_MAX_WINDOWS) -> WindowSpec:
        return WindowSpec(self.max_length, _DEFAULTS.stride, _DEFAULTS.max_question_len, max_windows)

    def serving_spec(self) -> WindowSpec:
        """The windows ``aiforge serve`` / ``rag ask`` answer from (384 tokens, stride 128): held-out
        splits are scored on them, whatever window training used, so the report is what users get."""
        limit = model_token_limit(self.tokenizer, self.model_config)
        return WindowSpec(
            min(_DEFAULTS.max_length, limit),
            _DEFAULTS.stride,
            _DEFAULTS.max_question_len,
            _DEFAULTS.max_windows,
        )

    def encode(self, split: Split) -> QAEncoded:
        """Every window of a held-out question; for training, one window holding the answer per question
        plus a seeded ``TRAIN_NEGATIVE_SHARE`` of the windows without it (see the constant)."""
        training = split.name == "train"
        spec = self.window_spec() if training else self.serving_spec()
        pick = random.Random(self.config.training.seed)
        features, window_example, window_index, labels = [], [], [], []
        truncated = 0
        for number, (example, answers) in enumerate(zip(split.inputs, split.labels, strict=True)):
            feature = encode_windows(
                self.tokenizer, example.question, example.context, spec, self.input_names
            )
            features.append(feature)
            truncated += feature.truncated
            first = answers[0]
            spans = [
                answer_tokens(feature, window, first.start, first.start + len(first.text))
                for window in range(feature.windows)
            ]
            kept = list(range(feature.windows))
            if training:
                holding = [w for w, span in enumerate(spans) if span != (0, 0)]
                chosen = {pick.choice(holding)} if holding else set()
                kept = [
                    w
                    for w in range(feature.windows)
                    if w in chosen or (w not in holding and pick.random() < TRAIN_NEGATIVE_SHARE)
                ]
            for window in kept:
                window_example.append(number)
                window_index.append(window)
                labels.append(spans[window])
        return QAEncoded(
            list(split.inputs),
            [[a.text for a in answers] for answers in split.labels],
            features,
            window_example,
            window_index,
            labels,
            truncated,
        )

    def collate(self, encoded: QAEncoded, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        """Windows padded to the longest of this batch, with their start/end token labels."""
        rows = [(encoded.features[encoded.window_example[i]], encoded.window_index[i]) for i in indices]
        widths = [int(f.inputs["attention_mask"][w].sum()) for f, w in rows]
        longest = max(widths)
        batch: dict[str, torch.Tensor] = {}
        for name in self.input_names:
            pad = (self.tokenizer.pad_token_id or 0) if name == "input_ids" else 0
            tensor = torch.full((len(rows), longest), pad, dtype=torch.long)
            for row, ((feature, window), width) in enumerate(zip(rows, widths, strict=True)):
                tensor[row, :width] = torch.from_numpy(feature.inputs[name][window, :width])
            batch[name] = tensor
        batch["start_positions"] = torch.tensor([encoded.labels[i][0] for i in indices], dtype=torch.long)
        batch["end_positions"] = torch.tensor([encoded.labels[i][1] for i in indices], dtype=torch.long)
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, encoded: QAEncoded, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]:
        """Loss over windows; exact match and F1 of each question's best span over all its windows."""
        starts: list[np.ndarray] = [np.empty(0)] * len(encoded)
        ends: list[np.ndarray] = [np.empty(0)] * len(encoded)
        total_loss, lengths = 0.0, encoded.lengths()
        for chunk, out in self.eval_batches(model, encoded, device, batch_size, autocast):
            start_logits, end_logits = (
                out.start_logits.float().cpu().numpy(),
                out.end_logits.float().cpu().numpy(),
            )
            total_loss += float(out.loss) * len(chunk)
            for row, item in enumerate(chunk):
                starts[item], ends[item] = (
                    start_logits[row, : lengths[item]],
                    end_logits[row, : lengths[item]],
                )
        by_example: dict[int, list[int]] = {}
        for item, example in enumerate(encoded.window_example):
            by_example.setdefault(example, []).append(item)
        predictions = []
        for number, feature in enumerate(encoded.features):
            items = by_example.get(number, [])
            width = feature.context_mask.shape[1]
            start_grid = np.full((feature.windows, width), -1e4, dtype=np.float32)
            end_grid = np.full((feature.windows, width), -1e4, dtype=np.float32)
            for item in items:
                window, length = encoded.window_index[item], len(starts[item])
                start_grid[window, :length], end_grid[window, :length] = starts[item], ends[item]
            context = encoded.examples[number].context
            spans = rank_spans(
                start_grid,
                end_grid,
                feature.offsets,
                feature.context_mask,
                _DEFAULTS.max_answer_len,
                context=context if _DEFAULTS.trim_particles else None,
            )
            predictions.append(context[spans[0].start : spans[0].end] if spans else "")
        metrics = span_metrics(encoded.answers, predictions)
        metrics["loss"] = total_loss / max(1, len(encoded))
        return metrics

    def fit_baseline(self, prep: Prepared[QAEncoded]) -> dict[str, Any] | None:
        """The best-matching sentence of the context, scored on the same questions as the model."""
        from aiforge.train.baseline import scored_splits

        started = time.perf_counter()
        out: dict[str, Any] = {
            "name": "sentence retrieval (the context sentence sharing most question bigrams)"
        }
        for name, split in scored_splits(prep.dataset).items():
            predictions = [best_sentence(e.question, e.context) for e in split.inputs]
            out[name] = span_metrics([[a.text for a in answers] for answers in split.labels], predictions)
        out["fit_seconds"] = time.perf_counter() - started
        return out

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)  # type: ignore[operator]
        self.tokenizer.save_pretrained(directory)


# ---- scores and the baseline ------------------------------------------------------------------------
def span_metrics(truths: list[list[str]], predictions: list[str]) -> dict[str, Any]:
    """Exact match and character F1 (KorQuAD's), each the best over a question's gold answers, plus the
    per-question ``rows`` the report's intervals and paired test read."""
    em = [best_over_truths(exact_match, p, t) for p, t in zip(predictions, truths, strict=True)]
    f1 = [best_over_truths(f1_score, p, t) for p, t in zip(predictions, truths, strict=True)]
    n = max(1, len(predictions))
    return {
        "exact_match": sum(em) / n,
        "f1": sum(f1) / n,
        "rows": {"kind": "spans", "true": truths, "pred": predictions},
    }


_SENTENCE_END = re.compile(r"(?<=[.!?。])\s+|\n+")


def split_sentences(text: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(text) if s.strip()]


def _bigrams(text: str) -> set[str]:
    squeezed = "".join(text.split())
    return {squeezed[i : i + 2] for i in range(len(squeezed) - 1)}


def best_sentence(question: str, context: str) -> str:
    """The sentence of ``context`` that contains most of the question's character bigrams (first on ties)."""
    wanted = _bigrams(question)
    sentences = split_sentences(context) or [context]
    return max(sentences, key=lambda s: (len(wanted & _bigrams(s)), -sentences.index(s)))


if TYPE_CHECKING:

    def _implements_the_protocol(task: QuestionAnsweringTask) -> TrainingTask[QAEncoded]:
        return task  # mypy checks the adapter against TrainingTask here
