"""``InputRecords``: an input file's records as a Ray Data dataset, read where the file is.

Kept apart from ``aiforge.scale.batch`` because a ``Datasource`` subclass imports Ray, and
``batch`` must import without it (a missing install is reported as AF-RAY-001).
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
from aiforge.scale.batch import RECORD, encode_record, windows


class InputRecords(Datasource):
    """The records of ``path`` after the first ``skip``, projected onto the task's fields.

    Records are read as a local run reads them (``io.read_records``: a malformed line becomes an
    error record in its place) by one read task: the output needs them in file order, and reading
    costs little next to the model. ``supports_distributed_reads`` is False, so Ray Data runs that
    task on the driver's node, where the file is. The task yields a block per ``block`` records and
    Ray Data pauses it while its blocks wait, so it never holds the whole file.
    """

    def __init__(
        self,
        path: Path,
        fields: list[str],
        primary: str | None,
        column: str | None,
        *,
        skip: int = 0,
        block: int = 1024,
    ) -> None:
        super().__init__()
        self.path, self.fields, self.primary, self.column = Path(path), fields, primary, column
        self.skip, self.block = skip, block

    @property
    def supports_distributed_reads(self) -> bool:
        return False

    def estimate_inmemory_data_size(self) -> int | None:
        return self.path.stat().st_size if self.path.is_file() else None

    def get_read_tasks(
        self, parallelism: int, per_task_row_limit: int | None = None, data_context: Any = None
    ) -> list[ReadTask]:
        meta = BlockMetadata(num_rows=None, size_bytes=None, exec_stats=None, input_files=[str(self.path)])
        return [ReadTask(self.read, meta, per_task_row_limit=per_task_row_limit)]

    def read(self) -> Iterator[pa.Table]:
        fields = dict.fromkeys(self.fields)
        records = (
            io.project_record(record, fields, self.primary, self.column)
            for record in io.read_records(self.path)
        )
        for chunk in windows(records, self.block, skip=self.skip):
            yield pa.table({RECORD: [encode_record(r) for r in chunk]})
