"""``aiforge sweep``: the search loop, with Optuna's ask-and-tell.

The driver asks Optuna for a trial, turns its values into a training config, hands the trial to a
runner (:class:`LocalRunner` trains it in this process; :mod:`aiforge.scale.sweep` runs several at once
on Ray) and tells Optuna the outcome. Everything that lets a sweep continue lives in the sweep dir:
the Optuna study (``study.journal``), the MLflow id of the sweep's parent run, each trial's own
output dir and checkpoints. ``--resume`` reopens them: finished trials stay finished, and a trial the
interruption caught is run again from its last checkpoint.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from aiforge.errors import AiforgeError
from aiforge.sweeps.plots import write_plots
from aiforge.sweeps.spec import (
    Direction,
    Range,
    SweepSpec,
    check_parameters,
    resolve_metric,
    trial_config,
    values_of,
)
from aiforge.sweeps.summary import SweepResult, summarize, write_tables
from aiforge.sweeps.trial import STORAGE_FILE, TrialJob, TrialOutcome, make_pruner, open_storage, run_trial
from aiforge.train.callbacks import Callback

log = logging.getLogger(__name__)

STUDY_NAME = "aiforge-sweep"


class TrialRunner(Protocol):
    """Runs trials: ``slots`` at once; ``wait`` blocks until at least one of those started finishes."""

    slots: int

    def start(self, job: TrialJob) -> None: ...

    def wait(self) -> list[TrialOutcome]: ...


class LocalRunner:
    """One trial at a time, in this process; ``callbacks`` observe every trial's training loop."""

    slots = 1

    def __init__(self, callbacks: list[Callback] | None = None) -> None:
        self.queued: list[TrialJob] = []
        self.callbacks = list(callbacks or [])

    def start(self, job: TrialJob) -> None:
        self.queued.append(job)

    def wait(self) -> list[TrialOutcome]:
        return [run_trial(self.queued.pop(0), self.callbacks)]


@dataclass
class Search:
    """The Optuna study and what the driver needs to ask it for trials."""

    study: Any
    spec: SweepSpec
    metric: str
    direction: str


def run_sweep(
    spec: SweepSpec,
    *,
    resume: bool = False,
    runner: TrialRunner | None = None,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SweepResult:
    """Run (or with ``resume`` continue) the sweep; returns the summary (table, best trial, plots)."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    base = check_parameters(spec)
    metric, direction = resolve_metric(spec, base)
    search = Search(open_study(spec, direction, resume), spec, metric, direction)
    tracker = SweepTracker(spec, base, search.study)
    requeue_interrupted(search.study)
    runner = runner or LocalRunner()
    running: dict[int, Any] = {}  # trial number -> the Optuna trial
    budget = spec.n_trials()
    try:
        while True:
            while len(running) < runner.slots and counted(search.study) + len(running) < budget:
                trial, job = ask(search, tracker.run_id)
                running[trial.number] = trial
                runner.start(job)
            if not running:
                break
            for outcome in runner.wait():
                trial = running.pop(outcome.number)
                tell(search.study, trial, outcome)
                tracker.tag_trial(outcome)
                if on_trial is not None:
                    on_trial(outcome)
                # a failure before any trial finished says the base config or data is wrong, not
                # the trial's values: stop now rather than fail every trial the same way
                if outcome.state == "failed" and not any_finished(search.study):
                    raise first_failure(outcome)
    except BaseException:
        tracker.finish("KILLED")
        raise
    result = summarize(search.study, spec, metric, direction)
    artifacts = [*write_tables(result), *write_plots(result)]
    result.artifacts = artifacts
    tracker.close(result)
    return result


# ---- the study --------------------------------------------------------------------------------------------
def open_study(spec: SweepSpec, direction: Direction, resume: bool) -> Any:
    """A new study in the sweep dir, or (``resume``) the one there; refuses to mix the two up."""
    import optuna

    exists = (spec.sweep_dir / STORAGE_FILE).exists()
    space = space_fingerprint(spec)
    if exists and not resume:
        raise AiforgeError(
            "AF-SWEEP-003",
            f"'{spec.sweep_dir}' already holds a sweep",
            "continue it with --resume, or give this sweep another output_dir",
        )
    if resume and not exists:
        raise AiforgeError(
            "AF-SWEEP-003",
            f"nothing to resume: '{spec.sweep_dir}' holds no sweep ({STORAGE_FILE} is missing)",
            "run without --resume to start it, or point output_dir at the interrupted sweep",
        )
    storage = open_storage(spec.sweep_dir)
    if resume:
        study = optuna.load_study(
            study_name=STUDY_NAME,
            storage=storage,
            sampler=make_sampler(spec),
            pruner=make_pruner(spec.pruning),
        )
        if study.user_attrs.get("space") != space:
            raise AiforgeError(
                "AF-SWEEP-003",
                f"the sweep in '{spec.sweep_dir}' searched another space (method, parameters or metric)",
                "resume with the sweep file it started with, or give the changed sweep another output_dir",
            )
        return study
    study = optuna.create_study(
        study_name=STUDY_NAME,
        storage=storage,
        direction=direction,
        sampler=make_sampler(spec),
        pruner=make_pruner(spec.pruning),
    )
    study.set_user_attr("space", space)
    if spec.method == "grid":  # in the file's order, so trial-000 is the first combination
        import itertools

        grid = spec.grid()
        for combination in itertools.product(*(choices_of(values) for values in grid.values())):
            study.enqueue_trial(dict(zip(grid, combination, strict=True)))
    return study


def space_fingerprint(spec: SweepSpec) -> str:
    return json.dumps(
        {
            "method": spec.method,
            "metric": spec.metric,
            "parameters": {
                k: v.model_dump() if isinstance(v, Range) else v for k, v in spec.parameters.items()
            },
        },
        sort_keys=True,
        default=str,
    )


def make_sampler(spec: SweepSpec) -> Any:
    import optuna

    if spec.method == "tpe":
        return optuna.samplers.TPESampler(seed=spec.seed)
    return optuna.samplers.RandomSampler(seed=spec.seed)  # grid: every trial is enqueued, nothing sampled


# ---- trials -----------------------------------------------------------------------------------------------
def choices_of(space: list[Any] | Range) -> list[Any]:
    """Values as Optuna stores categorical choices: None, bool, int, float or str. Anything else (a list,
    e.g. ``training.freeze: [[], [embeddings]]``) is stored as its JSON text and decoded in the trial."""
    return [
        v if v is None or isinstance(v, bool | int | float | str) else json.dumps(v) for v in values_of(space)
    ]


def suggest(trial: Any, path: str, space: list[Any] | Range, method: str) -> Any:
    if isinstance(space, list) or method == "grid":
        choices = choices_of(space)
        picked = trial.suggest_categorical(path, choices)
        values = values_of(space)
        return values[choices.index(picked)]
    if space.integer:
        return trial.suggest_int(
            path, int(space.low), int(space.high), step=int(space.step or 1), log=space.log
        )
    return trial.suggest_float(path, space.low, space.high, step=space.step, log=space.log)


def ask(search: Search, parent_run_id: str | None) -> tuple[Any, TrialJob]:
    spec = search.spec
    trial = search.study.ask()
    params = {path: suggest(trial, path, space, spec.method) for path, space in spec.parameters.items()}
    config = trial_config(spec, params, trial.number, parent_run_id)
    resume_dir = trial.user_attrs.get("resume_dir")
    resume = bool(resume_dir) and (Path(resume_dir) / "checkpoints").exists()
    if resume:  # the interrupted trial's own dir: its checkpoint and MLflow run continue
        config = config.model_copy(update={"output_dir": resume_dir})
    trial.set_user_attr("output_dir", config.output_dir)
    job = TrialJob(
        trial.number,
        trial._trial_id,  # Optuna has no public accessor; Trial(study, id) in the worker needs it
        params,
        config.model_dump(mode="json"),
        search.metric,
        str(spec.sweep_dir),
        STUDY_NAME,
        spec.pruning.model_dump() if spec.pruning.enabled else None,
        resume,
    )
    return trial, job


def tell(study: Any, trial: Any, outcome: TrialOutcome) -> None:
    from optuna.trial import TrialState

    for key in ("value", "seconds", "steps", "examples", "parameters", "run_id", "error"):
        trial.set_user_attr(key, getattr(outcome, key))
    if outcome.state == "complete":
        study.tell(trial, outcome.value)
    elif outcome.state == "pruned":
        study.tell(trial, state=TrialState.PRUNED)
    else:
        study.tell(trial, state=TrialState.FAIL)


def counted(study: Any) -> int:
    """Trials that used up the budget: finished ones, not those an interruption cut short."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not t.user_attrs.get("interrupted")
    )


def any_finished(study: Any) -> bool:
    from optuna.trial import TrialState

    states = (TrialState.COMPLETE, TrialState.PRUNED)
    return any(t.state in states for t in study.get_trials(deepcopy=False))


def first_failure(outcome: TrialOutcome) -> AiforgeError:
    error = outcome.error
    return AiforgeError(
        error.get("code", "AF-SWEEP-004"),
        f"the first trial failed, so the sweep stopped: {error.get('message', '')}",
        error.get("fix", ""),
    )


def requeue_interrupted(study: Any) -> None:
    """Trials left RUNNING by a killed sweep: mark them failed (interrupted) and queue their values
    again, pointing at their output dir so the new trial resumes from its checkpoint."""
    from optuna.trial import TrialState

    for stale in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        study._storage.set_trial_user_attr(stale._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(stale._trial_id, TrialState.FAIL)
        study.enqueue_trial(
            stale.params,
            user_attrs={"resume_dir": stale.user_attrs.get("output_dir", "")},
            skip_if_exists=False,
        )
        log.info("trial %d was interrupted: it runs again from its last checkpoint", stale.number)


# ---- MLflow: the sweep's parent run -------------------------------------------------------------------
class SweepTracker:
    """The sweep's own MLflow run: its search space as params, the trials nested under it, the table
    and plots as artifacts, the best trial's values as metrics. Off when the training config has
    ``tracking.enabled: false``; never raises (:class:`aiforge.registry.RunLogger`)."""

    def __init__(self, spec: SweepSpec, base: Any, study: Any) -> None:
        self.logger: Any = None
        self.run_id: str | None = None
        self.tracking_uri = base.tracking.tracking_uri
        if not base.tracking.enabled:
            return
        from aiforge.registry import RunLogger

        self.logger = RunLogger(spec.sweep_dir, base.tracking.tracking_uri, base.tracking.experiment)
        previous = study.user_attrs.get("mlflow_run_id")
        tags = {"aiforge.sweep": spec.method, "aiforge.task": base.task}
        self.run_id = self.logger.start(spec.name or spec.sweep_dir.name, tags, run_id=previous)
        if previous is None and self.run_id is not None:
            study.set_user_attr("mlflow_run_id", self.run_id)
            params = {
                "method": spec.method,
                "trials": spec.n_trials(),
                "metric": spec.metric,
                "direction": spec.direction,
                "train": spec.train if isinstance(spec.train, str) else "inline",
                **{f"space.{path}": space for path, space in spec.parameters.items()},
            }
            self.logger.log_params(params)

    def tag_trial(self, outcome: TrialOutcome) -> None:
        if self.logger is None or not outcome.run_id:
            return
        from aiforge.registry import client

        try:
            mlflow_client = client(self.tracking_uri)
            mlflow_client.set_tag(outcome.run_id, "aiforge.sweep.trial", str(outcome.number))
            mlflow_client.set_tag(outcome.run_id, "aiforge.sweep.state", outcome.state)
        except Exception as exc:  # noqa: BLE001 - tags are a convenience; the trial itself is logged
            log.warning("[AF-TRACK-001] could not tag trial %d's run: %s", outcome.number, exc)

    def close(self, result: SweepResult) -> None:
        if self.logger is None:
            return
        best = result.best
        if best is not None:
            self.logger.log_metrics({f"best_{result.metric}": best["value"], "best_trial": best["trial"]}, 0)
            self.logger.set_tags({"aiforge.sweep.best_run": str(best.get("run_id") or "")})
        counts = result.counts()
        self.logger.log_metrics({f"trials_{state}": n for state, n in counts.items()}, 0)
        for path in result.artifacts:
            where = Path(path).parent.relative_to(result.sweep_dir)  # plots/ stays a folder
            self.logger.log_artifact(Path(path), str(Path("sweep") / where).removesuffix("/."))
        self.finish("FINISHED")

    def finish(self, status: str) -> None:
        if self.logger is not None:
            self.logger.finish(status)
