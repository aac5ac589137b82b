"""Named training events and the callbacks that attach to them.

The loop calls ``runner.trigger("on_step_end", state)`` at fixed points; observers (MLflow
tracking, a test that kills the process mid-epoch, a user's own hook) subclass :class:`Callback`.
A callback that raises is logged and skipped, so a broken observer never stops training.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

EVENTS = ("on_train_start", "on_log", "on_step_end", "on_eval_end", "on_checkpoint", "on_train_end")


@dataclass
class TrainState:
    """What callbacks see: where the run is and what it has measured so far."""

    output_dir: Path
    config: dict[str, Any]
    total_steps: int
    step: int = 0
    epoch: int = 0
    batch: int = 0  # batches done in the current epoch
    logs: dict[str, float] = field(default_factory=dict)  # the latest on_log values
    evaluation: dict[str, Any] = field(default_factory=dict)  # the latest on_eval_end metrics
    history: dict[str, list] = field(default_factory=lambda: {"steps": [], "loss": [], "evals": []})
    best_metric: float | None = None
    run_id: str | None = None
    registered_version: str | None = None
    summary: dict[str, Any] = field(default_factory=dict)  # filled at the end: metrics, baseline, artifacts
    metric: str = ""  # the validation metric that picks the best model (the task's, or training.metric)
    # A callback sets this (a reason, e.g. "pruned by the sweep") to end training after the current
    # step: the loop then finishes as after early stopping (best model tested, saved and tracked).
    # Raising cannot do it: the runner logs and skips a callback that raises.
    stop_requested: str | None = None


class Callback:
    """No-op hooks; override the ones you need."""

    def on_train_start(self, state: TrainState) -> None: ...
    def on_log(self, state: TrainState) -> None: ...
    def on_step_end(self, state: TrainState) -> None: ...
    def on_eval_end(self, state: TrainState) -> None: ...
    def on_checkpoint(self, state: TrainState) -> None: ...
    def on_train_end(self, state: TrainState) -> None: ...


class CallbackRunner:
    def __init__(self, callbacks: list[Callback]) -> None:
        self.callbacks = list(callbacks)

    def trigger(self, event: str, state: TrainState) -> None:
        if event not in EVENTS:
            raise ValueError(f"unknown training event {event!r}; events: {', '.join(EVENTS)}")
        for callback in self.callbacks:
            try:
                getattr(callback, event)(state)
            except Exception:  # noqa: BLE001 - an observer must not stop training
                log.exception("callback %s failed in %s; training goes on", type(callback).__name__, event)
