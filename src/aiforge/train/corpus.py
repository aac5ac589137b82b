"""Reading a text corpus for language modelling (``task: text-generation``).

``data.train`` is a ``.txt`` file, a folder of them (read recursively, in sorted order, so the run
does not depend on the file system's listing order), or a table (CSV, TSV, JSONL, Parquet) whose
``data.input_column`` holds one document per row. Each split is a list of documents: the lines of
the text files, or the table's rows. Without ``data.validation``, the last ``validation_split``
share of the documents is held out (a contiguous tail, as nanoGPT does, so no document's text leaks
into both sides); no labels.
"""

from __future__ import annotations

from pathlib import Path

from aiforge.errors import AiforgeError
from aiforge.io import resolve_data_path
from aiforge.train.config import DataConfig
from aiforge.train.data import READERS, Dataset, Split, file_hash, read_table

TEXT_SUFFIXES = (".txt", ".text", ".md")


def corpus_files(path: str) -> list[Path]:
    root = resolve_data_path(path)
    if root.is_dir():
        files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
        if not files:
            raise AiforgeError(
                "AF-DATA-003",
                f"folder '{root}' holds no text files ({', '.join(TEXT_SUFFIXES)})",
                "point data.train at a .txt file or a folder of them",
            )
        return files
    if not root.exists():
        raise AiforgeError(
            "AF-INPUT-001", f"data file '{root}' does not exist", "check data.train / data.validation"
        )
    return [root]


def read_documents(path: str, cfg: DataConfig) -> list[str]:
    """The documents of one split: the non-empty lines of text files, or one table cell per row."""
    files = corpus_files(path)
    if len(files) == 1 and files[0].suffix.lower() in READERS:
        frame = read_table(files[0], cfg.max_rows)
        if cfg.input_column not in frame.columns:
            raise AiforgeError(
                "AF-DATA-001",
                f"'{files[0]}' has no column '{cfg.input_column}' "
                f"(columns: {', '.join(map(str, frame.columns))})",
                "set data.input_column to the column holding the text",
            )
        documents = [str(v) for v in frame[cfg.input_column].tolist() if isinstance(v, str) and v.strip()]
    else:
        documents = [
            line
            for file in files
            for line in file.read_text(encoding="utf-8", errors="replace").splitlines()
            if line.strip()
        ]
        if cfg.max_rows:
            documents = documents[: cfg.max_rows]
    return documents


def load_corpus(cfg: DataConfig) -> Dataset:
    if not cfg.train:
        raise AiforgeError(
            "AF-CONFIG-001", "data.train is not set", "set data.train to a .txt file or a folder of them"
        )
    train = read_documents(cfg.train, cfg)
    if cfg.validation:
        validation = read_documents(cfg.validation, cfg)
    else:
        if len(train) < 2:
            raise AiforgeError(
                "AF-DATA-003",
                f"'{cfg.train}' has {len(train)} line(s), too few to split",
                "add text or give data.validation",
            )
        cut = len(train) - max(1, round(len(train) * cfg.validation_split))
        train, validation = train[:cut], train[cut:]
    test = read_documents(cfg.test, cfg) if cfg.test else None
    files = [f for p in (cfg.train, cfg.validation, cfg.test) if p for f in corpus_files(p)]
    return Dataset(
        Split("train", train, []),
        Split("validation", validation, []),
        Split("test", test, []) if test is not None else None,
        [],
        {},
        file_hash(files),
        cfg.validation is None,
    )
