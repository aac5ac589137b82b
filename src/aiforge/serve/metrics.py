"""Prometheus metrics, one registry per app (two servers in one process, as in tests, never clash).

What an operator asks, and the metric that answers it:

* is it slow, for which route/model?   ``aiforge_request_duration_seconds{route,model,status}``
* are requests failing, how?           ``aiforge_requests_total{route,model,status}``
* is batching working?                 ``aiforge_batch_size{model}`` (items per forward pass) and
  ``aiforge_batches_total{model,reason}`` (reason: full = the batch filled, timeout = max_wait_ms ran out)
* is it overloaded?                    ``aiforge_queue_depth{model}`` (items waiting),
  ``aiforge_queue_wait_seconds{model}``, ``aiforge_dropped_items_total{model,reason}``
* is the model the bottleneck?         ``aiforge_inference_seconds{model}`` (one forward + postprocess)
* why are batches cut where they are?  ``aiforge_batch_cost_seconds{model,term}``: the fitted cost of
  one forward pass, term=fixed (seconds per batch) and term=per_unit (seconds per padded token)
* what is deployed?                    ``aiforge_model_info{model,task,version}`` = 1
* do garbage-collector pauses stall it? ``aiforge_gc_passes_total{generation}`` and
  ``aiforge_gc_pause_seconds_total{generation}`` (generation 2: the full passes, see memory.py)

For LLMs on llama.cpp (GGUF), which batch inside llama.cpp's slots rather than in aiforge's batcher:

* how fast does it generate?            ``aiforge_generated_tokens_total{model}``: its rate is the
  aggregate tokens/s; divided by the rate of ``aiforge_generation_seconds_total{model}`` (seconds
  spent decoding, summed over requests) it is the tokens/s one request sees
* how long until the answer starts?     ``aiforge_time_to_first_token_seconds{model}`` (waiting for a
  slot + reading the prompt)
* is it saturated?                      ``aiforge_llm_slots_busy{model}`` (requests decoding),
  ``aiforge_llm_requests_waiting{model}`` (requests waiting for a free slot)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from aiforge.serve.memory import GcPauses

FIRST_TOKEN_BUCKETS = (0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class ServeMetrics:
    """All server metrics on a private registry; ``render()`` gives the /metrics body."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "aiforge_requests_total", "HTTP requests answered", ["route", "model", "status"], registry=r
        )
        self.request_duration = Histogram(
            "aiforge_request_duration_seconds",
            "HTTP request latency",
            ["route", "model", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.in_flight = Gauge("aiforge_requests_in_flight", "HTTP requests being handled", registry=r)
        self.batch_size = Histogram(
            "aiforge_batch_size", "items per forward pass", ["model"], buckets=BATCH_BUCKETS, registry=r
        )
        self.batches = Counter(
            "aiforge_batches_total",
            "batch dispatches by why they were dispatched",
            ["model", "reason"],
            registry=r,
        )
        self.queue_wait = Histogram(
            "aiforge_queue_wait_seconds",
            "time an item waited before its forward pass",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.queue_depth = Gauge(
            "aiforge_queue_depth", "items waiting for a forward pass", ["model"], registry=r
        )
        self.inference = Histogram(
            "aiforge_inference_seconds",
            "forward pass + postprocess time per batch",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_cost = Gauge(
            "aiforge_batch_cost_seconds",
            "fitted forward-pass cost the batcher cuts by: fixed + per_unit x batch size x longest item",
            ["model", "term"],
            registry=r,
        )
        self.dropped = Counter(
            "aiforge_dropped_items_total",
            "queued items dropped before inference (timeout, disconnect)",
            ["model", "reason"],
            registry=r,
        )
        self.model_info = Gauge(
            "aiforge_model_info",
            "the version each model serves (value 1)",
            ["model", "task", "version"],
            registry=r,
        )
        self.model_ready = Gauge(
            "aiforge_model_ready", "1 when the model answers requests", ["model"], registry=r
        )

        self.generated_tokens = Counter(
            "aiforge_generated_tokens_total", "tokens generated (LLMs on llama.cpp)", ["model"], registry=r
        )
        self.generation_seconds = Counter(
            "aiforge_generation_seconds_total",
            "seconds spent generating tokens, summed over requests (LLMs on llama.cpp)",
            ["model"],
            registry=r,
        )
        self.first_token = Histogram(
            "aiforge_time_to_first_token_seconds",
            "time from a request reaching the model to its first generated token",
            ["model"],
            buckets=FIRST_TOKEN_BUCKETS,
            registry=r,
        )
        self.gc = GcPauses()
        r.register(GcCollector(self.gc))
        self.slots_busy = Gauge(
            "aiforge_llm_slots_busy", "requests decoding in the model's slots", ["model"], registry=r
        )
        self.requests_waiting = Gauge(
            "aiforge_llm_requests_waiting", "requests waiting for a free slot", ["model"], registry=r
        )

    def generation_observer(self, model: str) -> GenerationMetrics:
        """What a GGUF runtime reports its generations to (``observe_generation`` in tasks/llm.py)."""
        return GenerationMetrics(self, model)

    def set_version(self, model: str, task: str, version: str, previous: str | None = None) -> None:
        """Point ``aiforge_model_info`` at the served version (and drop the swapped-out one)."""
        if previous is not None and previous != version:
            with contextlib.suppress(KeyError):
                self.model_info.remove(model, task, previous)
        self.model_info.labels(model, task, version).set(1)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class GcCollector(Collector):
    """``aiforge_gc_passes_total`` / ``aiforge_gc_pause_seconds_total`` by generation, read at scrape."""

    def __init__(self, pauses: GcPauses) -> None:
        self.pauses = pauses

    def collect(self) -> Iterator[Metric]:
        passes = CounterMetricFamily("aiforge_gc_passes", "cyclic GC passes", labels=["generation"])
        seconds = CounterMetricFamily(
            "aiforge_gc_pause_seconds", "seconds spent in cyclic GC passes (GIL held)", labels=["generation"]
        )
        for generation in range(len(self.pauses.passes)):
            passes.add_metric([str(generation)], self.pauses.passes[generation])
            seconds.add_metric([str(generation)], self.pauses.seconds[generation])
        yield passes
        yield seconds


@dataclass(frozen=True)
class GenerationMetrics:
    """One model's generation metrics (tasks/llm.py's GenerationObserver)."""

    metrics: ServeMetrics
    model: str

    def requests_active(self, active: int, slots: int) -> None:
        self.metrics.slots_busy.labels(self.model).set(min(active, slots))
        self.metrics.requests_waiting.labels(self.model).set(max(0, active - slots))

    def generation_done(self, first_token_s: float | None, tokens: int, decode_s: float) -> None:
        if first_token_s is not None:
            self.metrics.first_token.labels(self.model).observe(first_token_s)
        self.metrics.generated_tokens.labels(self.model).inc(tokens)
        self.metrics.generation_seconds.labels(self.model).inc(decode_s)
