"""``aiforge run TASK -i BIG.jsonl -o out.jsonl --backend ray``: batch inference on Ray Data.

The input is cut into the same windows ``Pipeline.stream`` uses locally (``batch_size *
sort_window_batches`` items, length-sorted inside), one Ray Data row per window. A pool of actors
(``map_batches`` with a class: each loads the pipeline once) runs ``pipe.predict(window)``, so every
item meets the same batches, padding and postprocess as in a local run, and Ray Data hands the
windows back in input order (``preserve_order``); each is appended to the output and flushed.

Resume: a sidecar ``OUT.progress.json`` records what the output is (task, model, parameters, input
file size and mtime). When it matches, a new run keeps the complete windows already written (a
partly written last line or window is cut off) and only runs the rest, so an interrupted run
continues where it stopped and the final file is the one an uninterrupted run writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from aiforge.errors import AiforgeError

log = logging.getLogger("aiforge.scale")

ERROR_KEY = "__aiforge_error__"  # how a record that failed to read travels to a worker


@dataclass
class BatchReport:
    """What a Ray batch run did: items written now, items kept from an earlier run, failures."""

    written: int = 0
    resumed_from: int = 0
    failures: int = 0


class WindowRunner:
    """One actor of the pool: loads the pipeline once, runs whole windows through ``pipe.predict``."""

    def __init__(
        self,
        task: str,
        model: str | None,
        device: str,
        params: dict[str, Any],
        size: int,
        env: dict[str, str],
    ) -> None:
        os.environ.update(env)  # caches, offline mode and the registry, as the driver sees them
        from aiforge.tasks import load_pipeline

        self.pipe = load_pipeline(task, model, device=device, **params)
        self.pipe.ensure_setup()
        self.size = size

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        lines = []
        for window in batch["records"]:
            raws = [decode_record(r) for r in json.loads(window)]
            results = self.pipe.predict(raws, batch_size=self.size)
            lines.append("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results))
        return {"start": batch["start"], "lines": np.array(lines, dtype=object)}


def encode_record(record: Any) -> Any:
    if isinstance(record, AiforgeError):
        return {ERROR_KEY: record.to_dict()}
    return record


def decode_record(record: Any) -> Any:
    if isinstance(record, dict) and ERROR_KEY in record:
        return AiforgeError(**record[ERROR_KEY])
    return record


def run_file(
    task: str,
    input_file: Path,
    output: Path | None,
    *,
    model: str | None = None,
    column: str | None = None,
    batch_size: int | None = None,
    device: str = "cpu",
    params: dict[str, Any] | None = None,
    workers: int = 1,
    cpus_per_worker: float = 1,
    address: str | None = None,
    progress: bool = True,
) -> BatchReport:
    """Run ``task`` over ``input_file`` on Ray, writing JSON lines to ``output`` (stdout when None)."""
    from aiforge import io
    from aiforge.scale.cluster import connect, quiet_data_context, worker_env
    from aiforge.tasks import get_task

    spec = get_task(task)
    cls = spec.load_class()
    params = params or {}
    size = max(1, batch_size or cls.default_batch_size)
    window = size * cls.sort_window_batches
    signature = run_signature(spec.name, model, params, size, input_file)
    report = BatchReport()
    if output is not None:
        report.resumed_from = resume_point(output, signature, window)
    fields = cls.Input.model_fields
    records = (io.project_record(r, fields, cls.primary_field, column) for r in io.read_records(input_file))
    rows = list(windows(records, window, skip=report.resumed_from))
    total = io.count_records(input_file)

    sink: TextIO = output.open("a", encoding="utf-8") if output is not None else sys.stdout
    try:
        if rows:
            ray = connect(address)
            quiet_data_context(preserve_order=True)
            ds = ray.data.from_items(rows, override_num_blocks=len(rows)).map_batches(
                WindowRunner,
                fn_constructor_kwargs={
                    "task": spec.name,
                    "model": model,
                    "device": device,
                    "params": params,
                    "size": size,
                    "env": worker_env(),
                },
                batch_size=1,
                batch_format="numpy",
                concurrency=max(1, workers),
                num_cpus=cpus_per_worker,
            )
            bar = _progress(total, report.resumed_from, progress)
            for row in ds.iter_rows():
                text = row["lines"]
                sink.write(text)
                sink.flush()
                n = text.count("\n")
                report.written += n
                report.failures += sum(1 for line in text.splitlines() if _is_error(line))
                bar.update(n)
            bar.close()
    finally:
        if output is not None:
            sink.close()
    if output is not None:
        progress_file(output).write_text(
            json.dumps({**signature, "complete": True}, ensure_ascii=False), encoding="utf-8"
        )
    return report


def windows(records: Iterator[Any], window: int, skip: int = 0) -> Iterator[dict[str, Any]]:
    """``{"start": index, "records": JSON list}`` per ``window`` records, after the first ``skip``."""
    chunk: list[Any] = []
    start = skip
    for index, record in enumerate(records):
        if index < skip:
            continue
        chunk.append(encode_record(record))
        if len(chunk) == window:
            yield {"start": start, "records": json.dumps(chunk, ensure_ascii=False)}
            start, chunk = start + window, []
    if chunk:
        yield {"start": start, "records": json.dumps(chunk, ensure_ascii=False)}


# ---- resume -------------------------------------------------------------------------------------------
def progress_file(output: Path) -> Path:
    return output.with_name(output.name + ".progress.json")


def run_signature(
    task: str, model: str | None, params: dict[str, Any], size: int, input_file: Path
) -> dict[str, Any]:
    """What an output file is the result of; a resumed run must match it exactly."""
    stat = Path(input_file).stat()
    return {
        "task": task,
        "model": model,
        "params": params,
        "batch_size": size,
        "input": str(Path(input_file).resolve()),
        "input_size": stat.st_size,
        "input_mtime_ns": stat.st_mtime_ns,
    }


def resume_point(output: Path, signature: dict[str, Any], window: int) -> int:
    """How many leading results of ``output`` to keep (a multiple of ``window``); the file is cut there.

    Without a matching progress file the output is started over (truncated to 0).
    """
    marker = progress_file(output)
    keep = 0
    if output.exists() and marker.exists():
        try:
            recorded = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            recorded = {}
        recorded.pop("complete", None)
        if recorded == signature:
            keep = (complete_lines(output) // window) * window
        else:
            log.info(
                "%s was written by another run (task, model, parameters or input differ): starting over",
                output,
            )
    output.parent.mkdir(parents=True, exist_ok=True)
    truncate_lines(output, keep)
    marker.write_text(json.dumps({**signature, "complete": False}, ensure_ascii=False), encoding="utf-8")
    return keep


def complete_lines(path: Path) -> int:
    """Leading lines that are whole JSON values ending in a newline."""
    count = 0
    with path.open("rb") as fh:
        for line in fh:
            if not line.endswith(b"\n"):
                break
            try:
                json.loads(line)
            except ValueError:
                break
            count += 1
    return count


def truncate_lines(path: Path, keep: int) -> None:
    """Cut ``path`` after its first ``keep`` lines (create it empty when missing)."""
    if not path.exists() or keep == 0:
        path.write_bytes(b"")
        return
    offset = 0
    with path.open("rb") as fh:
        for _ in range(keep):
            offset += len(fh.readline())
    with path.open("r+b") as fh:
        fh.truncate(offset)
        fh.flush()
        os.fsync(fh.fileno())


def _is_error(line: str) -> bool:
    if not line.startswith('{"error"'):
        return False
    try:
        return set(json.loads(line)) == {"error"}
    except ValueError:
        return False


class _NoBar:
    def update(self, n: int) -> None:
        return None

    def close(self) -> None:
        return None


def _progress(total: int | None, done: int, enabled: bool) -> Any:
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, initial=done, unit="item", file=sys.stderr, disable=None)
