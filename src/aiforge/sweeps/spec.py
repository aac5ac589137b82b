"""The sweep file: which training config, which fields to vary and how, and how to search.

``aiforge sweep sweep.yaml`` reads it with the one configuration grammar (:mod:`aiforge.config`):
field defaults < the file < ``AIFORGE_SWEEP_<KEY>`` variables < ``--set KEY=VALUE``. Every parameter
is a dotted path into the training config (``training.lr``, ``data.max_rows``, any field ``aiforge
train`` takes), so anything a train.yaml can say, a sweep can vary. Each trial's config is the base
config with the trial's values written at those paths, validated as ``aiforge train`` validates it;
the search space is checked against the training schema before the first trial starts.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aiforge.config import (
    Override,
    apply,
    build,
    env_overrides,
    merge,
    parse_sets,
    read_yaml_file,
    set_path,
)
from aiforge.errors import AiforgeError
from aiforge.train.config import TrainConfig, trainer_for

SWEEP_HINT = "see examples/nsmc-sweep.yaml, or README 'Sweeps', for a sweep file"
# Metrics where lower is better: `direction: auto` minimises these and maximises anything else.
LOWER_IS_BETTER = ("loss", "perplexity", "bits_per_char", "bpc", "ece", "cer", "wer", "error")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Range(Strict):
    """A numeric range: integers when ``low``, ``high`` (and ``step``) are all integers."""

    low: float = Field(description="smallest value tried")
    high: float = Field(description="largest value tried")
    log: bool = Field(default=False, description="sample on a log scale (learning rates, sizes)")
    step: float | None = Field(default=None, gt=0, description="only multiples of step above low")

    @model_validator(mode="after")
    def _ordered(self) -> Range:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low:g}) must be below high ({self.high:g})")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0 (got {self.low:g})")
        if self.log and self.step is not None:
            raise ValueError("log and step cannot be combined: drop one")
        return self

    @property
    def integer(self) -> bool:
        ends = [self.low, self.high] + ([self.step] if self.step is not None else [])
        return all(float(v).is_integer() for v in ends)


class Pruning(Strict):
    enabled: bool = Field(default=True, description="stop trials whose validation metric trails the median")
    startup_trials: int = Field(default=2, ge=0, description="trials that always run to the end first")
    warmup_evals: int = Field(default=1, ge=0, description="evaluations of a trial before it may be pruned")


class SweepSpec(Strict):
    train: str | dict[str, Any] = Field(
        description="the training config every trial starts from: a train.yaml path or its fields inline"
    )
    overrides: list[str] = Field(
        default_factory=list,
        description="KEY=VALUE changes to that config for every trial (training.epochs=1)",
    )
    parameters: dict[str, list[Any] | Range] = Field(
        description="training-config field (dotted path) -> a list of values, or {low, high, log, step}"
    )
    method: Literal["grid", "random", "tpe"] = Field(
        default="tpe", description="grid: every combination; random; tpe: Optuna's Bayesian sampler"
    )
    trials: int | None = Field(
        default=None, gt=0, description="trials to run (random and tpe); grid runs every combination"
    )
    metric: str = Field(
        default="auto", description="validation metric to optimise; auto: the one that picks the best model"
    )
    direction: Literal["auto", "maximize", "minimize"] = Field(
        default="auto", description="auto: minimise losses, perplexity, bits per char; maximise the rest"
    )
    output_dir: str = Field(default="runs/sweep", description="trials, the Optuna study, table and plots")
    name: str | None = Field(
        default=None, description="the sweep's MLflow run name; default: output dir name"
    )
    seed: int = Field(default=0, description="seeds the sampler (trials keep their own training.seed)")
    pruning: Pruning = Field(default_factory=Pruning)
    parallel: int = Field(default=2, gt=0, description="--backend ray: trials running at once")
    cpus_per_trial: float = Field(default=1, gt=0, description="--backend ray: CPUs each trial reserves")

    @model_validator(mode="after")
    def _searchable(self) -> SweepSpec:
        if not self.parameters:
            raise ValueError("parameters is empty: name at least one training field to vary")
        for path, space in self.parameters.items():
            if isinstance(space, list) and not space:
                raise ValueError(f"parameters.{path}: the list of values is empty")
            if self.method == "grid" and isinstance(space, Range) and space.step is None:
                raise ValueError(
                    f"parameters.{path}: grid search needs a list of values or a range with a step"
                )
        if self.method != "grid" and self.trials is None:
            raise ValueError(f"method {self.method} needs trials: N (how many to run)")
        return self

    @property
    def sweep_dir(self) -> Path:
        return Path(self.output_dir)

    def grid(self) -> dict[str, list[Any]]:
        """Every parameter as its list of values (grid search)."""
        return {path: values_of(space) for path, space in self.parameters.items()}

    def n_trials(self) -> int:
        """The trial budget: every grid combination, or ``trials``."""
        if self.method == "grid":
            return math.prod(len(values) for values in self.grid().values())
        assert self.trials is not None  # _searchable requires it
        return self.trials


def values_of(space: list[Any] | Range) -> list[Any]:
    """A list as given; a stepped range as its values (``{low: 1, high: 3, step: 1}`` -> 1, 2, 3)."""
    if isinstance(space, list):
        return space
    assert space.step is not None
    count = int(math.floor((space.high - space.low) / space.step + 1e-9)) + 1
    values = [space.low + i * space.step for i in range(count)]
    return [int(v) for v in values] if space.integer else [round(v, 12) for v in values]


def load_spec(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> SweepSpec:
    """The sweep file (or ``base``, its fields as a mapping) < ``AIFORGE_SWEEP_*`` < ``--set``; a bad
    file is AF-SWEEP-001 naming the field, then each parameter is checked against the training schema."""
    raw: dict[str, Any] = copy.deepcopy(base or {})
    try:
        if path is not None:
            raw = merge(raw, read_yaml_file(path, SWEEP_HINT))
        _apply_sweep_overrides(raw, env_overrides("sweep", environ))
        _apply_sweep_overrides(raw, parse_sets(overrides or [], example="trials=20"))
        where = f"sweep file '{path}'" if path else "sweep"
        spec = build(SweepSpec, raw, where, SWEEP_HINT)
    except AiforgeError as exc:
        raise AiforgeError("AF-SWEEP-001", exc.message, exc.fix) from None
    check_parameters(spec)
    return spec


def _apply_sweep_overrides(raw: dict[str, Any], overrides: list[Override]) -> None:
    """``--set`` on a sweep: a parameter's name is a dotted training-config path itself, so
    ``parameters.model.hidden=[64,128]`` sets the parameter ``model.hidden``, not a nested section."""
    for override in overrides:
        parts = override.parts
        if parts[0] == "parameters" and len(parts) > 2:
            parts = ["parameters", ".".join(parts[1:])]
        set_path(raw, parts, override, override.origin)


# ---- trial configs --------------------------------------------------------------------------------------
def base_tree(spec: SweepSpec) -> dict[str, Any]:
    """The training config every trial starts from, as an unvalidated tree: the file (or inline
    fields) < ``AIFORGE_TRAIN_*`` variables < the sweep's ``overrides``."""
    raw: dict[str, Any] = (
        copy.deepcopy(spec.train)
        if isinstance(spec.train, dict)
        else read_yaml_file(spec.train, "`aiforge train --init TASK > train.yaml` writes one")
    )
    apply(raw, env_overrides("train"))  # AIFORGE_TRAIN_* apply to trials as to `aiforge train`
    try:
        apply(raw, parse_sets(spec.overrides, flag="overrides:", example="training.epochs=1"))
    except AiforgeError as exc:
        raise AiforgeError("AF-SWEEP-001", exc.message, exc.fix) from None
    return raw


def trial_config(
    spec: SweepSpec, params: dict[str, Any], number: int, parent_run_id: str | None
) -> TrainConfig:
    """The training config of trial ``number``: the base config with ``params`` written at their paths,
    its own output dir, nested under the sweep's MLflow run, not registered (the sweep picks one)."""
    raw = base_tree(spec)
    for path, value in params.items():
        set_path(raw, path.split("."), value, f"parameters.{path}")
    forced = {
        "output_dir": str(spec.sweep_dir / trial_name(number)),
        "tracking.register_model": False,
        "tracking.alias": None,
        "tracking.run_name": f"{spec.name or spec.sweep_dir.name}-{trial_name(number)}",
        "tracking.parent_run_id": parent_run_id,
    }
    if spec.metric != "auto":  # the metric the sweep optimises also picks each trial's best model
        forced["training.metric"] = spec.metric
    for path, value in forced.items():
        set_path(raw, path.split("."), value)
    return build(TrainConfig, raw, f"trial {number}'s config", "")


def trial_name(number: int) -> str:
    return f"trial-{number:03d}"


def check_parameters(spec: SweepSpec) -> TrainConfig:
    """Build the training config at every end of every parameter's space (each list value, each range
    end), so a misspelt path or a value its field refuses fails now, naming the parameter, not trial 7.
    Returns the base config (the first values)."""
    first = {path: probe_values(space)[0] for path, space in spec.parameters.items()}
    try:
        config = trial_config(spec, first, 0, None)
    except AiforgeError as exc:
        bad = next((p for p in spec.parameters if p in exc.message), None)
        if bad is None:  # the base config itself is wrong, whatever the parameters say
            raise
        raise AiforgeError(
            "AF-SWEEP-002",
            f"parameter '{bad}' does not fit the training config: {detail(exc)}",
            f"{exc.fix}; parameters are dotted paths of `aiforge train` fields (training.lr, "
            "data.max_rows), written as in a train.yaml".lstrip("; "),
        ) from None
    for path, space in spec.parameters.items():
        for value in probe_values(space)[1:]:
            try:
                trial_config(spec, {**first, path: value}, 0, None)
            except AiforgeError as exc:
                raise AiforgeError(
                    "AF-SWEEP-002",
                    f"parameter '{path}': the value {value!r} is not valid there: {detail(exc)}",
                    f"change the values or range of {path}; {exc.fix}".rstrip("; "),
                ) from None
    return config


def detail(exc: AiforgeError) -> str:
    """An AF-CONFIG-001 message without its "invalid trial 0's config: " lead."""
    return exc.message.split(": ", 1)[1] if exc.message.startswith("invalid ") else exc.message


def probe_values(space: list[Any] | Range) -> list[Any]:
    if isinstance(space, list):
        return space
    low, high = (int(space.low), int(space.high)) if space.integer else (space.low, space.high)
    return [low, high]


Direction = Literal["maximize", "minimize"]


def resolve_metric(spec: SweepSpec, config: TrainConfig) -> tuple[str, Direction]:
    """(the validation metric to optimise, maximize | minimize)."""
    metric = spec.metric
    if metric == "auto":
        metric = config.training.metric
    if metric == "auto":  # the task's own: the adapter class declares it
        import importlib

        adapter = trainer_for(config).adapter
        module_name, _, class_name = adapter.partition(":")
        metric = getattr(getattr(importlib.import_module(module_name), class_name), "default_metric", "loss")
    if spec.direction != "auto":
        return metric, spec.direction
    return metric, "minimize" if any(word in metric for word in LOWER_IS_BETTER) else "maximize"
