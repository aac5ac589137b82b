"""A run's dataset: its train / validation / test splits read (tables: :mod:`aiforge.train.data`;
image and audio files: :mod:`aiforge.train.media`), checked against each other and hashed."""

from __future__ import annotations

from aiforge.errors import AiforgeError
from aiforge.train.config import DataConfig
from aiforge.train.data import (
    Dataset,
    check_labels,
    file_hash,
    label_vocabulary,
    read_chat_split,
    read_split,
    resolve_data_path,
    stratified_split,
)
from aiforge.train.media import MediaKind, read_media_split


def load_dataset(
    cfg: DataConfig,
    seed: int,
    strict: bool = False,
    sequence: bool = False,
    media: MediaKind | None = None,
    chat: bool = False,
) -> Dataset:
    """Read, check and split the data of a run (``sequence``: token lists with one tag per token;
    ``media``: "image" or "audio", class folders or tables of file paths, see :mod:`aiforge.train.media`;
    ``chat``: conversations whose labels are their last answers, no label vocabulary)."""
    if not cfg.train:
        raise AiforgeError(
            "AF-CONFIG-001",
            "data.train is not set",
            "set data.train to a CSV/TSV/JSONL/Parquet file (or, for images and audio, a class-folder tree)",
        )
    if chat:
        read = lambda name, path: read_chat_split(name, path, cfg, strict)  # noqa: E731
    elif media is None:
        read = lambda name, path: read_split(name, path, cfg, strict, sequence)  # noqa: E731
    else:
        read = lambda name, path: read_media_split(name, path, cfg, strict, media)  # noqa: E731
    if cfg.test_split is not None:
        raise AiforgeError(
            "AF-CONFIG-001",
            "data.test_split holds out whole articles for question answering only",
            "give data.test (a test file) instead",
        )
    train, skipped_train = read("train", cfg.train)
    skipped = {"train": skipped_train}
    from_train = cfg.validation is None
    if from_train:
        if len(train) < 2:
            raise AiforgeError(
                "AF-DATA-003",
                f"'{cfg.train}' has {len(train)} usable row(s), too few to split",
                "add rows or give data.validation",
            )
        unstratified = cfg.multi_label or sequence or chat
        train, validation = stratified_split(train, cfg.validation_split, seed, unstratified)
    else:
        validation, skipped["validation"] = read("validation", cfg.validation)
    if chat:  # answers are free text: no vocabulary to check
        held_out = None
        if cfg.test:
            held_out, skipped["test"] = read("test", cfg.test)
        files = [p for p in (cfg.train, cfg.validation, cfg.test) if p]
        skipped = {k: v for k, v in skipped.items() if v}
        return Dataset(train, validation, held_out, [], skipped, file_hash(files), from_train)
    labels = label_vocabulary(train)
    if len(labels) < 2 and not cfg.multi_label:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{cfg.train}' has a single label ({labels[0]!r}); nothing to learn",
            f"check data.label_column ('{cfg.label_column}')"
            + (", or add a class folder per label" if media else ""),
        )
    check_labels(validation, labels, cfg.validation or cfg.train)
    test = None
    if cfg.test:
        test, skipped["test"] = read("test", cfg.test)
        check_labels(test, labels, cfg.test)
    files = [p for p in (cfg.train, cfg.validation, cfg.test) if p and not resolve_data_path(p).is_dir()]
    salt = ""
    if media is not None:  # the data is the files and their labels, not only a table that lists them
        splits = [s for s in (train, validation, test) if s is not None]
        pairs = sorted({(f, str(y)) for s in splits for f, y in zip(s.inputs, s.labels, strict=True)})
        files += [f for f, _ in pairs]
        salt = "\n".join(y for _, y in pairs)
    return Dataset(
        train,
        validation,
        test,
        labels,
        {k: v for k, v in skipped.items() if v},
        file_hash(files, salt),
        from_train,
    )
