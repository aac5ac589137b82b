"""Dynamic batching: many requests, one forward pass, answers in order.

One :class:`Batcher` per served model. Requests are admitted on the event loop (a full queue is a
429 at once, never an unbounded backlog), their items wait in one FIFO queue, and a dispatcher task
forms batches::

    wait until max_batch_size items are queued (reason "full") or the oldest item has waited
    max_wait_ms (reason "timeout")
    take up to max_batch_size * sort_window_batches items that share the same parameters
    preprocess the ones not yet preprocessed in ONE pipe.preprocess_many call (text: one tokenizer
        call for all the requests that arrived meanwhile, instead of one per request)
    sort them by pipe.length(features)       # similar lengths share a batch: little padding
    cut the sorted run into batches of at most max_batch_size ITEMS (not requests), where this
        model's measured cost says the run finishes soonest (batchplan.py), or where padding would
        exceed max_padding when that is set (one long input never pads a whole batch)
    (a pipeline that packs texts without padding, ``pipe.packs``, skips both: its items keep
        arrival order and are cut into the fewest, equal batches)
    for each batch, on the next free inference worker:
        outputs = run_batch(pipe, items, features, on_batch)   # in an inference thread, off the loop
        answer each item; a request is answered when all its items are

Why cut at all: on a CPU, padded tokens cost as much as real ones, and a server only sees the
requests in flight (64 clients: 64 items), not the 256-item sort windows of ``pipe.predict``.
Why by cost: every forward pass also pays a fixed price, so fewer, slightly more padded batches
often win; the batcher fits both prices from its own batches and cuts where the sum is least.

Workers: one inference thread by default. A pipeline whose forward is a pure model call
(``Pipeline.concurrent_forward``) may get several on a CPU, each with its own torch thread
count: on 2 cores, two workers with one torch thread each beat one worker with two (measured
1.1-1.4x on MiniLM), and the event loop's work per request then slows one worker a little instead
of stalling both of torch's threads at every barrier. The dispatcher takes from the queue only
when a worker is free, so requests that arrive meanwhile still join the next batch. One-thread
workers of different models also take turns on the CPU's cores (``cores``: one slot per core,
shared by the server's batchers, runtime.SharedCores), so two text models on two cores run two
forward passes at a time, not four that slow each other while their queues stay too short to batch.

``run_batch`` is the execution core ``pipe.predict`` and the Ray batch actors share
(``tasks/execute.py``): inference mode, the re-run item by item when a batch's forward raises, and
an ``ItemError`` for each item that still fails, which fails only its own request (its own 4xx, or
a 500 when the model raised). Its ``on_batch`` hook feeds this model's batch timing, cost model and
metrics. A request that times out or whose client disconnects is marked done: its queued items are
skipped (a forward pass already running for other requests finishes, and its share of the output
is discarded).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.serve.batchplan import CostModel, cut_by_cost, cut_by_padding, cut_evenly
from aiforge.serve.metrics import ServeMetrics
from aiforge.tasks.base import Pipeline, TaskInput, set_torch_threads
from aiforge.tasks.execute import BatchStats, ItemError, is_error, run_batch

log = logging.getLogger("aiforge.serve")

# After this many consecutive batches fail with server errors, /readyz reports the worker unhealthy.
FAILURES_UNHEALTHY = 3


@dataclass
class QueueFull(AiforgeError):
    """429: the model's queue holds max_queue items; ``retry_after`` (s) estimates when it drains."""

    retry_after: int = 1


class ClientGone(Exception):
    """The client disconnected before its answer was ready; its queued work was dropped."""


@dataclass(eq=False)
class Job:
    """One request's items on their way through a model's queue."""

    runner: Pipeline  # the pipeline (or its per-request parameter variant) that runs these items
    items: list[TaskInput]
    features: list[Any] | None  # None until the dispatcher preprocesses the job's items
    lengths: list[int]
    future: asyncio.Future[list[dict[str, Any]]]
    enqueued_at: float
    results: list[Any] = field(default_factory=list)
    remaining: int = 0  # items not yet answered
    queued: int = 0  # items still waiting in the queue
    done: bool = False  # answered, failed or dropped: its queued items are skipped


@dataclass(eq=False)
class _Slot:
    job: Job
    index: int


class Batcher:
    """The queue, the dispatcher task and the inference threads of one model."""

    def __init__(
        self,
        name: str,
        *,
        max_batch_size: int,
        sort_window_batches: int,
        max_padding: float | None,
        max_wait_s: float,
        cost_model: bool = False,
        max_queue: int,
        stall_after_s: float,
        metrics: ServeMetrics,
        workers: int = 1,
        torch_threads: int | None = None,
        cores: asyncio.Semaphore | None = None,
    ) -> None:
        self.name = name
        self.max_batch_size = max_batch_size
        self.window = max_batch_size * sort_window_batches
        self.max_padding = max_padding
        # cost_model: cut batches by the fitted cost (max_padding is the rule until the fit is ready)
        self.cost = CostModel() if cost_model else None
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self.stall_after_s = stall_after_s
        self.metrics = metrics
        self.workers = workers
        self.executor = ThreadPoolExecutor(
            max_workers=workers,
            thread_name_prefix=f"aiforge-infer-{name}",
            # None: torch's process default
            initializer=partial(set_torch_threads, torch_threads) if torch_threads else None,
        )
        self._free_workers = asyncio.Semaphore(workers)
        # the server's CPU cores, shared with the other models' one-thread workers (SharedCores)
        self._cores = cores
        self._running: dict[asyncio.Task[None], float] = {}  # batches in flight -> when they started
        self._worker_error: BaseException | None = None
        self._queue: deque[_Slot] = deque()
        self._queued = 0  # live items in the queue (done jobs' slots are skipped lazily)
        self._streams = 0  # open token streams, which also hold queue capacity
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._closing = False
        self._taken: list[_Slot] = []  # items of the batch being dispatched not yet on a worker
        self._failures = 0
        self._last_error = ""
        self._items_per_s = 0.0  # moving average, for Retry-After

    # ---- lifecycle --------------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._dispatch_forever(), name=f"batcher-{self.name}")

    async def close(self, timeout_s: float) -> None:
        """Stop admitting, answer everything queued or running (up to ``timeout_s``), stop the thread."""
        self._closing = True
        self._arrived.set()
        if self._task is not None and not self._task.done():
            try:
                await asyncio.wait_for(asyncio.shield(self._task), timeout_s)
            except asyncio.TimeoutError:
                self._task.cancel()
                # the queued requests, and those taken for batches that wait for a worker
                self._fail(
                    [*self._taken, *self._queue],
                    AiforgeError(
                        "AF-SERVE-005",
                        f"model '{self.name}' shut down before answering",
                        "retry the request",
                        status=503,
                    ),
                )
                self._queue.clear()
        self.executor.shutdown(wait=False)

    def health(self) -> str | None:
        """None when the worker is healthy, else why not (for /readyz)."""
        if self._task is None:
            return "inference worker not started"
        if self._task.done() and not self._closing:
            exc = None if self._task.cancelled() else self._task.exception()
            return f"batch dispatcher stopped: {exc!r}"
        if self._worker_error is not None:
            return f"an inference worker failed: {self._worker_error!r}"
        oldest = min(self._running.values(), default=None)
        if oldest is not None and time.monotonic() - oldest > self.stall_after_s:
            return (
                f"a forward pass has run for over {self.stall_after_s:.0f}s; the inference worker looks stuck"
            )
        if self._failures >= FAILURES_UNHEALTHY:
            return f"the last {self._failures} batches failed: {self._last_error}"
        return None

    @property
    def queued(self) -> int:
        return self._queued

    # ---- admission ----------------------------------------------------------------------------------
    def _admit(self, n: int) -> None:
        if self._closing:
            raise AiforgeError(
                "AF-SERVE-005",
                f"model '{self.name}' is shutting down or being swapped out",
                "retry the request",
                status=503,
            )
        if n > self.max_queue:
            raise AiforgeError(
                "AF-SERVE-002",
                f"request has {n} items; model '{self.name}' queues at most {self.max_queue}",
                f"send at most {self.max_queue} items per request",
                status=413,
            )
        if self._queued + self._streams + n > self.max_queue:
            wait = math.ceil((self._queued + n) / self._items_per_s) if self._items_per_s > 0 else 1
            raise QueueFull(
                "AF-SERVE-003",
                f"model '{self.name}' is at capacity ({self._queued} items queued, limit {self.max_queue})",
                "retry after the Retry-After delay, or add replicas",
                status=429,
                retry_after=min(max(wait, 1), 60),
            )

    def submit(self, runner: Pipeline, items: list[TaskInput], features: list[Any] | None = None) -> Job:
        """Queue one request's validated items; raises QueueFull (429) when they do not fit.

        Without ``features`` the dispatcher preprocesses the items, batched with the other requests
        queued by then; an item that fails preprocessing fails its request with a 4xx naming it.
        """
        self._admit(len(items))
        lengths = [runner.length(f) for f in features] if features is not None else []
        job = Job(
            runner,
            items,
            features,
            lengths,
            asyncio.get_running_loop().create_future(),
            time.monotonic(),
            results=[None] * len(items),
            remaining=len(items),
            queued=len(items),
        )
        self._queue.extend(_Slot(job, i) for i in range(len(items)))
        self._queued += len(items)
        self._set_depth()
        self._arrived.set()
        return job

    async def wait(
        self, job: Job, timeout_s: float, disconnected: Callable[[], Awaitable[Any]] | None = None
    ) -> list[Any]:
        """The job's outputs; 504 after ``timeout_s``, ClientGone when ``disconnected()`` returns first."""
        watcher = asyncio.ensure_future(disconnected()) if disconnected is not None else None
        waiting: set[asyncio.Future[Any]] = {job.future, *([watcher] if watcher else [])}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout_s, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            self.cancel(job, "cancelled")
            raise
        finally:
            if watcher is not None:
                watcher.cancel()
        if job.future.done():
            return job.future.result()
        if watcher is not None and watcher in done:
            self.cancel(job, "disconnect")
            raise ClientGone()
        self.cancel(job, "timeout")
        raise AiforgeError(
            "AF-SERVE-004",
            f"model '{self.name}' did not answer within {timeout_s:g}s ({self._queued} items queued)",
            "retry later, send fewer items per request, or raise timeout_s",
            status=504,
        )

    def cancel(self, job: Job, reason: str) -> None:
        """Drop a job's queued items (counted in aiforge_dropped_items_total by reason)."""
        if job.done:
            return
        self._finish(job, reason)
        if not job.future.done():
            job.future.cancel()

    def reserve_stream(self) -> None:
        """Hold one unit of queue capacity while a token stream is open (streams bypass batching);
        raises QueueFull like a request would. Pair with :meth:`release_stream`."""
        self._admit(1)
        self._streams += 1

    def release_stream(self) -> None:
        self._streams -= 1

    # ---- dispatching ----------------------------------------------------------------------------------
    async def _dispatch_forever(self) -> None:
        holding = False  # a worker slot not yet handed to a batch: the finally gives it back
        try:
            while True:
                # take from the queue only once a worker can run it: late arrivals join the batch
                await self._free_workers.acquire()
                holding = True
                reason = await self._gather()
                if reason is None:
                    return
                await self._acquire_core()  # arrivals meanwhile join this batch
                slots = self._preprocess(self._take())
                if not slots:
                    self._release_slot()
                    holding = False
                    continue
                self.metrics.batches.labels(self.name, reason).inc()
                packs = slots[0].job.runner.packs
                if not packs:
                    slots.sort(key=lambda s: s.job.lengths[s.index])
                batches = list(self._batches(slots, packs))
                for i, batch in enumerate(batches):
                    self._taken = [s for later in batches[i:] for s in later]
                    if i:
                        await self._free_workers.acquire()
                        holding = True
                        await self._acquire_core()
                    live = [s for s in batch if not s.job.done]  # requests may have timed out meanwhile
                    if live:
                        self._start_chunk(live)  # the slot goes with the batch, freed when it ends
                    else:
                        self._release_slot()
                    holding = False
                self._taken = []
        finally:
            if holding:  # cancelled while gathering or waiting for a core
                self._free_workers.release()
            if self._running:
                await asyncio.wait(list(self._running))

    async def _acquire_core(self) -> None:
        """With shared cores, wait for one (the worker slot is already held)."""
        if self._cores is not None:
            await self._cores.acquire()

    def _start_chunk(self, chunk: list[_Slot]) -> None:
        """Run one batch on a worker; its slot is released when it is done."""
        task = asyncio.get_running_loop().create_task(self._run_chunk(chunk))
        self._running[task] = time.monotonic()
        task.add_done_callback(self._chunk_done)

    def _release_slot(self) -> None:
        """A worker (and its core) is free again. Cores are only held from their acquire to the
        start or skip of a batch, with no await between, so a cancelled dispatcher never holds one."""
        self._free_workers.release()
        if self._cores is not None:
            self._cores.release()

    def _chunk_done(self, task: asyncio.Task[None]) -> None:
        del self._running[task]
        self._release_slot()
        if not task.cancelled() and task.exception() is not None:
            # _run_chunk turns model failures into per-item outcomes; anything else is a bug in the
            # batcher itself: report it on /readyz rather than lose it in a task nobody awaits
            self._worker_error = task.exception()
            log.error("batch of model %s failed", self.name, exc_info=self._worker_error)

    def _batches(self, slots: list[_Slot], packs: bool) -> Iterator[list[_Slot]]:
        """Consecutive runs of the length-sorted slots, cut by the fitted cost model when it is ready,
        else by ``max_padding`` (both: at most ``max_batch_size`` items); packed: equal cuts."""
        lengths = [s.job.lengths[s.index] for s in slots]
        fit = self.cost.fit() if self.cost is not None and not packs else None
        if packs:
            ends = cut_evenly(len(slots), self.max_batch_size)
        elif fit is not None:
            ends = cut_by_cost(lengths, self.max_batch_size, *fit)
        else:
            ends = cut_by_padding(lengths, self.max_batch_size, self.max_padding)
        start = 0
        for end in ends:
            yield slots[start:end]
            start = end

    async def _gather(self) -> str | None:
        """Wait for a due batch; returns why ("full", "timeout", "drain"); None once closed and empty."""
        while True:
            self._drop_dead_head()
            if self._queued >= self.max_batch_size:
                return "full"
            left: float | None = None
            if self._queue:
                if self._closing:
                    return "drain"
                left = self._queue[0].job.enqueued_at + self.max_wait_s - time.monotonic()
                if left <= 0:
                    return "timeout"
            elif self._closing:
                return None
            self._arrived.clear()
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), left)

    def _take(self) -> list[_Slot]:
        """Up to ``window`` live items, oldest first, that share the first one's pipeline variant."""
        taken: list[_Slot] = []
        kept: deque[_Slot] = deque()
        runner = None
        while self._queue and len(taken) < self.window:
            slot = self._queue.popleft()
            if slot.job.done:
                continue
            if runner is None:
                runner = slot.job.runner
            if slot.job.runner is runner:
                taken.append(slot)
                slot.job.queued -= 1
            else:
                kept.append(slot)
        kept.extend(self._queue)
        self._queue = kept
        self._queued -= len(taken)
        self._set_depth()
        return taken

    def _preprocess(self, slots: list[_Slot]) -> list[_Slot]:
        """Preprocess the taken jobs that are not yet, in one ``preprocess_many`` call (they share one
        runner); when it raises, job by job and item by item, so a bad item fails only its request.
        Returns the slots still live."""
        pending = list({id(s.job): s.job for s in slots if s.job.features is None}.values())
        if pending:
            runner = pending[0].runner
            items = [item for job in pending for item in job.items]
            try:
                features: list[Any] | None = list(runner.preprocess_many(items))
            except Exception:
                features = None
            start = 0
            for job in pending:
                if features is not None and len(features) == len(items):
                    job.features = features[start : start + len(job.items)]
                    start += len(job.items)
                else:
                    self._preprocess_one(job)
                if not job.done:
                    job.lengths = [runner.length(f) for f in job.features or ()]
        return [s for s in slots if not s.job.done]

    def _preprocess_one(self, job: Job) -> None:
        try:
            job.features = each_or_4xx(job.runner.preprocess, job.items)
        except AiforgeError as exc:
            self._finish(job, "failed")
            job.future.set_exception(exc)

    async def _run_chunk(self, chunk: list[_Slot]) -> None:
        started = time.monotonic()
        for slot in chunk:
            self.metrics.queue_wait.labels(self.name).observe(started - slot.job.enqueued_at)
        self.metrics.batch_size.labels(self.name).observe(len(chunk))
        runner = chunk[0].job.runner
        features = [s.job.features[s.index] for s in chunk]  # type: ignore[index]
        items = [s.job.items[s.index] for s in chunk]
        on_batch = partial(self._batch_done_threadsafe, chunk)
        loop = asyncio.get_running_loop()
        outputs = await loop.run_in_executor(self.executor, run_batch, runner, items, features, on_batch)
        self._track_failures(outputs)
        for slot, output in zip(chunk, outputs, strict=True):
            self._deliver(slot, output)

    def _batch_done_threadsafe(self, chunk: list[_Slot], stats: BatchStats) -> None:
        """``run_batch``'s hook, in the inference thread: the bookkeeping runs on the event loop,
        where all of this batcher's state lives (two workers must not update the cost fit at once)."""
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop closed while the batch ran (shutdown timed out)
            self._loop.call_soon_threadsafe(self._batch_done, chunk, stats)

    def _batch_done(self, chunk: list[_Slot], stats: BatchStats) -> None:
        self.metrics.inference.labels(self.name).observe(stats.seconds)
        rate = len(chunk) / max(stats.seconds, 1e-6)
        self._items_per_s = rate if self._items_per_s == 0 else 0.8 * self._items_per_s + 0.2 * rate
        if self.cost is not None and not stats.failed and not stats.retried:
            self._observe_cost(self.cost, chunk, stats.seconds)  # a re-run-one-by-one batch is no sample

    def _observe_cost(self, cost: CostModel, chunk: list[_Slot], elapsed: float) -> None:
        cost.observe(chunk[0].job.runner.batch_units([s.job.lengths[s.index] for s in chunk]), elapsed)
        fit = cost.fit()
        if fit is not None:
            self.metrics.batch_cost.labels(self.name, "fixed").set(fit[0])
            self.metrics.batch_cost.labels(self.name, "per_unit").set(fit[1])

    def _deliver(self, slot: _Slot, outcome: Any) -> None:
        job = slot.job
        if job.done:
            return
        if is_error(outcome):
            self._finish(job, "failed")
            job.future.set_exception(as_request_error(outcome, self.name))
            return
        job.results[slot.index] = outcome
        job.remaining -= 1
        if job.remaining == 0:
            job.done = True
            job.future.set_result(job.results)

    def _finish(self, job: Job, reason: str) -> None:
        """Mark a job done and release its still-queued items."""
        job.done = True
        if job.queued:
            self._queued -= job.queued
            self.metrics.dropped.labels(self.name, reason).inc(job.queued)
            job.queued = 0
            self._set_depth()
        if len(self._queue) > 2 * self.max_queue + self.window:  # many dead slots: compact (bounded memory)
            self._queue = deque(s for s in self._queue if not s.job.done)

    def _drop_dead_head(self) -> None:
        while self._queue and self._queue[0].job.done:
            self._queue.popleft()

    def _fail(self, slots: list[_Slot], error: AiforgeError) -> None:
        """Fail the requests of these items (each once) with ``error``."""
        for slot in slots:
            if not slot.job.done:
                self._finish(slot.job, "shutdown")
                slot.job.future.set_exception(error)

    def _track_failures(self, outputs: list[Any]) -> None:
        server_errors = [o.cause for o in outputs if is_error(o) and o.internal]
        if outputs and len(server_errors) == len(outputs):
            self._failures += 1
            self._last_error = f"{type(server_errors[0]).__name__}: {server_errors[0]}"
        else:
            self._failures = 0

    def _set_depth(self) -> None:
        self.metrics.queue_depth.labels(self.name).set(self._queued)


def each_or_4xx(step: Callable[[Any], Any], values: list[Any]) -> list[Any]:
    """``step`` over every value; the first that fails fails the request with a 4xx naming it."""
    out: list[Any] = []
    for i, value in enumerate(values):
        try:
            out.append(step(value))
        except Exception as exc:
            raise preprocess_error(exc, i, len(values)) from None
    return out


def preprocess_error(exc: Exception, index: int, total: int) -> AiforgeError:
    """The 4xx for an input that failed validation or preprocessing, naming it in a batch request."""
    if isinstance(exc, AiforgeError):
        code, message, fix = exc.code, exc.message, exc.fix
    else:  # a decoder's own exception type: still the input's fault, never a 500
        code, message, fix = (
            "AF-INPUT-002",
            f"could not preprocess: {type(exc).__name__}: {exc}",
            "check the input's format",
        )
    where = f"inputs[{index}]: " if total > 1 else ""
    return AiforgeError(code, where + message, fix, status=UNSUPPORTED_MEDIA_CODES.get(code, 422))


# 415: content the model cannot take (an upload to a text model, bytes that are no image or audio);
# 422: a well-formed input that is still invalid (a record missing a field, an unknown language).
UNSUPPORTED_MEDIA_CODES = {"AF-INPUT-003": 415, "AF-INPUT-004": 415, "AF-INPUT-005": 415}


def as_request_error(failed: ItemError, model: str) -> AiforgeError:
    """A failed item as the error its request gets: input errors keep their code and status, a model
    that raised is a 500 (``run_batch`` logged its traceback)."""
    if not failed.internal:
        return failed.error
    exc = failed.cause
    return AiforgeError(
        "AF-SERVE-009",
        f"model '{model}' failed on this input: {type(exc).__name__}: {exc}",
        "this is a server-side failure; the server log has the traceback",
        status=500,
    )
