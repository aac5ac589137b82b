"""Import a heavy module on first use, so modules that only declare things stay cheap to import.

Task modules declare their cards and schemas at import time, and ``aiforge tasks`` or ``aiforge serve``
read those without loading torch (about 1.5 s) or transformers (about 2 s more). They write::

    if TYPE_CHECKING:
        import torch
    else:
        torch = lazy_module("torch")

The proxy imports the real module on the first attribute access, then copies its namespace into
itself, so later accesses are ordinary module attribute lookups (no per-call cost on the hot path).
Nothing is put in ``sys.modules`` until the real import happens: ``"torch" in sys.modules`` keeps
meaning "torch was loaded".
"""

from __future__ import annotations

import importlib
import types
from typing import Any


class _LazyModule(types.ModuleType):
    def __getattr__(self, name: str) -> Any:
        real = importlib.import_module(self.__name__)
        # after this, attributes resolve without __getattr__; names the real module creates later
        # (torch's own lazily loaded submodules) still arrive through here
        self.__dict__.update({k: v for k, v in real.__dict__.items() if k not in ("__name__", "__spec__")})
        return getattr(real, name)


def lazy_module(name: str) -> Any:
    """A stand-in for ``import name`` that imports on first attribute access."""
    return _LazyModule(name)
