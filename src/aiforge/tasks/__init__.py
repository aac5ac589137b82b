"""Tasks: one name resolves to one card (``tasks/card.py``), one Pipeline class and one default model.

Each task module registers its card with ``@register_task``; the modules import torch and
transformers lazily, so listing tasks imports no ML library. ``load_pipeline`` is the one way to get
a ready pipeline: the CLI, the server, Ray and the Python API all call it.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, ModelRef, damaged_weights, hub_cached, load_error, resolve
from aiforge.tasks.card import (
    DemoView,
    TaskCard,
    Trainer,
    get_task,
    is_task_name,
    register_runtime,
    register_task,
    requested_runtime,
    task_aliases,
    task_cards,
)

if TYPE_CHECKING:
    from aiforge.tasks.base import Pipeline

__all__ = [
    "DemoView",
    "TaskCard",
    "Trainer",
    "default_model_ref",
    "default_status",
    "get_task",
    "is_task_name",
    "load_pipeline",
    "pick_model",
    "register_runtime",
    "register_task",
    "task_aliases",
    "task_cards",
]


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers; false fast when offline mode is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _available_offline(ref: str, task: str) -> bool:
    """Whether a packaged model is installed, or a registry reference resolves, right now."""
    if ref.startswith("registry:"):
        try:
            resolve(ref, task)
            return True
        except AiforgeError:
            return False
    packaged = PACKAGED.get(ref.removeprefix("packaged:"))
    return packaged is not None and packaged.available()


def _hub_cached(ref: str | None) -> bool:
    return ref is not None and not ref.startswith("timm:") and hub_cached(ref)


def pick_model(task: str, hub: str | None, offline: Sequence[str], prefer_download: bool = False) -> str:
    """The one default-model policy, for `run`/`serve` (a task's card) and `train` (``model: auto``).

    A hub model already in the cache wins; then an installed offline model (a packaged or registered
    one needs no download), then the hub when it answers. ``prefer_download`` puts a reachable hub
    before the installed models: training does, because its hub backbone (klue/roberta-small) is the
    better Korean encoder and one download is small next to an hour of training. With nothing
    available, the offline name comes first so that resolving it says which package to install.
    """
    installed = [ref for ref in offline if _available_offline(ref, task)]
    online = bool(hub) and hub_reachable()
    if _hub_cached(hub) or (prefer_download and online):
        return hub  # type: ignore[return-value]
    if installed:
        return installed[0]
    if online:
        return hub  # type: ignore[return-value]
    if offline:
        return offline[0]
    if hub:
        return hub  # resolve()/load will say it is not available offline
    raise AiforgeError("AF-MODEL-001", f"task '{task}' has no default model", "pass --model")


def default_model_ref(card: TaskCard) -> str:
    """The model `aiforge run TASK` and `aiforge serve TASK` use when none is given."""
    offline = (card.offline_default,) if card.offline_default else ()
    return pick_model(card.name, card.hub_default, offline)


def default_status(card: TaskCard) -> dict[str, Any]:
    """For `aiforge models`: the defaults of a task and whether each works offline now."""
    available = bool(card.offline_default) and _available_offline(card.offline_default, card.name)  # type: ignore[arg-type]
    return {
        "task": card.name,
        "hub_default": card.hub_default,
        "hub_cached": _hub_cached(card.hub_default),
        "offline_default": card.offline_default,
        "offline_available": available,
        **({"offline_build": card.offline_build} if card.offline_build and not available else {}),
        **(
            {
                "offline_engines": [
                    {"inputs": inputs, "model": name, "installed": _available_offline(name, card.name)}
                    for inputs, name in card.offline_engines
                ]
            }
            if card.offline_engines
            else {}
        ),
    }


def quiet_libraries() -> None:
    """Library progress bars and load reports drown aiforge's own output; keep warnings and errors."""
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def load_pipeline(task: str, model: str | None = None, device: str = "auto", **params: Any) -> Pipeline:
    """The one way to get a ready pipeline: used by the CLI, the server and the Python API.

    ``task`` is a task name or alias (``aiforge tasks``); ``model`` a path, hub id, ``packaged:NAME``
    or ``registry:NAME@ALIAS`` (None: the task's default); ``device`` auto, cpu, cuda, cuda:N or mps;
    ``params`` the task's parameters (``top_k=3``), validated by its ``Params``; ``runtime="onnx"``
    and/or ``precision="int8"|"fp32"`` run an encoder task on ONNX Runtime (``tasks/onnxrt.py``).
    The weights are loaded on return: ``pipe.predict(items)`` runs a list, ``pipe.stream(iterable)``
    any number of items in input order (an input that fails gets an ``{"error": ...}`` record in its
    place), and ``pipe(item)`` runs one (and raises what failed).
    """
    card = get_task(task)
    quiet_libraries()
    ref: ModelRef = resolve(model or default_model_ref(card), card.name)
    pipeline_class = card.pipeline_for(ref.format, requested_runtime(params))
    try:
        pipe = pipeline_class(ref, device=pipeline_class.resolve_device(device), **params)
        pipe.ensure_setup()
    except AiforgeError:
        raise
    except ImportError as exc:  # task modules import their libraries when a model loads
        raise AiforgeError(
            "AF-DEP-001",
            f"task '{card.name}' needs a package that is not installed ({exc.name or exc})",
            f'pip install "aiforge[{card.extra}]"',
        ) from exc
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        # hub unreachable, wrong architecture for the task, corrupt weights: say which and what to do
        raise load_error(ref, card.name, exc) from exc
    except Exception as exc:  # safetensors' own error for a file cut short derives from Exception only
        damaged = damaged_weights(ref, exc)
        if damaged is None:
            raise
        raise damaged from exc
    return pipe
