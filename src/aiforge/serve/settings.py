"""What `aiforge serve` runs: one typed settings object, filled from serve.yaml, model specs and flags.

Layering is ``defaults < serve.yaml < model specs on the command line < AIFORGE_SERVE_* variables <
flags < --set KEY=VALUE`` (the grammar of :mod:`aiforge.config`); a flag left unset changes nothing.
A flag is shorthand for its dotted key: ``--port`` is ``port``, ``--max-batch-size`` is
``models.max_batch_size``, which sets every served model (``models.NAME.max_batch_size`` sets one).

A model spec on the command line is ``[NAME=]TASK[:MODEL]`` or ``[NAME=]MODEL``::

    sentence-embeddings                       # the task's default model, named "sentence-embeddings"
    text-classification:./out/model          # a local model dir for a named task
    nsmc=registry:nsmc-sentiment@production   # a registry alias, served as "nsmc"
    ./out/model                               # the task is read from the model's config.json

The same fields in serve.yaml::

    host: 0.0.0.0
    port: 8000
    api_key_file: keys.txt
    models:
      - {name: nsmc, task: text-classification, model: "registry:nsmc-sentiment@production",
         max_batch_size: 16, max_wait_ms: 5, max_queue: 512, timeout_s: 10}
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from aiforge.config import build, env_overrides, parse_sets, read_yaml_file, set_path
from aiforge.errors import AiforgeError
from aiforge.serve.memory import TRIM_EVERY_S

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"


class ModelSettings(BaseModel):
    """One served model and its batching and admission limits."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN, description="URL name: /v1/models/{name}/predict")
    task: str = Field(description="a task of `aiforge tasks`")
    model: str | None = Field(
        None,
        description="path, hub id, packaged:NAME or registry:NAME@ALIAS; default: the task's default model",
    )
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N | mps")
    params: dict[str, Any] = Field(default_factory=dict, description="task parameters fixed at load time")
    request_params: list[str] | None = Field(
        None,
        description="task parameters a request may set; default: the task card's safe per-call ones "
        "(those that change how one call runs, not what loads: `aiforge tasks --json` lists them)",
    )
    max_batch_size: int | None = Field(
        None, ge=1, le=4096, description="most ITEMS in one forward pass; default: the task's batch size"
    )
    sort_window_batches: int = Field(
        4, ge=1, le=64, description="gather up to this many batches, sort them by length, then run them"
    )
    max_padding: float | Literal["auto"] | None = Field(
        "auto",
        description="cut a batch where padding tokens would exceed this fraction of its real tokens; "
        "auto: on CPU, where the model's measured cost (fixed per batch + per padded token) says the "
        "queued items finish soonest (0.25 until it is measured); no limit on GPUs; null: no limit",
    )
    max_wait_ms: float = Field(5.0, ge=0, le=60_000, description="longest an item waits for a batch to fill")
    workers: Annotated[int, Field(ge=1, le=64)] | Literal["auto"] = Field(
        "auto",
        description="inference threads running batches side by side; on CPU each gets an equal share "
        "of torch's threads. auto: on CPU one per torch thread (each with one) for models whose "
        "forward is a pure model call (text encoders), else 1",
    )
    max_queue: int = Field(1024, ge=1, description="most items waiting; beyond it requests get 429")
    timeout_s: float = Field(30.0, gt=0, description="a request still unanswered after this gets 504")
    warmup: bool = Field(True, description="run one sample input before reporting ready")

    @field_validator("task")
    @classmethod
    def _known_task(cls, value: str) -> str:
        from aiforge.tasks import get_task

        try:
            return get_task(value).name
        except AiforgeError as exc:
            raise exc.as_value_error() from None

    @field_validator("max_padding")
    @classmethod
    def _padding_not_negative(cls, value: float | str | None) -> float | str | None:
        if isinstance(value, float) and value < 0:
            raise ValueError("max_padding must be >= 0 (0: only equal lengths share a batch)")
        return value

    @model_validator(mode="after")
    def _default_request_params(self) -> ModelSettings:
        if self.request_params is None:
            from aiforge.tasks import get_task

            self.request_params = list(get_task(self.task).request_params)
        return self


class ServeSettings(BaseModel):
    """The whole server: listening address, security limits and the models."""

    model_config = ConfigDict(extra="forbid")

    models: list[ModelSettings] = Field(min_length=1, description="the served models")
    host: str = Field("127.0.0.1", description="bind address; 0.0.0.0 listens on every interface")
    port: int = Field(8000, ge=0, le=65535, description="0 picks a free port")
    api_key_file: Path | None = Field(
        None,
        description="one API key per line ('#' comments); when set, every route but /healthz "
        "needs 'Authorization: Bearer KEY'. After a key: 'scope=admin' (needed for /admin/*) and "
        "'rate=N/min' (per-key limit, 429 with Retry-After)",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="browser origins allowed to call the API from their pages, e.g. "
        "['https://app.example.com'] ('*' for any); empty (the default): no CORS headers, so "
        "browsers refuse cross-origin calls",
    )
    max_body_bytes: int = Field(25 * 2**20, ge=1024, description="larger request bodies get 413")
    demo: bool = Field(True, description="mount the Gradio demo page at /demo")
    allow_local_paths: bool = Field(
        False, description="let JSON inputs name files on the server (off: media must be uploaded or base64)"
    )
    reload_poll_s: float | None = Field(
        None, gt=0, description="re-resolve registry aliases this often and hot-swap moved ones"
    )
    drain_timeout_s: float = Field(
        30.0, ge=0, description="on shutdown, wait this long for in-flight requests"
    )
    share_cores: bool = Field(
        True,
        description="models whose workers run one torch thread take turns on the CPU cores: at most one "
        "forward pass per core at a time, across models (false: each model's workers run regardless)",
    )
    freeze_heap: bool = Field(
        True,
        description="once the models are loaded (and after a hot swap), freeze the objects alive then so "
        "the garbage collector's full passes skip them (gc.freeze: 111 ms -> under 1 ms per pass)",
    )
    malloc_trim_s: float = Field(
        TRIM_EVERY_S, ge=0, description="hand freed memory back to the system this often (glibc; 0: never)"
    )
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_json: bool = Field(True, description="one JSON object per log line (with the request id)")

    @field_validator("api_key_file")
    @classmethod
    def _key_file_readable(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"api_key_file '{value}' does not exist")
        return value

    @model_validator(mode="after")
    def _unique_names(self) -> ServeSettings:
        names = [m.name for m in self.models]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(
                f"model names must be unique, repeated: {', '.join(duplicates)}; "
                "name them with NAME=TASK:MODEL or 'name:' in serve.yaml"
            )
        return self

    def model(self, name: str) -> ModelSettings:
        return next(m for m in self.models if m.name == name)


# ---- building settings from the command line ---------------------------------------------------------
CONFIG_FIX = "fix the value in serve.yaml or on the command line (`aiforge serve --help`)"


def load_settings(
    config: str | Path | None = None,
    models: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
    sets: Sequence[str] = (),
    environ: Mapping[str, str] | None = None,
) -> ServeSettings:
    """serve.yaml (optional) + model specs + ``AIFORGE_SERVE_*`` + ``overrides`` + ``sets`` ->
    validated :class:`ServeSettings` (later layers win; see :mod:`aiforge.config`).

    ``overrides`` holds typed values by dotted key (the CLI's flags: ``{"port": 9000,
    "models.max_batch_size": 16}``; None means "not given"); ``sets`` holds ``--set KEY=VALUE``
    strings. A ``models.FIELD`` key sets that field of every served model, ``models.NAME.FIELD`` of
    the model named NAME. Raises AiforgeError (AF-CONFIG-001) naming the bad field and value.
    """
    data: dict[str, Any] = read_config(config) if config else {}
    if models:
        data["models"] = [*data.get("models", []), *(parse_model_spec(spec) for spec in models)]
    for override in env_overrides("serve", environ):
        _set(data, override.parts, override, override.origin)
    for key, value in (overrides or {}).items():
        if value is not None:
            _set(data, key.split("."), value, key)
    for override in parse_sets(sets, example="models.max_batch_size=16"):
        _set(data, override.parts, override, override.origin)
    return build(ServeSettings, data, "serve settings", CONFIG_FIX)


def _set(data: dict[str, Any], parts: list[str], value: Any, origin: str) -> None:
    """Write one override: ``models.FIELD`` into every served model, ``models.NAME.FIELD`` into one."""
    if parts[0] != "models" or len(parts) < 2:
        set_path(data, parts, value, origin)
        return
    served = [m for m in data.get("models") or [] if isinstance(m, dict)]
    if parts[1] in ModelSettings.model_fields:
        targets, field_path = served, parts[1:]
    else:
        targets, field_path = [m for m in served if m.get("name") == parts[1]], parts[2:]
    if not targets or not field_path:
        names = [str(m.get("name")) for m in served]
        close = difflib.get_close_matches(parts[1], [*ModelSettings.model_fields, *names], n=1, cutoff=0.6)
        raise AiforgeError(
            "AF-CONFIG-001",
            f"{origin}: '{parts[1]}' is neither a model field nor a served model's name"
            + (f"; did you mean 'models.{close[0]}'?" if close else ""),
            f"models.FIELD sets every model (fields: {', '.join(ModelSettings.model_fields)}); "
            f"models.NAME.FIELD one model (served: {', '.join(names) or 'none'})",
        )
    for model in targets:
        set_path(model, field_path, value, origin)


def read_config(path: str | Path) -> dict[str, Any]:
    """A serve.yaml file -> its mapping; a missing file or bad YAML is an AF-CONFIG-001 error."""
    return read_yaml_file(path, "a serve.yaml holds a 'models' list; see `aiforge serve --help`")


def is_config_file(arg: str) -> bool:
    """Whether a positional argument of `aiforge serve` is a serve.yaml rather than a model spec."""
    return arg.lower().endswith((".yaml", ".yml"))


def parse_model_spec(spec: str) -> dict[str, Any]:
    """``[NAME=]TASK[:MODEL]`` or ``[NAME=]MODEL`` -> a ModelSettings mapping (see the module doc)."""
    from aiforge.tasks import is_task_name

    name, sep, rest = spec.partition("=")
    if not sep or not re.match(NAME_PATTERN, name):
        name, rest = "", spec
    head, colon, tail = rest.partition(":")
    if is_task_name(head):
        task, model = head, (tail or None)
    else:
        _refuse_task_typo(rest)
        task, model = infer_task(rest), rest
    return {"name": name or default_name(task, model), "task": task, "model": model}


def _refuse_task_typo(spec: str) -> None:
    """'text-clasification' is a misspelt task, not a hub id: say so (with the suggestion)."""
    from aiforge.tasks import get_task, task_aliases, task_cards

    names = [*(card.name for card in task_cards()), *task_aliases()]
    looks_like_task = "/" not in spec and ":" not in spec and not Path(spec).exists()
    if looks_like_task and difflib.get_close_matches(spec, names, n=1, cutoff=0.8):
        get_task(spec)  # raises AF-TASK-001 with "did you mean ..."


def default_name(task: str, model: str | None) -> str:
    """A URL-safe name: the registry name, packaged name or directory name; else the task."""
    if not model:
        return task
    if model.startswith("registry:"):
        base = re.split(r"[@/]", model.removeprefix("registry:"))[0]
    else:
        base = Path(model.removeprefix("packaged:").removeprefix("timm:").rstrip("/")).name
    cleaned = re.sub(r"[^A-Za-z0-9._-]", "-", base).strip("-.")[:64]
    return cleaned or task


def infer_task(model: str) -> str:
    """The task a model reference serves: from the packaged model's tasks, the format, or config.json
    (the task cards claim formats and architectures)."""
    from aiforge.models import resolve
    from aiforge.tasks.card import task_for_architectures, task_for_format

    ref = resolve(model)
    if ref.packaged is not None:
        return ref.packaged.tasks[0]
    task = task_for_format(ref.format) if ref.format else None
    if task is not None:
        return task
    config = ref.path / "config.json" if ref.path is not None else None
    architectures: list[str] = []
    if config is not None and config.is_file():
        architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    task = task_for_architectures(architectures)
    if task is not None:
        return task
    raise AiforgeError(
        "AF-CONFIG-001",
        f"cannot tell which task model '{model}' serves (architectures: {architectures or 'unknown'})",
        f"name the task: aiforge serve TASK:{model} (e.g. text-classification:{model}); see `aiforge tasks`",
    )
