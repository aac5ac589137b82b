"""aiforge, the applied-ML workbench: doctor, run, train, serve, RAG.

The Python API: each function is what the matching command runs (see :mod:`aiforge.api`)::

    import aiforge

    classify = aiforge.pipeline("text-classification", model="runs/nsmc-sentiment/model")
    classify.predict(["정말 재미있는 영화였어요"])           # aiforge run
    result = aiforge.train_model("train.yaml", sets=["training.epochs=1"])   # aiforge train
    sweep = aiforge.sweep("sweep.yaml", sets=["trials=8"])   # aiforge sweep: search over configs
    app = aiforge.serve_app(models=["sentence-embeddings"])  # aiforge serve, as a FastAPI app
    aiforge.ingest(["docs/"], index="manuals")               # aiforge rag ingest
    aiforge.ask("설치 방법은?", index="manuals")               # aiforge rag ask

``import aiforge`` stays light (no torch, transformers or FastAPI, so ``aiforge --help`` stays fast):
the functions are looked up on first use and import their libraries when they run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from aiforge.api import ask, ingest, pipeline, serve_app, sweep, train_model

__all__ = ["__version__", "ask", "ingest", "pipeline", "serve_app", "sweep", "train_model"]

_API = frozenset(__all__) - {"__version__"}


def __getattr__(name: str) -> Any:
    """Resolve a public API name on first access (PEP 562); submodules still import as usual."""
    if name not in _API:
        raise AttributeError(f"module 'aiforge' has no attribute '{name}'")
    value = getattr(importlib.import_module("aiforge.api"), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    """The public API and the module's dunders, not the helpers this file imports."""
    return sorted({*__all__, *(name for name in globals() if name.startswith("__"))})
