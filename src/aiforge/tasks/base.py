"""The Pipeline contract every task implements.

Lifecycle, one screen to read::

    pipe = TextClassification(model_ref, device="cpu", top_k=2)
    pipe.setup()                       # load weights once
    feats = pipe.preprocess(item)      # one validated input -> model features (no torch on the hot path)
    raws  = pipe.forward([feats, ...]) # ALWAYS a list in, a list out, whatever the batch size
    out   = pipe.postprocess(raw, item)  # one raw output -> one JSON-ready dict

Callers never drive these steps by hand: ``pipe.predict(items)`` runs a list, ``pipe.stream(iterable)``
runs any number of items with length-bucketed batches and yields results in input order. The CLI,
the server's batcher, the demo page and the Python API all go through these same methods.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import PurePath
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from aiforge.config import describe_errors
from aiforge.errors import AiforgeError
from aiforge.models import ModelRef
from aiforge.tasks.execute import ItemError, is_error, run_batch

log = logging.getLogger(__name__)


# Characters kept per token of a model's window before tokenising. Tokenising a 200,000-character
# text is itself the slow step (the tokenizer reads it all, then truncation drops most of it), so
# text is cut by characters first. Real text averages 1.5-5 characters per token (Korean to
# English); 16 leaves room for runs of spaces, URLs and other long tokens, and the tokenizer's own
# truncation then cuts at the exact token.
CHARS_PER_TOKEN = 16


def cut_to_window(text: str, max_tokens: int) -> tuple[str, bool]:
    """``text`` cut to the characters a ``max_tokens`` window can hold at most, and whether it was cut."""
    limit = max_tokens * CHARS_PER_TOKEN
    return (text, False) if len(text) <= limit else (text[:limit], True)


class TaskInput(BaseModel):
    """Base of every task's input record; unknown fields are an error, not silently ignored."""

    model_config = ConfigDict(extra="forbid")


class TaskParams(BaseModel):
    """Base of every task's per-call parameters (top_k, max_new_tokens, ...)."""

    model_config = ConfigDict(extra="forbid")


class NoParams(TaskParams):
    pass


class RuntimeParams(TaskParams):
    """Which runtime runs a task that has a second one (the encoder tasks: ``tasks/onnxrt.py``)."""

    runtime: Literal["torch", "onnx"] | None = Field(
        default=None,
        description="torch, or onnx (ONNX Runtime, int8 by default: ~2x the CPU throughput); default torch",
    )
    precision: Literal["fp32", "int8"] | None = Field(
        default=None,
        description="ONNX Runtime precision (implies runtime=onnx); default int8 unless `aiforge "
        "quantize` found it loses too much on this model",
    )
    onnx_recipe: Literal["plain", "per-channel", "fused", "fused-per-channel"] | None = Field(
        default=None,
        description="how the ONNX model is built (implies runtime=onnx): plain export, per-channel "
        "(plain with one int8 scale per weight column), fused (ONNX Runtime's transformer optimizer on "
        "BERT-family encoders), or fused with per-channel weights; default: the measured best "
        "(tasks/onnxrt.py DEFAULT_RECIPE)",
    )


def resolve_device(device: str = "auto") -> str:
    """'auto' -> cuda, mps or cpu; an explicit device that is missing is an error with a fix."""
    import torch

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise AiforgeError(
            "AF-DEVICE-001",
            f"device '{device}' requested but torch sees no CUDA GPU (torch {torch.__version__})",
            "run `aiforge doctor` to see why, or use --device cpu",
        )
    if device == "mps" and not (torch.backends.mps.is_available()):
        raise AiforgeError(
            "AF-DEVICE-001", "device 'mps' requested but MPS is not available", "use --device cpu"
        )
    return device


MEDIA_FIELDS = ("image", "audio")


class Pipeline(ABC):
    """One task over one model. Subclasses fill in the class attributes and four methods."""

    task: ClassVar[str]
    Input: ClassVar[type[TaskInput]]
    Output: ClassVar[type[BaseModel]]
    Params: ClassVar[type[TaskParams]] = NoParams
    backend: ClassVar[str] = "transformers"
    # The field a bare string input fills ("text", "image", "audio"); None means a record is required.
    primary_field: ClassVar[str | None] = "text"
    default_batch_size: ClassVar[int] = 8
    # Length-sort items within this many batches before batching; 1 keeps arrival order.
    sort_window_batches: ClassVar[int] = 16
    # What runs the model and at which precision, once loaded (the x-aiforge-runtime header); None
    # where the task does not say (its backend names it).
    runtime: str | None = None
    precision: str | None = None

    def __init__(self, model: ModelRef, device: str = "cpu", **params: Any) -> None:
        self.model_ref = model
        self.device = device
        self.params = self.parse_params(params)
        self._ready = False
        # one pool per width, kept: callers with different torch thread counts (rare) each reuse theirs
        self._forward_pools: dict[int, ThreadPoolExecutor] = {}

    # ---- the contract -------------------------------------------------------------------------
    @abstractmethod
    def setup(self) -> None:
        """Load weights onto ``self.device``. Called once, before the first preprocess."""

    @abstractmethod
    def preprocess(self, item: TaskInput) -> Any:
        """One validated input -> features for ``forward`` (tokens, pixel arrays, audio samples)."""

    @abstractmethod
    def forward(self, batch: list[Any]) -> list[Any]:
        """A list of features -> a list of raw outputs, one per feature, same order."""

    @abstractmethod
    def postprocess(self, raw: Any, item: TaskInput) -> dict[str, Any]:
        """One raw output -> one JSON-ready dict matching ``Output``."""

    def choose_forward(self) -> None:  # noqa: B027 (a hook: most tasks have one way to run)
        """Called at the end of ``setup``, once the weights are loaded: pick how forward runs
        (sequence packing, another runtime such as ONNX Runtime: ``tasks/onnxrt.py``)."""

    def runtime_label(self) -> str | None:
        """``runtime/precision`` (``onnx/int8``), what the x-aiforge-runtime header says."""
        return f"{self.runtime}/{self.precision}" if self.runtime and self.precision else None

    def length(self, features: Any) -> int:
        """Cost proxy used to bucket similar-length items into one batch (tokens, samples...)."""
        return 1

    # Whether forward packs items of different lengths without padding (then batches need no sorting
    # or cutting by length; see tasks/packing.py).
    packs: bool = False
    # Whether forward may run in several threads at once: a pure model call that keeps no state
    # between batches (the server then runs one inference thread per CPU core, see serve/batcher.py).
    concurrent_forward: ClassVar[bool] = False

    def batch_units(self, lengths: list[int]) -> int:
        """The size of one forward pass over items of these lengths, in the units whose cost the
        server's batcher fits: the padded size (items x longest) unless the pipeline packs."""
        return len(lengths) * max(lengths, default=0)

    # ---- helpers subclasses may use ---------------------------------------------------------------
    @classmethod
    def resolve_device(cls, device: str) -> str:
        """The device this pipeline runs on, from the user's choice ('auto', 'cpu', 'cuda:1'...).
        A runtime that does not run on torch overrides it, so loading it never imports torch."""
        return resolve_device(device)

    @classmethod
    def parse_params(cls, params: dict[str, Any]) -> TaskParams:
        try:
            return cls.Params(**{k: v for k, v in params.items() if v is not None})
        except ValidationError as exc:
            raise AiforgeError(
                "AF-INPUT-002",
                f"invalid parameters for task '{cls.task}': {describe_errors(exc, cls.Params)}",
                f"valid parameters: {', '.join(cls.Params.model_fields) or 'none'}",
            ) from None

    @classmethod
    def parse_input(cls, raw: Any) -> TaskInput:
        """A bare string, or a dict record (JSONL / CSV row / HTTP body) -> the task's Input model."""
        if isinstance(raw, cls.Input):
            return raw
        if isinstance(raw, AiforgeError):  # a record that already failed to read (bad JSON line)
            raise raw
        if isinstance(raw, str):
            if cls.primary_field is None:
                raise AiforgeError(
                    "AF-INPUT-002",
                    f"task '{cls.task}' needs a record with fields {list(cls.Input.model_fields)}, "
                    "got a string",
                    'pass JSON, e.g. --input-file items.jsonl with one {"field": ...} object per line',
                )
            raw = {cls.primary_field: raw}
        elif isinstance(raw, (bytes, bytearray, memoryview, PurePath)) and cls.primary_field in MEDIA_FIELDS:
            # a file's bytes or path, as every media task takes them
            raw = {cls.primary_field: str(raw) if isinstance(raw, PurePath) else raw}
        if not isinstance(raw, dict):
            raise AiforgeError(
                "AF-INPUT-002", f"expected an object, got {type(raw).__name__}", "send a JSON object"
            )
        try:
            return cls.Input(**raw)
        except ValidationError as exc:
            raise AiforgeError(
                "AF-INPUT-002",
                f"invalid input for task '{cls.task}': {describe_errors(exc, cls.Input)}",
                f"fields: {_schema_summary(cls.Input)}",
            ) from None

    def ensure_setup(self) -> None:
        if not self._ready:
            self.setup()
            self._ready = True

    # ---- running --------------------------------------------------------------------------------
    def __call__(self, item: Any) -> dict[str, Any]:
        """Run one input. Errors raise (no error records): what failed raises as itself."""
        result = self.predict([item])[0]
        if is_error(result):
            raise result.cause
        return result

    def predict(self, items: list[Any], batch_size: int | None = None) -> list[dict[str, Any]]:
        """Run a list of inputs; one output per input, same order."""
        return list(self.stream(items, batch_size=batch_size))

    def stream(self, items: Iterable[Any], batch_size: int | None = None) -> Iterator[dict[str, Any]]:
        """Run any number of inputs lazily, in input order.

        Items are read in windows of ``batch_size * sort_window_batches``; inside a window they are
        sorted by length so each batch pads little (on CPU, unsorted batching is slower than none;
        a pipeline that packs keeps arrival order, see ``packs``), then results are put back in
        input order. An item that fails (a bad record, an input that makes forward or postprocess
        raise) yields an :class:`ItemError` in its place, not an abort (``tasks/execute.py``).
        """
        self.ensure_setup()
        size = max(1, batch_size or self.default_batch_size)
        window: list[Any] = []
        for raw in items:
            window.append(raw)
            if len(window) >= size * self.sort_window_batches:
                yield from self._run_window(window, size)
                window = []
        if window:
            yield from self._run_window(window, size)

    def preprocess_many(self, items: list[TaskInput]) -> list[Any]:
        """``preprocess`` over many items. Override when one call is cheaper than many (a fast
        tokenizer encodes a list in parallel); a failure falls back to per-item calls."""
        return [self.preprocess(item) for item in items]

    def _preprocess_all(self, items: list[TaskInput]) -> list[Any | AiforgeError]:
        try:
            return list(self.preprocess_many(items))
        except AiforgeError:
            pass  # one bad item: redo one by one so only that item fails
        out: list[Any | AiforgeError] = []
        for item in items:
            try:
                out.append(self.preprocess(item))
            except AiforgeError as exc:
                out.append(exc)
        return out

    def _run_window(self, raws: list[Any], size: int) -> list[dict[str, Any]]:
        results: list[dict[str, Any] | None] = [None] * len(raws)
        valid: list[tuple[int, TaskInput]] = []
        for i, raw in enumerate(raws):
            try:
                valid.append((i, self.parse_input(raw)))
            except AiforgeError as exc:
                results[i] = ItemError(exc)
        parsed: list[tuple[int, TaskInput, Any]] = []
        features = self._preprocess_all([item for _, item in valid]) if valid else []
        for (i, item), feats in zip(valid, features, strict=True):
            if isinstance(feats, AiforgeError):
                results[i] = ItemError(feats)
            else:
                parsed.append((i, item, feats))
        if not self.packs:  # packed batches fill their rows best with mixed lengths
            parsed.sort(key=lambda entry: self.length(entry[2]))
        chunks = [parsed[start : start + size] for start in range(0, len(parsed), size)]
        items = [[item for _, item, _ in chunk] for chunk in chunks]
        feature_lists = [[feats for _, _, feats in chunk] for chunk in chunks]
        for chunk, outputs in zip(chunks, self._run_each(items, feature_lists), strict=True):
            for (i, _, _), output in zip(chunk, outputs, strict=True):
                results[i] = output
        return results  # type: ignore[return-value]

    def side_by_side(self) -> int:
        """How many forwards to run side by side, each with one torch thread, in the calling
        thread's share of the CPU: one per torch thread when forward may run concurrently
        (``concurrent_forward``) on a CPU, where two such threads beat one forward on two torch
        threads (measured 1.1-1.4x, MiniLM, 2 cores); else 1. The serving batcher's ``workers:
        auto`` follows it too."""
        if not self.concurrent_forward or self.device != "cpu":
            return 1
        import torch

        return torch.get_num_threads()  # the caller's: a worker that holds one CPU stays serial

    def _run_each(self, items: list[list[TaskInput]], features: list[list[Any]]) -> Iterator[list[Any]]:
        """``run_batch`` over each batch, in order; side by side when ``side_by_side()`` allows."""
        run = partial(run_batch, self)
        threads = self.side_by_side() if len(features) > 1 else 1
        if threads < 2:
            return map(run, items, features)
        pools = self._forward_pools
        if threads not in pools:
            pools[threads] = ThreadPoolExecutor(threads, "aiforge-forward", set_torch_threads, (1,))
        return pools[threads].map(run, items, features)

    # ---- description ----------------------------------------------------------------------------
    @classmethod
    def describe(cls) -> dict[str, Any]:
        return {
            "task": cls.task,
            "backend": cls.backend,
            "input": _schema_summary(cls.Input),
            "output": _schema_summary(cls.Output),
            "params": _schema_summary(cls.Params),
        }


# A temperature fitted on the validation split by `aiforge train` (aiforge.train.calibration), stored
# in the model's config.json: classifiers divide their logits by it, so scores are calibrated.
TEMPERATURE_KEY = "aiforge_temperature"


def fitted_temperature(model_config: Any) -> float:
    """The model's calibration temperature (1.0: none was fitted)."""
    return float(getattr(model_config, TEMPERATURE_KEY, None) or 1.0)


def set_torch_threads(threads: int) -> None:
    """A thread's own torch intra-op thread count (OpenMP keeps it per calling thread)."""
    import torch

    torch.set_num_threads(threads)


def _schema_summary(model: type[BaseModel]) -> str:
    parts = []
    for name, f in model.model_fields.items():
        ann = getattr(f.annotation, "__name__", None) or str(f.annotation).replace("typing.", "")
        parts.append(f"{name}: {ann}" + ("" if f.is_required() else " (optional)"))
    return ", ".join(parts) or "-"
