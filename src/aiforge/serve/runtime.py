"""The served models: loading, readiness, the request path, hot swap and rollback.

A :class:`ServedModel` is one name in the URL. It serves one :class:`Deployment` at a time (a loaded
pipeline + its batcher + the exact version), and moves through the states
``loading -> warming -> ready`` (or ``failed``, with the reason) that /readyz reports.

Hot swap (``POST /admin/reload`` or ``reload_poll_s``): the configured reference (e.g.
``registry:nsmc@production``) is resolved again; when it names another version, that version is
loaded and warmed *beside* the serving one, swapped in, and the old deployment is drained (its
queued and running requests are answered) before its thread stops. Requests never see a gap.
Rollback swaps back to the version served before, and pins it (polling stops moving it).
"""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import logging
import sys
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.media import MediaKind, media_kind, read_media
from aiforge.models import ModelRef, resolve
from aiforge.serve.batcher import Batcher, each_or_4xx
from aiforge.serve.memory import freeze_heap
from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.settings import ModelSettings, ServeSettings
from aiforge.tasks import default_model_ref, get_task, load_pipeline
from aiforge.tasks.base import Pipeline, TaskInput
from aiforge.tasks.card import OpenAIRoute, tasks_for_route
from aiforge.tasks.execute import is_error

log = logging.getLogger("aiforge.serve")

MAX_VARIANTS = 64  # per-request parameter sets kept per deployment
CPU_MAX_PADDING = 0.25  # padding tokens per real token allowed in a CPU batch (see batcher.py)
# Text inputs are only validated per request; the batcher preprocesses (tokenises) them on the event
# loop, in one call for all the requests queued meanwhile. Media decoding (images, audio) is
# heavier: it runs per request in a thread so it never blocks other requests.
TEXT_FIELDS = ("text", None)


@dataclass(eq=False)
class Deployment:
    """One loaded version of a model."""

    model: str  # the exact reference loaded (registry refs pinned to their version)
    ref: ModelRef
    version: str  # what the x-aiforge-model-version header says
    run_id: str | None  # the training run of a registry version
    pipe: Pipeline
    batcher: Batcher
    variants: OrderedDict[str, Pipeline] = field(default_factory=OrderedDict)
    loaded_at: float = field(default_factory=time.time)


class ServedModel:
    """One served name: its settings, state, current deployment and the versions before it."""

    def __init__(
        self, settings: ModelSettings, server: ServeSettings, metrics: ServeMetrics, cores: SharedCores
    ) -> None:
        self.settings = settings
        self.name = settings.name
        self.task = settings.task
        self.card = get_task(settings.task)
        self.cls = self.card.load_class()
        self.allow_local_paths = server.allow_local_paths
        self.drain_timeout_s = server.drain_timeout_s
        self.freeze = server.freeze_heap
        self.metrics = metrics
        self.cores = cores
        self.state = "loading"
        self.reason: str | None = "waiting to load"
        self.active: Deployment | None = None
        self.history: list[str] = []  # references served before the current one, for rollback
        self.pinned = False  # after a rollback, polling leaves the version alone
        self._lock = asyncio.Lock()

    # ---- loading ------------------------------------------------------------------------------------
    async def start(self) -> None:
        """Load and warm the configured model; a failure leaves state "failed" with the reason."""
        try:
            self._check_request_params()
            self.active = await self._deploy(await self.configured_reference(), report=True)
            self._set_state("ready", None)
        except Exception as exc:  # a model that cannot load must not take the other models down
            reason = exc.message if isinstance(exc, AiforgeError) else f"{type(exc).__name__}: {exc}"
            self._set_state("failed", f"load failed: {reason}")
            log.error("model %s failed to load: %s", self.name, reason)

    def _check_request_params(self) -> None:
        unknown = sorted(set(self.settings.request_params or ()) - set(self.cls.Params.model_fields))
        if unknown:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"request_params of model '{self.name}' names unknown task parameters {unknown}",
                f"task parameters: {', '.join(self.cls.Params.model_fields)}",
            )

    async def configured_reference(self) -> str:
        """The reference serve.yaml names, else the task's default (which may probe the hub: in a thread)."""
        if self.settings.model:
            return self.settings.model
        return await asyncio.to_thread(default_model_ref, get_task(self.task))

    async def _deploy(self, model: str, report: bool = False) -> Deployment:
        """Resolve, load and warm ``model`` into a new deployment (not yet serving)."""
        ref = await asyncio.to_thread(resolve, model, self.task)
        pinned = pinned_reference(ref)
        pipe = await asyncio.to_thread(
            load_pipeline, self.task, pinned, self.settings.device, **self.settings.params
        )
        run_id = await asyncio.to_thread(registry_run_id, ref)
        s = self.settings
        workers = inference_workers(s.workers, pipe)
        batcher = Batcher(
            self.name,
            max_batch_size=s.max_batch_size or pipe.default_batch_size,
            sort_window_batches=s.sort_window_batches,
            **batch_cutting(s.max_padding, pipe.device),
            max_wait_s=s.max_wait_ms / 1000,
            max_queue=s.max_queue,
            stall_after_s=max(60.0, 4 * s.timeout_s),
            metrics=self.metrics,
            **workers,
            cores=self.cores.slots() if workers["torch_threads"] == 1 else None,
        )
        batcher.start()
        deployment = Deployment(pinned, ref, version_of(ref), run_id, pipe, batcher)
        sample = self.card.warmup(self.settings.params) if self.card.warmup else None
        if s.warmup and sample is not None:
            if report:
                self._set_state("warming", "running a warm-up input")
            try:
                await warm_up(deployment, sample)
            except BaseException:
                await batcher.close(0)
                raise
        observe = getattr(pipe, "observe_generation", None)  # LLMs on llama.cpp (tasks/llm.py)
        if observe is not None:
            observe(self.metrics.generation_observer(self.name))
        log.info("model %s serving %s (%s)", self.name, deployment.version, self.task)
        return deployment

    def _set_state(self, state: str, reason: str | None) -> None:
        self.state, self.reason = state, reason
        self.metrics.model_ready.labels(self.name).set(1 if state == "ready" else 0)
        if state == "ready" and self.active is not None:
            self.metrics.set_version(self.name, self.task, self.active.version)

    # ---- status ----------------------------------------------------------------------------------------
    def health(self) -> str | None:
        """None when this model answers requests, else why not."""
        if self.state != "ready" or self.active is None:
            return f"{self.state}: {self.reason}" if self.reason else self.state
        return self.active.batcher.health()

    def describe(self) -> dict[str, Any]:
        dep = self.active
        return {
            "name": self.name,
            "task": self.task,
            "state": self.state if self.health() is None or self.state != "ready" else "unhealthy",
            "reason": self.health(),
            "model": dep.model if dep else self.settings.model,
            "version": dep.version if dep else None,
            "run_id": dep.run_id if dep else None,
            "loaded_at": int(dep.loaded_at) if dep else None,
            "queued_items": dep.batcher.queued if dep else 0,
            "max_batch_size": dep.batcher.max_batch_size if dep else self.settings.max_batch_size,
            "inference_workers": dep.batcher.workers if dep else None,
            "request_params": self.settings.request_params,
            "previous_versions": list(self.history),
        }

    def require_ready(self) -> Deployment:
        problem = self.health()
        if problem is not None or self.active is None:
            raise AiforgeError(
                "AF-SERVE-005",
                f"model '{self.name}' is not ready ({problem})",
                "retry shortly; GET /readyz says why",
                status=503,
            )
        return self.active

    # ---- the request path ---------------------------------------------------------------------------
    async def predict(
        self,
        raws: list[Any],
        params: dict[str, Any] | None = None,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
    ) -> tuple[list[dict[str, Any]], Deployment]:
        """Run a request's inputs through the batcher; returns (outputs in input order, the deployment).

        A swap between admission and queueing is retried once on the new deployment, so a hot swap
        never fails a request.
        """
        for attempt in range(2):
            dep = self.require_ready()
            try:
                return await self.run(dep, raws, params, disconnected), dep
            except AiforgeError as exc:
                swapped = exc.code == "AF-SERVE-005" and self.active is not dep
                if not swapped or attempt:
                    raise
        raise AssertionError("unreachable")

    async def run(
        self,
        dep: Deployment,
        raws: list[Any],
        params: dict[str, Any] | None,
        disconnected: Callable[[], Awaitable[Any]] | None = None,
    ) -> list[dict[str, Any]]:
        runner = self.variant(dep, params)
        if self.cls.primary_field in TEXT_FIELDS:
            job = dep.batcher.submit(runner, parse_inputs(runner, raws))
        else:
            items, features = await asyncio.to_thread(prepare, runner, raws)
            job = dep.batcher.submit(runner, items, features)
        return await dep.batcher.wait(job, self.settings.timeout_s, disconnected)

    def variant(self, dep: Deployment, params: dict[str, Any] | None) -> Pipeline:
        """The deployment's pipeline with a request's parameters applied (shares weights; cached).

        Items only share a forward pass with items of the same variant.
        """
        if not params:
            return dep.pipe
        allowed = self.settings.request_params or []
        refused = sorted(set(params) - set(allowed))
        if refused:
            raise AiforgeError(
                "AF-INPUT-002",
                f"parameter(s) {refused} cannot be set per request on model '{self.name}'",
                f"per-request parameters: {', '.join(allowed) or 'none'}; "
                "the others are fixed in serve.yaml 'params'",
                status=422,
            )
        merged = {**self.settings.params, **params}
        key = json.dumps(merged, sort_keys=True, default=str)
        if key in dep.variants:
            dep.variants.move_to_end(key)
            return dep.variants[key]
        try:
            parsed = type(dep.pipe).parse_params(merged)  # the runtime's own (GGUF models: tasks/llm.py)
        except AiforgeError as exc:
            raise AiforgeError(exc.code, exc.message, exc.fix, status=422) from None
        runner = copy.copy(dep.pipe)
        runner.params = parsed
        dep.variants[key] = runner
        if len(dep.variants) > MAX_VARIANTS:
            dep.variants.popitem(last=False)
        return runner

    def decode_json_input(self, raw: Any) -> Any:
        """A JSON input for a media task: base64 / data: URI strings -> bytes.

        Without ``allow_local_paths`` a string is never read as a server file path, so a client
        cannot make the server open its files, nor write them (text-to-audio's ``path`` field).
        """
        writes_path = (
            isinstance(raw, dict) and raw.get("path") is not None and "path" in self.cls.Input.model_fields
        )
        if writes_path and not self.allow_local_paths:
            raise AiforgeError(
                "AF-INPUT-002",
                "input field 'path' names a file to write on the server, which this server does not allow",
                "omit 'path': the output comes back in the response (or serve with allow_local_paths: true)",
                status=422,
            )
        media = media_kind(self.cls.primary_field)
        if media is None or self.allow_local_paths:
            return raw
        if isinstance(raw, str):
            return {media: media_bytes(raw, media)}
        if isinstance(raw, dict) and isinstance(raw.get(media), str):
            return {**raw, media: media_bytes(raw[media], media)}
        return raw

    # ---- hot swap ---------------------------------------------------------------------------------------
    async def reload(self) -> dict[str, Any]:
        """Re-resolve the configured reference; swap when it names another version."""
        async with self._lock:
            ref = await asyncio.to_thread(resolve, await self.configured_reference(), self.task)
            current = self.active.version if self.active else None
            if version_of(ref) == current and self.state == "ready":
                return {"model": self.name, "changed": False, "version": current}
            result = await self._swap(pinned_reference(ref))
            self.pinned = False
            return result

    async def rollback(self) -> dict[str, Any]:
        """Serve the version served before the current one again, and pin it."""
        async with self._lock:
            if not self.history:
                raise AiforgeError(
                    "AF-SERVE-008",
                    f"model '{self.name}' has no previous version to roll back to",
                    "roll back only after a reload swapped versions",
                    status=409,
                )
            result = await self._swap(self.history[-1], record=False)
            self.history.pop()
            self.pinned = True
            return result

    async def _swap(self, model: str, record: bool = True) -> dict[str, Any]:
        old = self.active
        try:
            new = await self._deploy(model)
        except Exception as exc:
            reason = exc.message if isinstance(exc, AiforgeError) else f"{type(exc).__name__}: {exc}"
            serving = f"still serving {old.version}" if old else "nothing is served"
            raise AiforgeError(
                "AF-SERVE-008",
                f"could not load '{model}' for '{self.name}': {reason}; {serving}",
                "fix the model version, or roll back the registry alias",
                status=500,
            ) from None
        self.active = new
        if record and old is not None:
            self.history.append(old.model)
        self._set_state("ready", None)
        self.metrics.set_version(self.name, self.task, new.version, old.version if old else None)
        if old is not None:
            await old.batcher.close(self.drain_timeout_s)  # answers everything queued on the old version
            if self.freeze:
                freeze_heap()  # let the old version's cycles go; freeze the new one's objects
        log.info("model %s swapped %s -> %s", self.name, old.version if old else None, new.version)
        return {
            "model": self.name,
            "changed": True,
            "version": new.version,
            "previous": old.version if old else None,
        }

    def reloadable(self) -> bool:
        """Whether polling should re-resolve this model: a registry alias or latest, not pinned."""
        ref = self.settings.model or ""
        return ref.startswith("registry:") and "/" not in ref.removeprefix("registry:") and not self.pinned

    async def stop(self) -> None:
        if self.active is not None:
            await self.active.batcher.close(self.drain_timeout_s)


class Runtime:
    """All served models of one app."""

    def __init__(self, settings: ServeSettings, metrics: ServeMetrics) -> None:
        self.settings = settings
        self.metrics = metrics
        cores = SharedCores(settings.share_cores)
        self.models = {m.name: ServedModel(m, settings, metrics, cores) for m in settings.models}
        self.draining = False
        self._poller: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the models one after the other (in parallel they would only fight over the CPU)."""
        for model in self.models.values():
            await model.start()
        if self.settings.freeze_heap:
            log.debug("froze %d objects", freeze_heap())
        if self.settings.reload_poll_s:
            self._poller = asyncio.get_running_loop().create_task(self._poll(self.settings.reload_poll_s))

    async def stop(self) -> None:
        self.draining = True
        if self._poller is not None:
            self._poller.cancel()
        await asyncio.gather(*(m.stop() for m in self.models.values()))
        if self.settings.freeze_heap:
            gc.unfreeze()  # what was frozen for serving may be collected again

    def get(self, name: str) -> ServedModel:
        if name not in self.models:
            raise AiforgeError(
                "AF-SERVE-001",
                f"no model named '{name}' is served",
                f"served models: {', '.join(self.models)} (GET /v1/models)",
                status=404,
            )
        return self.models[name]

    def for_route(self, name: str, route: OpenAIRoute, endpoint: str) -> ServedModel:
        """The model an OpenAI-style request names, checked to be of a task whose card backs the route."""
        tasks = tasks_for_route(route)
        model = self.get(name)
        if model.task not in tasks:
            fitting = [m.name for m in self.models.values() if m.task in tasks]
            raise AiforgeError(
                "AF-SERVE-002",
                f"model '{name}' is a {model.task} model; {endpoint} needs {' or '.join(tasks)}",
                f"models that fit: {', '.join(fitting) or 'none served'}",
                status=400,
            )
        return model

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        problems = {name: m.health() for name, m in self.models.items() if m.health() is not None}
        if self.draining:
            problems["server"] = "shutting down: draining in-flight requests"
        body = {
            "ready": not problems,
            "reasons": problems,
            "models": {name: m.describe() for name, m in self.models.items()},
        }
        return not problems, body

    async def _poll(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            for model in self.models.values():
                if model.reloadable() and model.state == "ready":
                    try:
                        result = await model.reload()
                        if result["changed"]:
                            log.info("poll: model %s now serves %s", model.name, result["version"])
                    except AiforgeError as exc:
                        log.warning("poll: reload of %s failed: %s", model.name, exc.message)


# ---- helpers ------------------------------------------------------------------------------------------
def parse_inputs(runner: Pipeline, raws: list[Any]) -> list[TaskInput]:
    """Validate every input; the first bad one fails the request with a 4xx naming it."""
    return each_or_4xx(runner.parse_input, raws)


def prepare(runner: Pipeline, raws: list[Any]) -> tuple[list[TaskInput], list[Any]]:
    """Validate and preprocess every input; the first bad one fails the request with a 4xx naming it."""
    items = parse_inputs(runner, raws)
    return items, each_or_4xx(runner.preprocess, items)


def media_bytes(value: str, media: MediaKind) -> bytes:
    """A data: URI or base64 string -> bytes; anything else (a path, a URL) is refused with a 422."""
    try:
        return read_media(value, media, allow_paths=False).read()
    except AiforgeError as exc:
        raise replace(exc, status=422) from None


def pinned_reference(ref: ModelRef) -> str:
    """A reference that keeps naming the same version: registry aliases are pinned to their number."""
    if ref.kind == "registry" and ref.registry_name and ref.registry_version:
        return f"registry:{ref.registry_name}/{ref.registry_version}"
    return ref.raw


def version_of(ref: ModelRef) -> str:
    """The version a response names: ``NAME/VERSION`` for registry models, else the reference."""
    if ref.kind == "registry" and ref.registry_name and ref.registry_version:
        return f"{ref.registry_name}/{ref.registry_version}"
    return ref.raw


def registry_run_id(ref: ModelRef) -> str | None:
    """The training run that produced a registry version (links a response to its run); None otherwise."""
    if ref.kind != "registry" or not ref.registry_name or not ref.registry_version:
        return None
    try:
        from aiforge import registry

        return registry.client().get_model_version(ref.registry_name, ref.registry_version).run_id or None
    except Exception as exc:  # the link is informative; a registry hiccup must not block serving
        log.warning("could not read the run id of %s: %s", version_of(ref), exc)
        return None


def batch_cutting(setting: float | str | None, device: str) -> dict[str, Any]:
    """The batcher's ``max_padding`` and ``cost_model`` for a ``max_padding`` setting: "auto" is the
    fitted cost model on CPU (0.25 padding until it is fitted) and no limit on accelerators."""
    if setting == "auto":
        on_cpu = device == "cpu"
        return {"max_padding": CPU_MAX_PADDING if on_cpu else None, "cost_model": on_cpu}
    return {"max_padding": None if setting is None else float(setting), "cost_model": False}


def inference_workers(setting: int | str, pipe: Pipeline) -> dict[str, Any]:
    """The batcher's ``workers`` and per-worker ``torch_threads`` for a ``workers`` setting.

    "auto" runs as many batches side by side as ``pipe.predict`` does (``Pipeline.side_by_side``:
    on a CPU, one worker per torch thread for a concurrent-safe model, each with one torch thread,
    so no OpenMP barrier waits on the event loop); workers on a CPU split torch's threads.
    """
    workers = pipe.side_by_side() if setting == "auto" else int(setting)
    if workers == 1 or pipe.device != "cpu" or "torch" not in sys.modules:  # no torch threads to split
        return {"workers": workers, "torch_threads": None}
    import torch

    return {"workers": workers, "torch_threads": max(1, torch.get_num_threads() // workers)}


class SharedCores:
    """One slot per torch thread of the process (a CPU core), shared by every served model whose
    inference workers run one torch thread each: a batch starts only on a free core, and requests
    that arrive while all cores are busy join the next batch instead of starting a forward pass of
    their own. Without it, two text models with one worker per core each run four forward passes
    on two cores: each slows the others, every worker looks free, so batches stay small (1.2-1.5
    items at 77 req/s in bench/soak.py) and the per-minute p99 swings with which models overlap.
    """

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._slots: asyncio.Semaphore | None = None

    def slots(self) -> asyncio.Semaphore | None:
        if not self.enabled:
            return None
        if self._slots is None:
            import torch

            self._slots = asyncio.Semaphore(torch.get_num_threads())
        return self._slots


async def warm_up(deployment: Deployment, sample: Any) -> None:
    """Run one sample on the deployment's own inference thread (not through the queue, so neither
    max_wait_ms nor timeout_s applies and the batch metrics only count real traffic)."""
    loop = asyncio.get_running_loop()
    [output] = await loop.run_in_executor(deployment.batcher.executor, deployment.pipe.predict, [sample])
    if is_error(output):
        if output.internal:  # the model raised: the load fails with what it raised
            raise output.cause
        error = output.error
        raise AiforgeError(error.code, f"warm-up input failed: {error.message}", error.fix)
