"""``aiforge run TASK -i BIG.jsonl -o out.jsonl --backend ray``: batch inference on a Ray actor pool.

The input is cut into the same windows ``Pipeline.stream`` uses locally (``batch_size *
sort_window_batches`` items, length-sorted inside). A pool of actors (each loads the pipeline once,
and runs torch with one thread per CPU it holds) runs ``pipe.predict(window)``, so every item meets
the same batches, padding and postprocess as in a local run.

The driver streams: it reads the input as the pool consumes it, keeps at most ``IN_FLIGHT`` windows
per actor in flight (so an actor never waits for its next window, and memory stays bounded however
big the input), and appends each window's lines to the output, flushed, in input order.
(Ray Data's ``from_items`` would need the whole input in the driver first, and its file readers
need the file on every node, so the pool is driven directly.) An actor that dies is restarted by
Ray and its windows are run again.

Resume: a sidecar ``OUT.progress.json`` records what the output is (task, model, parameters, input
file size and mtime). When it matches, a new run keeps the complete windows already written (a
partly written last line or window is cut off) and only runs the rest, so an interrupted run
continues where it stopped and the final file is the one an uninterrupted run writes.
"""

from __future__ import annotations

import itertools
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
IN_FLIGHT = 2  # windows queued per actor: one running, one waiting


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

    def run(self, records: list[Any]) -> str:
        """One window's results as JSON lines."""
        results = self.pipe.predict([decode_record(r) for r in records], batch_size=self.size)
        return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in results)


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
    params = params or {}
    size = max(1, batch_size or cls.default_batch_size)
    window = size * cls.sort_window_batches
    signature = run_signature(spec.name, model, params, size, input_file)
    report = BatchReport()
    if output is not None:
        report.resumed_from = resume_point(output, signature, window)
    fields = cls.Input.model_fields
    records = (io.project_record(r, fields, cls.primary_field, column) for r in io.read_records(input_file))
    chunks = windows(records, window, skip=report.resumed_from)
    total = io.count_records(input_file)
    left = None if total is None else max(0, total - report.resumed_from)

    sink: TextIO = output.open("a", encoding="utf-8") if output is not None else sys.stdout
    try:
        first = next(chunks, None)
        if first is not None:
            ray = connect(address)
            n_windows = -(-left // window) if left is not None else None
            runner = ray.remote(WindowRunner).options(
                num_cpus=cpus_per_worker, max_restarts=3, max_task_retries=3
            )
            pool = [
                runner.remote(
                    spec.name, model, device, params, size, worker_env(), max(1, int(cpus_per_worker))
                )
                for _ in range(pool_size(ray, workers, cpus_per_worker, n_windows))
            ]
            bar = _progress(total, report.resumed_from, progress)
            for text in run_ordered(ray, pool, itertools.chain([first], chunks)):
                sink.write(text)
                sink.flush()
                n = text.count("\n")
                report.written += n
                report.failures += sum(1 for line in text.splitlines() if _is_error(line))
                bar.update(n)
            bar.close()
            for actor in pool:
                ray.kill(actor)
    finally:
        if output is not None:
            sink.close()
    if output is not None:
        progress_file(output).write_text(
            json.dumps({**signature, "complete": True}, ensure_ascii=False), encoding="utf-8"
        )
    return report


def pool_size(ray: Any, workers: int | None, cpus_per_worker: float, n_windows: int | None) -> int:
    """``workers``, else one actor per ``cpus_per_worker`` of the cluster's CPUs; at most one per window."""
    if workers is None:
        workers = int(ray.cluster_resources().get("CPU", 1) // cpus_per_worker)
    return max(1, min(workers, n_windows or workers))


def run_ordered(ray: Any, pool: list[Any], chunks: Iterator[list[Any]]) -> Iterator[str]:
    """Each window's result, in input order, keeping ``IN_FLIGHT`` windows queued on every actor.

    The next window goes to the actor with the fewest in flight; ``chunks`` is read only as fast as
    the pool works through it.
    """
    load = dict.fromkeys(range(len(pool)), 0)
    pending: dict[Any, tuple[int, int]] = {}  # result ref -> (window index, actor)
    done: dict[int, Any] = {}
    submitted = emitted = 0
    exhausted = False
    while True:
        while not exhausted and len(pending) < IN_FLIGHT * len(pool):
            chunk = next(chunks, None)
            if chunk is None:
                exhausted = True
                break
            actor = min(load, key=load.__getitem__)
            pending[pool[actor].run.remote(chunk)] = (submitted, actor)
            load[actor] += 1
            submitted += 1
        if not pending:
            return
        ready, _ = ray.wait(list(pending), num_returns=1)
        for ref in ready:
            index, actor = pending.pop(ref)
            load[actor] -= 1
            done[index] = ref
        while emitted in done:
            yield fetch(ray, done.pop(emitted))
            emitted += 1


def fetch(ray: Any, ref: Any) -> str:
    """``ray.get``, with a pool that could not start (the model failed to load) as AF-RAY-003."""
    from ray.exceptions import RayActorError, RayTaskError

    try:
        return ray.get(ref)
    except RayTaskError as exc:
        if isinstance(exc.cause, AiforgeError):
            raise exc.cause from None
        raise
    except RayActorError as exc:
        raise AiforgeError(
            "AF-RAY-003",
            f"a batch actor stopped: {exc}",
            "the actor logs above have the traceback; rerun the same command to continue from the output",
        ) from None


def windows(records: Iterator[Any], window: int, skip: int = 0) -> Iterator[list[Any]]:
    """Lists of ``window`` records (failed reads encoded for the trip), after the first ``skip``."""
    chunk: list[Any] = []
    for index, record in enumerate(records):
        if index < skip:
            continue
        chunk.append(encode_record(record))
        if len(chunk) == window:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


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
