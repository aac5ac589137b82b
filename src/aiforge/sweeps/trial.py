"""One trial: the training loop on the trial's config, with a pruning callback fed by each evaluation.

:func:`run_trial` is what every backend runs, in this process (``--backend local``) or in a Ray task
(``--backend ray``). It reopens the Optuna study from its storage in the sweep dir, so a trial running
on a Ray worker reports its validation metric and asks the pruner exactly as a local one does.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.sweeps.spec import Pruning
from aiforge.train.callbacks import Callback, TrainState
from aiforge.train.config import TrainConfig

log = logging.getLogger(__name__)

STORAGE_FILE = "study.journal"


def open_storage(sweep_dir: Path) -> Any:
    """The sweep's Optuna storage: a journal file in the sweep dir. Unlike SQLite it is safe for several
    processes appending at once (Ray trials report while the driver asks and tells), on NFS too."""
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    sweep_dir.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(sweep_dir / STORAGE_FILE)))


def make_pruner(settings: Pruning) -> Any:
    import optuna

    if not settings.enabled:
        return optuna.pruners.NopPruner()
    # Trials report at their 1st, 2nd... evaluation; warmup_evals of them are never pruned.
    return optuna.pruners.MedianPruner(
        n_startup_trials=settings.startup_trials, n_warmup_steps=settings.warmup_evals + 1
    )


@dataclass
class TrialJob:
    """What a trial needs, plain data (it travels to Ray workers)."""

    number: int
    trial_id: int
    params: dict[str, Any]
    config: dict[str, Any]  # the trial's TrainConfig, dumped
    metric: str
    sweep_dir: str
    study_name: str
    pruning: dict[str, Any] | None  # the sweep's Pruning settings; None: never pruned
    resume: bool = False  # continue an interrupted trial from its checkpoint


@dataclass
class TrialOutcome:
    number: int
    state: str  # complete | pruned | failed
    value: float | None = None  # the validation metric of the trial's best model
    seconds: float = 0.0
    started_at: float = 0.0  # wall-clock time.time() when the trial began (parallel trials overlap)
    steps: int = 0
    examples: int = 0  # training examples processed (steps x batch x accumulation)
    parameters: int | None = None  # the model's parameter count
    run_id: str | None = None
    output_dir: str = ""
    error: dict[str, str] = field(default_factory=dict)  # an AiforgeError's code, message and fix


class PruneOnEvaluation(Callback):
    """Reports the validation metric to Optuna at each evaluation; asks the loop to stop when the
    pruner says the trial trails the others at the same evaluation."""

    def __init__(self, job: TrialJob) -> None:
        self.job = job
        self.trial: Any = None
        self.evaluations = 0
        self.pruned = False

    def on_train_start(self, state: TrainState) -> None:
        import optuna

        # the pruner is not kept in the storage: each process that asks it builds the same one
        pruner = make_pruner(Pruning.model_validate(self.job.pruning))
        storage = open_storage(Path(self.job.sweep_dir))
        study = optuna.load_study(study_name=self.job.study_name, storage=storage, pruner=pruner)
        self.trial = optuna.trial.Trial(study, self.job.trial_id)

    def on_eval_end(self, state: TrainState) -> None:
        value = state.evaluation.get(self.job.metric)
        if self.trial is None or not isinstance(value, int | float):
            return
        self.evaluations += 1  # the step Optuna compares trials at: the k-th evaluation of each
        self.trial.report(float(value), self.evaluations)
        if self.trial.should_prune():
            self.pruned = True
            state.stop_requested = f"pruned: {self.job.metric} {value:.4g} trails the other trials"
            log.info("trial %d %s", self.job.number, state.stop_requested)


def run_trial(job: TrialJob, callbacks: list[Callback] | None = None) -> TrialOutcome:
    """Train one trial; a user error (out of memory, a value the model refuses) is a failed trial."""
    from aiforge.train.loop import train

    config = TrainConfig.model_validate(job.config)
    pruning = PruneOnEvaluation(job) if job.pruning is not None else None
    observers = [*([pruning] if pruning else []), *(callbacks or [])]
    started = time.perf_counter()
    outcome = TrialOutcome(job.number, "failed", output_dir=config.output_dir, started_at=time.time())
    try:
        result = train(config, resume=job.resume, callbacks=observers, progress=False)
    except AiforgeError as exc:
        outcome.error = exc.to_dict()
        outcome.seconds = time.perf_counter() - started
        return outcome
    value = result.metrics.get("validation", {}).get(job.metric)
    outcome.state = "pruned" if pruning is not None and pruning.pruned else "complete"
    outcome.value = float(value) if isinstance(value, int | float) else None
    outcome.seconds, outcome.steps, outcome.run_id = result.seconds, result.steps, result.run_id
    outcome.examples = result.steps * config.training.batch_size * config.training.grad_accum
    outcome.parameters = count_parameters(Path(result.model_dir))
    if outcome.value is None:
        outcome.state = "failed"
        outcome.error = {
            "code": "AF-SWEEP-004",
            "message": f"the trial's validation metrics have no '{job.metric}'",
            "fix": f"set metric: to one of {', '.join(sorted(result.metrics.get('validation', {})))}",
        }
    return outcome


def count_parameters(model_dir: Path) -> int | None:
    """Parameters of a saved model, from its safetensors headers (no weights loaded)."""
    files = sorted(model_dir.glob("*.safetensors"))
    if not files:
        return None
    from safetensors import safe_open

    total = 0
    for path in files:
        with safe_open(str(path), framework="np") as handle:
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                count = 1
                for size in handle.get_slice(name).get_shape():
                    count *= size
                total += count
    return total
