"""How records travel from the input file to the batch actors: windows of records, a row per
window, each record a JSON string (a record that failed to read travels as its error).

Shared by the datasource that writes the rows (:mod:`aiforge.scale.datasource`, which imports Ray)
and the run that reads them (:mod:`aiforge.scale.batch`, which must import without Ray).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from aiforge.errors import AiforgeError

ERROR_KEY = "__aiforge_error__"  # how a record that failed to read travels to a worker
# the columns: a window's records as JSON; its results' JSON lines and how many of them are errors
RECORDS, LINES, FAILED = "records", "lines", "failed"


def encode_record(record: Any) -> str:
    if isinstance(record, AiforgeError):
        record = {ERROR_KEY: record.to_dict()}
    return json.dumps(record, ensure_ascii=False)


def decode_record(record: Any) -> Any:
    if isinstance(record, dict) and ERROR_KEY in record:
        return AiforgeError(**record[ERROR_KEY])
    return record


def windows(records: Iterator[Any], window: int, skip: int = 0) -> Iterator[list[Any]]:
    """Lists of ``window`` records, after the first ``skip``."""
    chunk: list[Any] = []
    for index, record in enumerate(records):
        if index < skip:
            continue
        chunk.append(record)
        if len(chunk) == window:
            yield chunk
            chunk = []
    if chunk:
        yield chunk
