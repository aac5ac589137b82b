"""Training data of images and audio: folder-per-class trees and tables of file paths.

Two layouts, for ``data.train`` / ``data.validation`` / ``data.test`` alike:

* a folder per class: ``data.train: photos/train/`` holding ``photos/train/cat/1.jpg``,
  ``photos/train/dog/7.png``...; the label is the subfolder's name;
* a CSV/TSV/JSONL/Parquet table whose ``data.input_column`` holds file paths (relative to the table
  or absolute) and ``data.label_column`` the label.

Every file is decoded once while reading, so a missing or undecodable file is counted and skipped
(or an error with ``--strict``) before any model loads, like an empty text row. A split's inputs are
absolute file paths; the tasks decode them again as batches need them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.media import MediaKind, load_audio, load_image
from aiforge.train.config import DataConfig
from aiforge.train.data import Split, read_split, resolve_data_path, skip_or_raise

SUFFIXES: dict[str, tuple[str, ...]] = {
    "image": (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"),
    "audio": (".wav", ".flac", ".mp3", ".ogg", ".opus", ".m4a", ".aac", ".webm"),
}


@dataclass
class MediaEncoded:
    """A split ready for batching: per item a file path (images) or decoded samples (audio), a label
    id and a length (1 per image; samples per clip). ``augment``: the training split, whose batches
    go through the random training transform."""

    items: list[Any]
    labels: list[int]
    sizes: list[int]
    augment: bool = False
    truncated: int = 0

    def lengths(self) -> list[int]:
        return self.sizes

    def __len__(self) -> int:
        return len(self.items)


def _decoder(kind: MediaKind) -> Callable[[str], Any]:
    if kind == "image":
        return lambda path: load_image(Path(path))
    return load_audio


def read_media_split(
    name: str, path: str, cfg: DataConfig, strict: bool, kind: MediaKind
) -> tuple[Split, dict[str, int]]:
    """Read a class-folder tree or a table of paths; drop (count) files that do not decode."""
    root = resolve_data_path(path)
    if root.is_dir():
        split, skipped = read_class_folders(name, root, kind)
    elif str(path).endswith("/") or not root.suffix:
        raise AiforgeError(
            "AF-INPUT-001",
            f"data folder '{root}' does not exist",
            f"point data.{name} at a folder with one subfolder of {kind} files per label",
        )
    else:
        split, skipped = read_split(name, path, cfg, strict)
        split.inputs = [str((root.parent / str(p)).resolve()) for p in split.inputs]
    decode = _decoder(kind)
    inputs, labels, problems = [], [], Counter(skipped)
    for file, label in zip(split.inputs, split.labels, strict=True):
        reason = _file_problem(file, decode, kind)
        if reason is None:
            inputs.append(file)
            labels.append(label)
            continue
        skip_or_raise(strict, f"{name} data: '{file}'", reason, problems, "file")
    if not inputs:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{root}': none of the {len(split)} {kind} files could be read",
            f"check data.{name} and that the files open in a viewer or player",
        )
    return Split(name, inputs, labels), dict(problems)


def read_class_folders(name: str, root: Path, kind: MediaKind) -> tuple[Split, dict[str, int]]:
    """``root/LABEL/FILE`` -> (file paths, labels); an empty class folder is an error (a typo or a
    failed copy, and a class with no examples cannot be learned)."""
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not folders:
        raise AiforgeError(
            "AF-DATA-003",
            f"'{root}' has no class folders",
            f"put each label's {kind} files in a subfolder named after it, e.g. {root}/cat/001"
            f"{SUFFIXES[kind][0]}; or give a table (CSV/JSONL) with a path and a label column",
        )
    inputs, labels, skipped = [], [], Counter[str]()
    stray = [p for p in root.iterdir() if p.is_file() and not p.name.startswith(".")]
    if stray:
        skipped["file outside the class folders"] = len(stray)
    inside = root.resolve()
    for folder in folders:
        found = sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith("."))
        # a link out of the dataset folder is never followed (as in `rag ingest`): a copied dataset
        # must not make a run read, and a registered model carry, files from elsewhere on the disk
        files = [p for p in found if p.resolve().is_relative_to(inside)]
        if len(files) < len(found):
            skipped["link outside the data folder"] += len(found) - len(files)
        media = [p for p in files if p.suffix.lower() in SUFFIXES[kind]]
        if not media:
            raise AiforgeError(
                "AF-DATA-003",
                f"class folder '{folder}' has no {kind} files ({', '.join(SUFFIXES[kind])})",
                f"add {kind} files of class '{folder.name}' to it, or remove the folder",
            )
        if len(media) < len(files):
            skipped[f"not an {kind} file" if kind == "image" else "not an audio file"] += len(files) - len(
                media
            )
        inputs += [str(p.resolve()) for p in media]
        labels += [folder.name] * len(media)
    return Split(name, inputs, labels), dict(skipped)


def _file_problem(file: str, decode: Callable[[str], Any], kind: MediaKind) -> str | None:
    if not Path(file).is_file():
        return "file not found"
    try:
        decode(file)
    except AiforgeError as exc:
        return f"undecodable {kind}: {exc.message}"
    return None
