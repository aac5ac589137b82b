"""Task cards: everything the rest of aiforge needs to know about a task, declared where the task lives.

A task is one Pipeline class in one module under ``aiforge/tasks/``, decorated with its card::

    @register_task(
        "text-classification",
        summary="label a text (sentiment, topic...)",
        hub_default="org/model",
        offline_default="packaged:NAME",
        request_params=("top_k",),
        demo=DemoView("text", "label"),
    )
    class TextClassification(Pipeline): ...

The CLI (``aiforge tasks``, ``run``), the server (per-request parameters, warm-up, the OpenAI routes,
task inference from a model directory), the demo page and training read the cards; nothing else
keeps a per-task table. Task modules import torch and transformers lazily (``aiforge.lazy``), so
listing the cards imports no ML library.

Discovery is explicit and cheap: every public module in the ``aiforge.tasks`` package (names not
starting with ``_``), then the modules other packages declare under the ``aiforge.tasks`` entry-point
group (a plug-in task is a module of its own, registered the same way).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.util
import logging
import pkgutil
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from aiforge.errors import AiforgeError

if TYPE_CHECKING:
    from aiforge.tasks.base import Pipeline

log = logging.getLogger(__name__)

# What a demo tab asks for and how it shows the answer (serve/demo.py maps these to widgets).
DemoInput = Literal[
    "text",
    "text-labels",
    "question-context",
    "image",
    "image-click",
    "image-labels",
    "image-question",
    "audio",
]
DemoOutput = Literal["label", "entities", "answer", "text", "boxes", "masks", "audio", "vector", "json"]
# The OpenAI-compatible routes a task can back (serve/routes/openai.py).
OpenAIRoute = Literal["embeddings", "chat", "completions", "transcriptions", "speech"]
# What the training data's input column holds: text, or paths of media files.
TrainInput = Literal["text", "tokens", "image", "audio", "corpus", "qa", "chat"]
# corpus: plain text, no labels; chat: conversations (``messages``, or a prompt column beside a completion)


@dataclass(frozen=True)
class DemoView:
    """One demo tab: its input widgets and its output view."""

    input: DemoInput
    output: DemoOutput


@dataclass(frozen=True)
class Trainer:
    """How ``aiforge train`` adapts a pretrained model to this task.

    ``adapter`` is the ``module:Class`` of the training task (in ``aiforge.train``, imported only by
    training: tasks sit below train in the layers); ``backbones`` are what ``model: auto`` tries,
    the online default first, then the offline ones, best first. ``from_scratch`` is the trainer
    of a model built from a config (``model: {init: scratch}``) when it learns from other data.
    """

    adapter: str
    input: TrainInput = "text"
    backbones: tuple[str, ...] = ()
    from_scratch: Trainer | None = None


@dataclass(frozen=True)
class TaskCard:
    """Everything aiforge knows about one task. Read by ``aiforge tasks``, serve, the demo, training."""

    name: str
    pipeline: type[Pipeline]
    summary: str
    hub_default: str | None = None  # the model a user who is online gets
    offline_default: str | None = None  # packaged name (or registry ref) that works offline
    # The command that builds an offline default which is trained here rather than installed.
    offline_build: str | None = None
    # Which packaged model answers which inputs, when the offline default hands some to another
    # engine: (inputs, packaged name) pairs (ocr: Korean goes to tesseract-kor, the rest to rapidocr).
    offline_engines: tuple[tuple[str, str], ...] = ()
    extra: str = "ml"  # the aiforge extra the task needs
    # The libraries its models load with (import names), checked without importing them.
    requires: tuple[str, ...] = ("torch", "transformers")
    aliases: tuple[str, ...] = ()
    # Parameters a served request may set per call. Only the ones that change how one call runs:
    # the others are read when the model loads (max_length), change the shared model, or name
    # server paths, so a per-request value would be silently ignored or unsafe.
    request_params: tuple[str, ...] = ()
    # Sample input that exercises the whole path before a server reports ready, built from the
    # model's load-time params; returns None where no input is safe to invent.
    warmup: Callable[[dict[str, Any]], Any] | None = None
    demo: DemoView = DemoView("text", "json")
    trainer: Trainer | None = None
    # config.json architecture names (matched as suffixes, longest first) and model formats
    # (aiforge.models formats) that mean "this task", for `aiforge serve ./model` without a task.
    architectures: tuple[str, ...] = ()
    formats: tuple[str, ...] = ()
    openai: tuple[OpenAIRoute, ...] = ()
    # Tasks registered later in a module are listed after earlier ones; the order `aiforge tasks` shows.
    order: int = field(default=0, compare=False)

    def missing(self) -> list[str]:
        """The required libraries that are not installed (find_spec: nothing is imported)."""
        return [name for name in self.requires if importlib.util.find_spec(name) is None]

    def load_class(self) -> type[Pipeline]:
        """The Pipeline class, once the libraries it loads models with are known to be installed:
        a missing extra is reported before any model is resolved or downloaded."""
        missing = self.missing()
        if missing:
            raise AiforgeError(
                "AF-DEP-001",
                f"task '{self.name}' needs {', '.join(missing)}, which is not installed",
                f'pip install "aiforge[{self.extra}]"',
            )
        return self.pipeline

    def pipeline_for(self, model_format: str, runtime: str | None = None) -> type[Pipeline]:
        """The Pipeline class that runs models of this format: a runtime registered for the task and
        format (``register_runtime``: GGUF text generation on llama.cpp), else the card's own. A
        ``runtime`` asked for by name (``-p runtime=onnx``) is looked up the same way, under its name."""
        discover()
        if runtime in (None, "torch"):
            return _RUNTIMES.get((self.name, model_format), self.pipeline)
        chosen = _RUNTIMES.get((self.name, str(runtime)))
        if chosen is None:
            offered = sorted(task for task, key in _RUNTIMES if key == runtime)
            raise AiforgeError(
                "AF-INPUT-002",
                f"task '{self.name}' has no '{runtime}' runtime",
                f"drop -p runtime / precision; the {runtime} runtime runs {', '.join(offered) or 'no task'}",
            )
        return chosen

    def describe(self) -> dict[str, Any]:
        """The card as `aiforge tasks --json` prints it (schemas from the pipeline class)."""
        missing = self.missing()
        return {
            "task": self.name,
            "summary": self.summary,
            "aliases": list(self.aliases),
            "extra": self.extra,
            "hub_default": self.hub_default,
            "offline_default": self.offline_default,
            "trainable": self.trainer is not None,
            "request_params": list(self.request_params),
            **self.pipeline.describe(),
            **({"unavailable": f'pip install "aiforge[{self.extra}]"'} if missing else {}),
        }


LISTING_ORDER = ("text", "embeddings", "generation", "qa", "vision", "ocr", "audio")
_CARDS: dict[str, TaskCard] = {}
_ALIASES: dict[str, str] = {}
_RUNTIMES: dict[tuple[str, str], type[Pipeline]] = {}
_discovered = False

PipelineT = TypeVar("PipelineT", bound="type[Pipeline]")


def register_task(name: str, **card: Any) -> Callable[[PipelineT], PipelineT]:
    """Class decorator: register the decorated Pipeline under ``name`` with the card's fields."""

    def register(cls: PipelineT) -> PipelineT:
        new = TaskCard(name=name, pipeline=cls, order=len(_CARDS), **card)
        old = _CARDS.get(name)
        if old is not None and old.pipeline is not cls:
            raise AiforgeError(
                "AF-TASK-003",
                f"task '{name}' is registered twice ({_where(old.pipeline)} and {_where(cls)})",
                "give the new task another name",
            )
        for alias in new.aliases:
            if _ALIASES.get(alias, name) != name or alias in _CARDS:
                raise AiforgeError(
                    "AF-TASK-003", f"alias '{alias}' of task '{name}' is taken", "choose another alias"
                )
        _CARDS[name] = new
        _ALIASES.update(dict.fromkeys(new.aliases, name))
        cls.task = name
        return cls

    return register


def register_runtime(task: str, formats: tuple[str, ...]) -> Callable[[PipelineT], PipelineT]:
    """Class decorator: another Pipeline for an existing task, used for models of these formats
    (``aiforge.models`` formats). It keeps the task's card: name, defaults, request parameters, routes."""

    def register(cls: PipelineT) -> PipelineT:
        for model_format in formats:
            old = _RUNTIMES.get((task, model_format))
            if old is not None and old is not cls:
                raise AiforgeError(
                    "AF-TASK-002",
                    f"task '{task}' has two runtimes for format '{model_format}' "
                    f"({_where(old)} and {_where(cls)})",
                    "register one runtime per format",
                )
            _RUNTIMES[(task, model_format)] = cls
        cls.task = task
        return cls

    return register


def requested_runtime(params: dict[str, Any]) -> str | None:
    """The runtime the parameters ask for: ``runtime=onnx``, or a ``precision`` or ``onnx_recipe``
    (which only ONNX Runtime has)."""
    runtime = params.get("runtime")
    onnx_only = params.get("precision") is not None or params.get("onnx_recipe") is not None
    return "onnx" if runtime is None and onnx_only else runtime


def _where(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def discover() -> None:
    """Import every task module once (cheap: they import no ML library at module level)."""
    global _discovered
    if _discovered:
        return
    _discovered = True
    import aiforge.tasks as package

    names = [info.name for info in pkgutil.iter_modules(package.__path__) if not info.name.startswith("_")]
    # text first, media last: the order `aiforge tasks` lists them in
    for name in sorted(names, key=lambda n: (LISTING_ORDER.index(n) if n in LISTING_ORDER else 99, n)):
        _import_task_module(f"aiforge.tasks.{name}")
    for entry in metadata.entry_points(group="aiforge.tasks"):
        _import_task_module(entry.value)


def _import_task_module(module_name: str) -> None:
    if not module_name.startswith("aiforge."):
        try:
            importlib.import_module(module_name)
        except (ImportError, AiforgeError) as exc:
            # a plug-in whose own dependency is missing, or that takes a registered name: aiforge's
            # own tasks (and the other plug-ins) still list and run
            log.warning("task plug-in %s skipped: %s", module_name, exc)
        return
    importlib.import_module(module_name)  # aiforge's own task modules import only its base dependencies


def task_cards() -> list[TaskCard]:
    """Every registered task, in listing order."""
    discover()
    return sorted(_CARDS.values(), key=lambda card: card.order)


def task_aliases() -> dict[str, str]:
    """alias -> task name."""
    discover()
    return dict(_ALIASES)


def is_task_name(name: str) -> bool:
    discover()
    return name in _CARDS or name in _ALIASES


def get_task(name: str) -> TaskCard:
    """The card of a task name or alias; an unknown name lists the close ones."""
    discover()
    name = _ALIASES.get(name, name)
    if name in _CARDS:
        return _CARDS[name]
    close = difflib.get_close_matches(name, [*_CARDS, *_ALIASES], n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise AiforgeError("AF-TASK-001", f"unknown task '{name}'", f"{hint}`aiforge tasks` lists the tasks")


def task_for_architectures(architectures: list[str]) -> str | None:
    """The task whose card claims one of these config.json architectures (longest suffix wins:
    ``WhisperForConditionalGeneration`` is speech recognition before ``ForConditionalGeneration``
    is text-to-text)."""
    claims = sorted(
        ((suffix, card.name) for card in task_cards() for suffix in card.architectures),
        key=lambda claim: -len(claim[0]),
    )
    for suffix, task in claims:
        if any(arch.endswith(suffix) for arch in architectures):
            return task
    return None


def task_for_format(model_format: str) -> str | None:
    """The task a model format (sentence-transformers, ctranslate2, timm...) serves."""
    return next((card.name for card in task_cards() if model_format in card.formats), None)


def tasks_for_route(route: OpenAIRoute) -> tuple[str, ...]:
    """The tasks that can back one OpenAI-compatible route."""
    return tuple(card.name for card in task_cards() if route in card.openai)


def trainable_tasks() -> tuple[str, ...]:
    return tuple(card.name for card in task_cards() if card.trainer is not None)


# ---- warm-up inputs shared by several tasks (media ones live with their decoders) ----------------------
WARMUP_TEXT = "aiforge warm-up: 서버를 준비하고 있습니다."


def warm_text(params: dict[str, Any]) -> str:
    """A short Korean sentence: any text task's tokenizer and model run on it."""
    return WARMUP_TEXT
