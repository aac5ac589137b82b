"""Reading task inputs from files and writing results, for the CLI and batch jobs.

Supported inputs: ``.jsonl`` (one JSON object or string per line), ``.csv`` / ``.tsv`` (a header
row), ``.txt`` (one text per line), or a directory (one file per item: images, audio).
A malformed line becomes an error record for that line; the rest of the file still runs.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Generator
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError

PACKAGED_DATA_PREFIX = "packaged:"


def resolve_data_path(path: str | Path) -> Path:
    """``packaged:nsmc_sample/train.tsv`` -> the sample inside the installed aiforge package (training
    data, the ``guide_ko`` documents for ``aiforge rag ingest``); other paths are returned as given
    (relative to the current directory)."""
    text = str(path)
    if text.startswith(PACKAGED_DATA_PREFIX):
        return Path(__file__).parent / "data" / text.removeprefix(PACKAGED_DATA_PREFIX)
    return Path(text).expanduser()


TEXT_COLUMNS = ("text", "document", "sentence", "content", "review")
MEDIA_SUFFIXES = {
    ".jpg",
    ".jpeg",
    ".png",
    ".bmp",
    ".gif",
    ".webp",
    ".tif",
    ".tiff",
    ".wav",
    ".mp3",
    ".flac",
    ".ogg",
    ".m4a",
    ".webm",
    ".mp4",
}


def _open_text(path: Path):
    try:
        return path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise AiforgeError(
            "AF-INPUT-001",
            f"cannot read input file '{path}': {exc.strerror}",
            "check the path and its permissions",
        ) from None


def read_records(path: str | Path) -> Generator[Any, None, None]:
    """Yield raw records (dicts or strings); a bad line yields an AiforgeError in its place."""
    path = Path(path)
    if not path.exists():
        raise AiforgeError("AF-INPUT-001", f"input '{path}' does not exist", "check the path")
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in MEDIA_SUFFIXES)
        if not files:
            raise AiforgeError(
                "AF-INPUT-001",
                f"directory '{path}' holds no image or audio files",
                f"supported suffixes: {' '.join(sorted(MEDIA_SUFFIXES))}",
            )
        yield from (str(p) for p in files)
        return
    suffix = path.suffix.lower()
    if suffix == ".jsonl" or suffix == ".ndjson":
        with _open_text(path) as fh:
            for number, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    yield AiforgeError(
                        "AF-INPUT-002",
                        f"{path}:{number}: not valid JSON ({exc.msg})",
                        "write one JSON object per line",
                    )
    elif suffix in (".csv", ".tsv"):
        with _open_text(path) as fh:
            reader = csv.DictReader(fh, delimiter="\t" if suffix == ".tsv" else ",")
            yield from reader
    elif suffix == ".txt":
        with _open_text(path) as fh:
            yield from (line.rstrip("\n") for line in fh if line.strip())
    else:
        raise AiforgeError(
            "AF-INPUT-005",
            f"unsupported input file type '{suffix}' ({path})",
            "use .jsonl, .csv, .tsv, .txt or a directory of media files",
        )


def count_records(path: str | Path) -> int | None:
    """Cheap total for a progress bar (line count); None when unknown."""
    path = Path(path)
    if path.is_dir():
        return None
    try:
        with path.open("rb") as fh:
            lines = sum(1 for line in fh if line.strip())
    except OSError:
        return None
    return lines - 1 if path.suffix.lower() in (".csv", ".tsv") else lines


def project_record(record: Any, fields: dict[str, Any], primary: str | None, column: str | None) -> Any:
    """Keep the fields a task takes from a file row; map ``column`` (or a usual text column) onto
    the task's primary field. Extra columns such as ``id`` or ``label`` are dropped, not errors."""
    if not isinstance(record, dict):
        return record
    if column is not None:
        if column not in record:
            return AiforgeError(
                "AF-INPUT-002",
                f"column '{column}' not found; columns are {list(record)}",
                "pass --column with one of those names",
            )
        record = {**record, primary or column: record[column]}
    elif primary is not None and primary not in record:
        for name in TEXT_COLUMNS:
            if name in record:
                record = {**record, primary: record[name]}
                break
    kept = {k: v for k, v in record.items() if k in fields}
    if not kept:
        return AiforgeError(
            "AF-INPUT-002",
            f"no usable field in record; columns are {list(record)}, the task takes {list(fields)}",
            "pass --column NAME for the input column",
        )
    return kept


def write_jsonl(obj: Any, stream=sys.stdout) -> None:
    stream.write(json.dumps(obj, ensure_ascii=False) + "\n")
