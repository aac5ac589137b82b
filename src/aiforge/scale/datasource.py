"""``InputRecords``: an input file's windows of records as a Ray Data dataset, read where the file is.

Kept apart from ``aiforge.scale.batch`` because a ``Datasource`` subclass imports Ray, and
``batch`` must import without it (a missing install is reported as AF-RAY-001); the record format
both share is :mod:`aiforge.scale.records`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
from ray.data import Datasource
from ray.data.block import BlockMetadata
from ray.data.datasource import ReadTask

from aiforge import io
from aiforge.scale.records import RECORDS, encode_record, windows


class InputRecords(Datasource):
    """The input file's windows after the first ``skip`` records: one row each, its records as
    JSON strings (column ``records``), projected onto the task's fields.

    Records are read as a local run reads them (``io.read_records``: a malformed line becomes an
    error record in its place; ``io.project_record``) by one read task: the windows must come out
    in file order, and reading costs little next to the model. ``supports_distributed_reads`` is
    False, so Ray Data runs that task on the driver's node, where the file is. Ray Data pauses the
    task while its blocks wait to be consumed, so it never holds the whole file.
    """

    def __init__(
        self,
        path: Path,
        fields: list[str],
        primary: str | None,
        column: str | None,
        *,
        window: int,
        skip: int = 0,
    ) -> None:
        super().__init__()
        self.path, self.fields, self.primary, self.column = Path(path), fields, primary, column
        self.window, self.skip = window, skip

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def estimate_inmemory_data_size(self) -> int | None:
        return self.path.stat().st_size if self.path.is_file() else None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=(str(self.path),))
        return [ReadTask(self.read, meta, per_task_row_limit=per_task_row_limit)]

    def read(self) -> Iterator[pa.Table]:
        fields = dict.fromkeys(self.fields)
        records = (
            io.project_record(record, fields, self.primary, self.column)
            for record in io.read_records(self.path)
        )
        for chunk in windows(records, self.window, skip=self.skip):
            yield pa.table({RECORDS: [[encode_record(r) for r in chunk]]})
