"""``aiforge run TASK -i BIG.jsonl -o out.jsonl --backend ray``: batch inference on Ray Data.

The run is one Ray Data pipeline, iterated by the driver as it streams:

* ``read_datasource(InputRecords)`` (``aiforge.scale.datasource``): one read task, on the driver's
  node (the file need not exist on the others), reads the records the way a local run does
  (``io.read_records``, a malformed line as an error record in its place; the task's fields) and
  cuts them into the windows ``Pipeline.stream`` uses locally (``batch_size *
  sort_window_batches`` items): a row, and a block, per window. It takes no CPU from Ray's
  accounting: reading is light next to the model, and the actors may hold every CPU.
* ``map_batches(WindowPredictor, batch_size=1)`` (one window) on a fixed pool of actors
  (``ActorPoolStrategy``): each loads the pipeline once, runs torch with one thread per CPU it
  holds, and runs ``pipe.predict(window)``, so every item meets the same batches, padding and
  postprocess as in a local run and the JSON lines are byte-identical.
* ``preserve_order``: the driver appends each window's lines to the output, flushed, in input order.

Why a row per window rather than a row per record with ``batch_size=window``: Ray Data merges a
read task's blocks (up to ``target_max_block_size``) and splits them again for parallelism, so
record blocks reach the pool cut anywhere; a batch would then straddle two windows, and an item's
padding, and so its scores, could differ from a local run. A strict ``repartition`` to ``window``
rows restores exact windows, but runs as tasks that need a CPU each, and a pool
holding every CPU then waits forever (measured: the run hangs on a 2-CPU cluster).

Ray Data backpressures every stage (at most ``IN_FLIGHT`` windows queued per actor), so memory
stays bounded however big the input, and restarts an actor that dies and runs its window again.

Resume: a sidecar ``OUT.progress.json`` records what the output is (task, model, parameters, input
file size and mtime). When it matches, a new run keeps the complete windows already written (a
partly written last line or window is cut off) and the read task skips that many records, so an
interrupted run continues where it stopped and the final file is the one an uninterrupted run
writes.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from aiforge.errors import AiforgeError
from aiforge.scale.records import FAILED, LINES, RECORDS, decode_record

if TYPE_CHECKING:
    import pyarrow as pa

log = logging.getLogger("aiforge.scale")

IN_FLIGHT = 2  # windows queued per actor: one running, one waiting


@dataclass
class BatchReport:
    """What a Ray batch run did: items written now, items kept from an earlier run, failures."""

    written: int = 0
    resumed_from: int = 0
    failures: int = 0


class WindowPredictor:
    """The ``map_batches`` callable: loads the pipeline once per actor, runs one window per call."""

    def __init__(
        self,
        task: str,
        model: str | None,
        device: str,
        params: dict[str, Any],
        size: int,
        env: dict[str, str],
        threads: int = 1,
    ) -> None:
        os.environ.update(env)  # caches, offline mode and the registry, as the driver sees them
        from aiforge.scale.cluster import calm_threads

        calm_threads()
        import torch

        # one intra-op thread per CPU this actor holds: more would fight the other actors for cores
        torch.set_num_threads(threads)
        from aiforge.tasks import load_pipeline

        self.pipe = load_pipeline(task, model, device=device, **params)
        self.pipe.ensure_setup()
        self.size = size

    def __call__(self, batch: pa.Table) -> pa.Table:
        """Each window (a row) in ``batch``: its results as JSON lines (one string) and its failures."""
        import pyarrow as pa

        lines, failed = zip(*(self.run(window) for window in batch.column(RECORDS).to_pylist()), strict=True)
        return pa.table({LINES: list(lines), FAILED: list(failed)})

    def run(self, window: list[str]) -> tuple[str, int]:
        """One window's JSON lines, and how many are error records (``ItemError``)."""
        from aiforge.tasks.execute import is_error

        results = self.pipe.predict([decode_record(json.loads(r)) for r in window], batch_size=self.size)
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)
        return lines, sum(map(is_error, results))


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
    workers: int | None = None,
    cpus_per_worker: float = 1,
    address: str | None = None,
    progress: bool = True,
) -> BatchReport:
    """Run ``task`` over ``input_file`` on Ray, writing JSON lines to ``output`` (stdout when None).

    ``workers`` actors of ``cpus_per_worker`` CPUs each (default: as many as the cluster's CPUs hold,
    never more than there are windows); each runs torch with one thread per CPU it holds.
    """
    from aiforge import io
    from aiforge.models import resolve
    from aiforge.scale.cluster import connect, require_ray, worker_env
    from aiforge.tasks import default_model_ref, get_task

    require_ray()  # a missing install is the first thing to fix
    spec = get_task(task)
    cls = spec.load_class()
    resolve(model or default_model_ref(spec), spec.name)  # a typo fails now, before any actor starts
    with closing(io.read_records(input_file)) as probe:  # so does a missing or unsupported input
        next(probe, None)
    params = params or {}
    size = max(1, batch_size or cls.default_batch_size)
    window = size * cls.sort_window_batches
    signature = run_signature(spec.name, model, params, size, input_file)
    report = BatchReport()
    if output is not None:
        report.resumed_from = resume_point(output, signature, window)
    total = io.count_records(input_file)
    left = None if total is None else max(0, total - report.resumed_from)

    sink: TextIO = output.open("a", encoding="utf-8") if output is not None else sys.stdout
    try:
        if left != 0:
            ray = connect(address)
            from aiforge.scale.datasource import InputRecords

            predictor = {
                "task": spec.name, "model": model, "device": device, "params": params, "size": size,
                "env": worker_env(), "threads": max(1, int(cpus_per_worker)),
            }  # fmt: skip
            n_windows = -(-left // window) if left is not None else None
            records = InputRecords(
                input_file, list(cls.Input.model_fields), cls.primary_field, column,
                window=window, skip=report.resumed_from,
            )  # fmt: skip
            actors = pool_size(ray, workers, cpus_per_worker, n_windows)
            results = predict_lines(ray, records, predictor, actors=actors, cpus_per_actor=cpus_per_worker)
            bar = _progress(total, report.resumed_from, progress)
            for text, failed in results:
                sink.write(text)
                sink.flush()
                n = text.count("\n")
                report.written += n
                report.failures += failed
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


def predict_lines(
    ray: Any, records: Any, predictor: dict[str, Any], *, actors: int, cpus_per_actor: float
) -> Iterator[tuple[str, int]]:
    """Each window's JSON lines and its count of error lines, in input order, as ``actors``
    ``WindowPredictor``s produce them.

    ``records`` is the ``InputRecords`` datasource, ``predictor`` the actors' constructor arguments.
    """
    import ray.data

    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False  # the run draws its own, in items
    context.print_on_execution_start = False
    # A block per window, so each window is a task of its own for the pool: Ray Data would merge
    # the read task's blocks up to this size (128 MiB by default), and one task's windows all run
    # on one actor. A row is never split, so a window is never cut.
    context.target_max_block_size = 1
    # num_cpus=0: reading is light, and the actors may hold every CPU. override_num_blocks=1: the
    # one read task's blocks go out as they are (Ray Data would split them to reach its parallelism).
    windows_of_records = ray.data.read_datasource(records, num_cpus=0, override_num_blocks=1)
    lines = windows_of_records.map_batches(
        WindowPredictor,
        batch_size=1,  # one window
        batch_format="pyarrow",
        compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=IN_FLIGHT),
        num_cpus=cpus_per_actor,
        fn_constructor_kwargs=predictor,
    )
    with surfaced_errors():
        # prefetch_batches=0: with Ray Data's default of 1, a window reached the output only once
        # the next window on the same actor was done (measured: the first output 5 s later)
        for batch in lines.iter_batches(batch_size=None, batch_format="pyarrow", prefetch_batches=0):
            yield "".join(batch.column(LINES).to_pylist()), sum(batch.column(FAILED).to_pylist())


@contextmanager
def surfaced_errors() -> Iterator[None]:
    """An ``AiforgeError`` raised in a worker (a model that fails to load) as itself, an actor that
    stopped for good as AF-RAY-003; anything else as Ray Data raises it."""
    from ray.exceptions import RayActorError

    try:
        yield
    except Exception as exc:
        causes = list(_causes(exc))
        cause = next((c for c in causes if isinstance(c, AiforgeError)), None)
        if cause is not None:
            raise cause from None
        if any(isinstance(c, RayActorError) for c in causes):
            raise AiforgeError(
                "AF-RAY-003",
                f"a batch actor stopped: {exc}",
                "the actor logs above have the traceback; rerun the same command to continue from the output",
            ) from None
        raise


def _causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and what it wraps: chained exceptions and a ``RayTaskError``'s ``cause``."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = getattr(exc, "cause", None) or exc.__cause__ or exc.__context__


def pool_size(ray: Any, workers: int | None, cpus_per_worker: float, n_windows: int | None) -> int:
    """``workers``, else one actor per ``cpus_per_worker`` of the cluster's CPUs; at most one per window."""
    if workers is None:
        workers = int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker)
    return max(1, min(workers, n_windows or workers))


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
