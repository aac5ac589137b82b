"""Reading training data: tables in, validated (texts, labels) splits out.

Every check that can fail on real data runs here, before any model is loaded: missing columns
(the error lists the columns found), empty or undecodable rows (counted and skipped, or an error
with ``strict``), labels in validation/test that training never saw, and a stratified, seeded
split when no validation file is given.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.io import resolve_data_path
from aiforge.train.config import DataConfig

READERS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".parquet": "parquet",
    ".pq": "parquet",
}
REPLACEMENT_CHAR = "\ufffd"  # what a byte that is not UTF-8 decodes to


@dataclass
class Split:
    """One split: inputs (texts, token lists...) and labels (a name, or a list of names for multi-label)."""

    name: str
    inputs: list[Any]
    labels: list[Any]

    def __len__(self) -> int:
        return len(self.inputs)


@dataclass
class Dataset:
    """The splits of one run, the label vocabulary and what was skipped while reading."""

    train: Split
    validation: Split
    test: Split | None
    labels: list[str]
    skipped: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> reason -> rows
    data_hash: str = ""
    validation_from_train: bool = False

    def label_counts(self, split: Split | None = None) -> dict[str, int]:
        split = split or self.train
        if not self.labels:  # no label vocabulary: chat answers are free text, not classes
            return {}
        # class labels only: question answering's gold answers, a corpus's text are not classes
        flat = [lab for labels in split.labels for lab in _as_list(labels) if isinstance(lab, str)]
        return dict(sorted(Counter(flat).items()))


def _as_list(labels: Any) -> list[Any]:
    return list(labels) if isinstance(labels, list | tuple) else [labels]


# ---- reading ---------------------------------------------------------------------------------------
def read_table(path: str | Path, max_rows: int | None = None):
    """A CSV/TSV/JSONL/Parquet file -> a pandas DataFrame; bytes that are not UTF-8 become U+FFFD."""
    import pandas as pd

    path = resolve_data_path(path)
    if not path.exists():
        raise AiforgeError(
            "AF-INPUT-001",
            f"data file '{path}' does not exist",
            "check data.train / data.validation / data.test in the config",
        )
    kind = READERS.get(path.suffix.lower())
    if kind is None:
        raise AiforgeError(
            "AF-INPUT-005",
            f"cannot read '{path}': unknown extension '{path.suffix}'",
            f"use one of {', '.join(sorted(READERS))}",
        )
    try:
        if kind in ("csv", "tsv"):
            return pd.read_csv(
                path,
                sep="\t" if kind == "tsv" else ",",
                nrows=max_rows,
                dtype=str,
                keep_default_na=False,
                encoding="utf-8",
                encoding_errors="replace",
            )
        if kind == "jsonl":
            return pd.read_json(path, lines=True, nrows=max_rows, encoding="utf-8", encoding_errors="replace")
        if kind == "json":
            frame = pd.read_json(path, encoding="utf-8", encoding_errors="replace")
        else:
            frame = pd.read_parquet(path)
        return frame if max_rows is None else frame.head(max_rows)
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise AiforgeError(
            "AF-INPUT-001",
            f"could not read '{path}': {type(exc).__name__}: {exc}",
            "check that the file matches its extension (one JSON object per line for .jsonl)",
        ) from None


def file_hash(paths: Sequence[str | Path], salt: str = "") -> str:
    """SHA-256 over the bytes of the data files (and ``salt``, e.g. the labels of image files): the
    run's data identity, logged with every model."""
    digest = hashlib.sha256(salt.encode())
    for path in paths:
        path = resolve_data_path(path)
        digest.update(path.name.encode())
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _check_columns(frame, path: str, columns: list[str]) -> None:
    found = [str(c) for c in frame.columns]
    missing = [c for c in columns if c not in found]
    if missing:
        import difflib

        close = {m: difflib.get_close_matches(m, found, n=1) for m in missing}
        hint = "; ".join(f"'{m}' -> '{c[0]}'?" for m, c in close.items() if c)
        raise AiforgeError(
            "AF-DATA-001",
            f"column {', '.join(repr(m) for m in missing)} not found in '{path}'; "
            f"columns found: {', '.join(found)}",
            "map your columns: --set data.input_column=NAME --set data.label_column=NAME"
            + (f" ({hint})" if hint else ""),
        )


def _is_blank(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float) and value != value:  # NaN
        return True
    if isinstance(value, list | tuple):
        return len(value) == 0
    return isinstance(value, str) and not value.strip()


def _parse_labels(value: Any, cfg: DataConfig, sequence: bool = False) -> Any:
    if sequence:  # token classification: one tag per token
        return [str(v) for v in value]
    if not cfg.multi_label:
        return (
            value
            if isinstance(value, str)
            else json.dumps(value)
            if isinstance(value, list | dict)
            else str(value)
        )
    if isinstance(value, list | tuple):
        return sorted({str(v) for v in value})
    return sorted({part.strip() for part in str(value).split(cfg.label_separator) if part.strip()})


def read_split(
    name: str, path: str, cfg: DataConfig, strict: bool, sequence: bool = False
) -> tuple[Split, dict[str, int]]:
    """Read one file into a Split; empty and undecodable rows are counted and skipped (or raise).

    ``sequence``: token classification, where each row holds a token list and a tag list."""
    frame = read_table(path, cfg.max_rows)
    if len(frame) == 0:
        raise AiforgeError(
            "AF-DATA-003", f"'{path}' has no rows", f"point data.{name} at a file with examples"
        )
    _check_columns(frame, path, [cfg.input_column, cfg.label_column])
    inputs, labels = [], []
    skipped: Counter[str] = Counter()
    for row, (value, label) in enumerate(zip(frame[cfg.input_column], frame[cfg.label_column], strict=True)):
        value, label = _plain(value), _plain(label)
        reason = _sequence_problem(value, label) if sequence else _row_problem(value, label)
        if reason:
            skip_or_raise(strict, f"'{path}' row {row + 1}", reason, skipped, "row")
            continue
        inputs.append(list(value) if isinstance(value, list | tuple) else str(value))
        labels.append(_parse_labels(label, cfg, sequence))
    if not inputs:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{path}': all {len(frame)} rows are empty or undecodable",
            f"check data.input_column ('{cfg.input_column}') and the file's encoding (UTF-8)",
        )
    return Split(name, inputs, labels), dict(skipped)


CHAT_ROLES = ("system", "user", "assistant")


def read_chat_split(name: str, path: str, cfg: DataConfig, strict: bool) -> tuple[Split, dict[str, int]]:
    """Read conversations for causal LM fine-tuning: ``inputs`` are message lists, ``labels`` the last
    assistant answer (what EM / F1 compare a generated answer with).

    The input column holds either conversations (``[{"role": ..., "content": ...}, ...]``, JSONL
    or Parquet) or prompts; prompts pair with the label column's completions.
    """
    frame = read_table(path, cfg.max_rows)
    if len(frame) == 0:
        raise AiforgeError(
            "AF-DATA-003", f"'{path}' has no rows", f"point data.{name} at a file with examples"
        )
    _check_columns(frame, path, [cfg.input_column])
    cells = [_plain(v) for v in frame[cfg.input_column]]
    conversational = any(isinstance(v, list | tuple) for v in cells)
    if conversational:
        completions: list[Any] = [None] * len(cells)
    else:
        _check_columns(frame, path, [cfg.input_column, cfg.label_column])
        completions = [_plain(v) for v in frame[cfg.label_column]]
    inputs, labels = [], []
    skipped: Counter[str] = Counter()
    for row, (value, completion) in enumerate(zip(cells, completions, strict=True)):
        if conversational:
            messages, reason = _conversation(value)
        elif _is_blank(value) or _is_blank(completion):
            messages, reason = [], "empty prompt or completion"
        else:
            messages = [
                {"role": "user", "content": str(value)},
                {"role": "assistant", "content": str(completion)},
            ]
            reason = _conversation(messages)[1]
        if reason:
            skip_or_raise(strict, f"'{path}' row {row + 1}", reason, skipped, "row")
            continue
        inputs.append(messages)
        labels.append(next(m["content"] for m in reversed(messages) if m["role"] == "assistant"))
    if not inputs:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{path}': none of its {len(frame)} rows is a usable conversation",
            f"give data.input_column ('{cfg.input_column}') a list of {{role, content}} messages with an "
            f"assistant answer, or prompts beside completions in data.label_column ('{cfg.label_column}')",
        )
    return Split(name, inputs, labels), dict(skipped)


def _conversation(value: Any) -> tuple[list[dict[str, str]], str | None]:
    """(messages as plain dicts, the reason the row is unusable or None)."""
    if not isinstance(value, list | tuple) or not value:
        return [], "messages must be a non-empty list"
    messages = []
    for message in value:
        if not isinstance(message, dict) or message.get("role") not in CHAT_ROLES:
            return [], f"each message needs a role in {', '.join(CHAT_ROLES)}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return [], "empty message content"
        if REPLACEMENT_CHAR in content:
            return [], "undecodable bytes (not UTF-8)"
        messages.append({"role": message["role"], "content": content})
    if messages[-1]["role"] != "assistant":
        return [], "the conversation must end with an assistant answer (what is learnt)"
    return messages, None


def skip_or_raise(strict: bool, where: str, reason: str, skipped: Counter[str], what: str) -> None:
    """Count a bad row or file under ``reason`` (up to its first colon), or fail with ``--strict``."""
    if strict:
        raise AiforgeError(
            "AF-DATA-003",
            f"{where}: {reason}",
            f"fix or remove the {what}, or run without --strict to skip such {what}s",
        )
    skipped[reason.split(":")[0]] += 1


def _plain(value: Any) -> Any:
    """Parquet gives numpy arrays for list cells; the rest of the code expects Python lists."""
    return value.tolist() if hasattr(value, "tolist") and not isinstance(value, str | float | int) else value


def _sequence_problem(tokens: Any, tags: Any) -> str | None:
    if not isinstance(tokens, list | tuple) or not isinstance(tags, list | tuple):
        return "tokens and tags must be lists (JSONL or Parquet)"
    if not tokens:
        return "empty input"
    if len(tokens) != len(tags):
        return "token and tag counts differ"
    if any(REPLACEMENT_CHAR in str(t) for t in tokens):
        return "undecodable bytes (not UTF-8)"
    return None


def _row_problem(text: Any, label: Any) -> str | None:
    if _is_blank(text):
        return "empty input"
    if _is_blank(label):
        return "empty label"
    if isinstance(text, str) and REPLACEMENT_CHAR in text:
        return "undecodable bytes (not UTF-8)"
    return None


# ---- splitting and label checks ------------------------------------------------------------------------
def stratified_split(split: Split, share: float, seed: int, multi_label: bool) -> tuple[Split, Split]:
    """Hold out ``share`` of the rows, keeping label proportions (single-label), same rows for a seed."""
    from sklearn.model_selection import train_test_split

    indices = list(range(len(split)))
    counts = Counter(split.labels) if not multi_label else Counter()
    stratify = split.labels if counts and min(counts.values()) >= 2 else None
    n_holdout = max(1, round(share * len(split)))
    if stratify is not None and n_holdout < len(counts):
        stratify = None  # too few rows to put every class in the holdout
    train_idx, val_idx = train_test_split(indices, test_size=n_holdout, random_state=seed, stratify=stratify)
    pick = lambda name, idx: Split(name, [split.inputs[i] for i in idx], [split.labels[i] for i in idx])  # noqa: E731
    return pick("train", sorted(train_idx)), pick("validation", sorted(val_idx))


def label_vocabulary(train: Split) -> list[str]:
    return sorted({str(lab) for labels in train.labels for lab in _as_list(labels)}, key=_natural_key)


def _natural_key(label: str) -> tuple[int, Any]:
    """Numeric labels sort as numbers ('2' < '10'), others alphabetically."""
    try:
        return (0, float(label))
    except ValueError:
        return (1, label)


def check_labels(split: Split, known: list[str], path: str) -> None:
    """Labels in validation/test that training never saw cannot be learned: fail before training."""
    known_set = set(known)
    unseen = Counter(lab for labels in split.labels for lab in _as_list(labels) if str(lab) not in known_set)
    if unseen:
        listed = ", ".join(f"'{lab}' ({n} rows)" for lab, n in unseen.most_common(10))
        raise AiforgeError(
            "AF-DATA-002",
            f"{split.name} data '{path}' has labels that the training data never shows: {listed}; "
            f"training labels: {', '.join(known[:20])}",
            "add examples of these labels to the training file, or remove those rows",
        )
