"""Soak `aiforge serve`: minutes at about 80 % of its measured capacity, watching for leaks.

The real server (``aiforge serve``, uvicorn on 127.0.0.1, an API key file) serves the MiniLM
classifier of bench_serve.py and the packaged multilingual-e5-small embedder. The load mixes
``/v1/models/clf/predict`` and ``/v1/embeddings`` (one NSMC sentence per request, one in
``--embed-every`` an embedding).

1. **capacity**: a short closed-loop ramp (1, 2, 4 ... clients, ``--ramp-s`` each) finds the
   peak throughput; then open-loop steps (``--step-s`` each, from 30 % of that peak up, see
   ``LATENCY_STEPS``) find the highest arrival rate whose p99 stays within ``--latency-x`` (2) times
   the p99 at 30 %: the capacity (MLPerf's server scenario; ``--capacity-by peak``: the closed-loop
   peak, as before session 19).
2. **soak**: ``--minutes`` of open-loop arrivals at ``--load`` x capacity, evenly paced by default
   (``--arrivals poisson``: bursts; see ``ARRIVALS``). A request's latency
   runs from its *scheduled* arrival, so a slow answer that delays the next send is counted, not
   hidden (no coordinated omission). ``--connections`` keep-alive connections carry the load (a
   fixed pool, so the server's open sockets do not depend on the load's bursts).
3. Every ``--sample-s`` seconds: the server's RSS (with its children), open file descriptors and
   threads from /proc, the load average (the machine is shared: it explains latency swings), and
   how long ``GET /readyz`` takes to answer, with its status (a probe's view of the server), the load
   generator's own CPU, and per model from ``/metrics``: cores busy in forward passes, items per
   batch and ms queued per item (where a swing comes from).

After warm-up (the first minute) it checks: RSS grows <= 5 % (the median of the first minute after
warm-up against the median of the last minute), every minute's p99 <= 1.2x the first minute after warm-up,
descriptors other than sockets and threads flat (the last minute's highest <= the first
post-warm-up minute's highest + 2), the server's sockets at most one per client connection (+ 8),
and zero 5xx or dropped connections. Beside the checks it reports how steady the machine was: how
much longer the load generator's fixed work (``MemoryProbe``, e5-sized matrix products) took in its
slowest minute than in its fastest; over 1.1x, a failed p99 may be the machine's (see
``MACHINE_SWING_LIMIT``). It
prints a table per minute and a verdict line, writes ``soak.json`` and ``soak.png`` under ``--out``,
and exits 1 when a check fails.

Run::

    .venv/bin/python bench/soak.py --minutes 3           # a short check
    .venv/bin/python bench/soak.py --malloc-arena-max 16 # glibc's default on 2 cores, for comparison
    .venv/bin/python bench/soak.py --malloc-trim-s 0     # no periodic malloc_trim, for comparison
    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/soak.py   # the full 20 minutes
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import secrets
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.serving import (  # noqa: E402
    CONNECTION_ERRORS,
    Connection,
    aiforge_command,
    build_model,
    free_port,
    load_sentences,
    percentile_ms,
    request_once,
    start,
    stop,
)

WARMUP_S = 60.0
PROBE_TIMEOUT_S = 10.0  # a /readyz slower than this is recorded as unanswered (status 0)
REQUEST_TIMEOUT_S = 120.0  # an answer later than this counts as dropped (status 0): the server hangs
DRAIN_S = 60.0  # after the last arrival, what is still unanswered this much later counts as dropped
RSS_GROWTH_LIMIT = 0.05
P99_RATIO_LIMIT = 1.2
# The load generator's fixed work (MemoryProbe: e5-sized GEMMs, one thread) may swing this much
# between minutes before the run stops telling the server's p99 from the machine's speed. Session 20,
# a 2-core KVM guest with nothing else running: its 30-s medians went 11.2-15.0 ms (1.34x) and the
# Python loop's 2.59-4.23 ms (1.63x) within three minutes; the same code took 2.01-2.08 ms all
# session 19. Where the p99 check fails on such a machine, the failure may be the machine's: the
# verdict says so. Session 20's 20-minute run held its p99 within 1.08x while this swung 1.38x.
MACHINE_SWING_LIMIT = 1.1
FLAT_SLACK = 2  # fds/threads: a reconnect or one more pool thread is not a leak; a leak keeps climbing
# sockets: the listening one, a /readyz probe's and one closing while its client reopens are not a leak
SOCKET_SLACK = 8
# Arrivals: evenly paced by default, a request every 1/rate s, as vegeta, wrk2 and k6's
# constant-arrival-rate executor send: a soak looks for drift, and at a fixed rate a minute's p99
# moves only when the server does. ``poisson`` (exponential gaps) adds bursts: session 19, 20 min at
# 58.2 req/s (80 % of the latency-bounded capacity), 0 errors, memory, fds and threads flat, GC passes
# 2-7 ms, yet the per-minute p99 went 196-284 ms (1.32x) on the bursts alone, with no trend.
# (Session 17, at 80 % of the closed-loop peak, swung 2.74x paced too: there the server was saturated.)
ARRIVALS = {
    "paced": "a request every 1/rate seconds",
    "poisson": "exponential gaps of mean 1/rate seconds (bursts)",
}


def own_fds(sample: dict[str, float]) -> int:
    """The server's descriptors that are not sockets (files, pipes, eventfds): sockets follow the
    load (idle keep-alive connections close after 5 s and reopen; the server closes its side a moment
    after the client), a leaked file does not go away. Subtracting the client's open connections
    instead swung by -20..+14 within a minute (session 16): the two sides close at different times."""
    return int(sample["fds"] - sample.get("sockets", 0))


# ---- the workload ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Call:
    kind: str  # "classify" or "embed"
    path: str
    body: bytes


def workload(sentences: list[str], embed_every: int) -> list[Call]:
    """One call per sentence: every ``embed_every``-th an embedding, the rest classifications."""
    calls = []
    for i, text in enumerate(sentences):
        if embed_every and i % embed_every == embed_every - 1:
            body = {"model": "e5", "input": [text]}
            calls.append(Call("embed", "/v1/embeddings", json.dumps(body, ensure_ascii=False).encode()))
        else:
            body = {"inputs": [text]}
            calls.append(
                Call("classify", "/v1/models/clf/predict", json.dumps(body, ensure_ascii=False).encode())
            )
    return calls


@dataclass
class Outcome:
    kind: str
    scheduled: float  # seconds since the soak started
    latency_s: float
    status: int


# ---- capacity: a closed-loop ramp --------------------------------------------------------------------
async def closed_loop(
    port: int, headers: dict[str, str], calls: list[Call], clients: int, seconds: float
) -> tuple[float, dict[int, int]]:
    """``clients`` connections sending back to back for ``seconds``: (answers/s, status counts)."""
    statuses: dict[int, int] = {}
    deadline = time.perf_counter() + seconds
    counter = iter(range(10**12))

    async def client() -> None:
        connection = Connection(port, headers)
        try:
            while time.perf_counter() < deadline:
                call = calls[next(counter) % len(calls)]
                try:
                    status, _ = await connection.request("POST", call.path, call.body)
                except CONNECTION_ERRORS:
                    status = 0
                    connection.close()
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    return statuses.get(200, 0) / (time.perf_counter() - started), statuses


def find_capacity(
    port: int, headers: dict[str, str], calls: list[Call], ramp_s: float, max_clients: int
) -> tuple[float, list[dict[str, Any]]]:
    """Double the clients until throughput stops rising (< 5 % better twice running) or errors show."""
    steps: list[dict[str, Any]] = []
    best, flat_steps, clients = 0.0, 0, 1
    while clients <= max_clients:
        rate, statuses = asyncio.run(closed_loop(port, headers, calls, clients, ramp_s))
        steps.append({"clients": clients, "req_per_s": rate, "statuses": statuses})
        print(f"  ramp: {clients:3d} clients -> {rate:6.1f} req/s  {statuses}", flush=True)
        if set(statuses) - {200}:
            break
        flat_steps = flat_steps + 1 if rate < 1.05 * best else 0
        best = max(best, rate)
        if flat_steps == 2:
            break
        clients *= 2
    return best, steps


# the open-loop steps of the latency-bounded capacity, as fractions of the closed-loop peak; the first
# is the light load whose p99 the others are held to
LATENCY_STEPS = (0.3, 0.5, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 1.0)


def capacity_within_latency(
    port: int,
    headers: dict[str, str],
    calls: list[Call],
    peak: float,
    probe: ServerProbe,
    step_s: float,
    bound_x: float,
    connections: int,
    arrivals: str,
) -> tuple[float, list[dict[str, Any]]]:
    """The highest open-loop arrival rate the server answers with its p99 within ``bound_x`` times
    its p99 at light load (MLPerf's server scenario: throughput under a latency bound).

    Why not the closed-loop peak: 64 clients sending back to back keep the queues deep, so the server
    runs big, cheap batches; open-loop arrivals at 80 % of that peak come one at a time and are
    served in batches of 1-2, which costs more CPU per request: the server sat at ~90 % of its cores
    and its p99 swung 1.5-2.7x from minute to minute (README, "Soak"), on noise, not on a leak."""
    steps: list[dict[str, Any]] = []
    reference = capacity = 0.0
    for fraction in LATENCY_STEPS:
        rate = fraction * peak
        outcomes, _ = asyncio.run(
            open_loop(port, headers, calls, rate, step_s, connections, probe, step_s, arrivals=arrivals)
        )
        settled = [o for o in outcomes if o.scheduled >= step_s / 4]  # past the step's start-up
        p99 = percentile_ms([o.latency_s for o in settled], 0.99)
        reference = reference or p99
        within = all(o.status == 200 for o in outcomes) and p99 <= bound_x * reference
        steps.append({"req_per_s": rate, "p99_ms": p99, "within": within})
        print(
            f"  open loop: {rate:6.1f} req/s -> p99 {p99:5.0f} ms {'within' if within else 'beyond'} "
            f"{bound_x:g}x {reference:.0f} ms",
            flush=True,
        )
        if not within:
            break
        capacity = rate
    return capacity, steps


# ---- the soak: open-loop arrivals, sampled server ----------------------------------------------------
class ServerProbe:
    """The server's RSS, open fds and threads (with its children's), read from /proc."""

    def __init__(self, pid: int) -> None:
        import psutil

        self.process = psutil.Process(pid)

    def sample(self) -> dict[str, float]:
        processes = [self.process, *self.process.children(recursive=True)]
        rss = threads = fds = sockets = 0
        for process in processes:
            status = Path(f"/proc/{process.pid}/status").read_text().splitlines()
            fields = dict(line.split(":", 1) for line in status if ":" in line)
            rss += int(fields["VmRSS"].split()[0]) * 1024
            threads += int(fields["Threads"])
            fd_dir = f"/proc/{process.pid}/fd"
            for name in os.listdir(fd_dir):
                fds += 1
                with contextlib.suppress(OSError):  # closed between listing and reading
                    sockets += os.readlink(f"{fd_dir}/{name}").startswith("socket:")
        cpu = self.process.cpu_times()
        # the main thread runs the event loop (HTTP, JSON, tokenising); its id is the process id
        loop = next((t for t in self.process.threads() if t.id == self.process.pid), None)
        # /proc/PID/stat after the command's closing parenthesis: field 10 (minflt) is index 7
        minor_faults = int(Path(f"/proc/{self.process.pid}/stat").read_text().rsplit(")", 1)[1].split()[7])
        return {
            "loop_cpu_s": loop.user_time + loop.system_time if loop else 0.0,
            "rss_mb": rss / 2**20,
            "fds": fds,
            "sockets": sockets,
            "threads": threads,
            "cpu_s": cpu.user + cpu.system,
            "sys_cpu_s": cpu.system,
            "minor_faults": minor_faults,
            "preempted": self.process.num_ctx_switches().involuntary,
            "steal_s": machine_steal_s(),
            "loadavg_1m": os.getloadavg()[0],
        }


def machine_steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests while this machine's vCPUs wanted to run
    (/proc/stat's steal column, all CPUs)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


class MemoryProbe:
    """CPU milliseconds of one pass over e5-small-sized fp32 weights (12 layers x 4 x 384x384 + 2 x
    384x1536, 85 MB, more than the L3 a neighbour shares) for 8 tokens, on one thread: a forward pass's
    memory traffic without the server. The Python loop (machine_speed_ms) stayed flat through slow
    minutes; this is what should move if those come from cache or memory-bandwidth contention."""

    def __init__(self, layers: int = 12, width: int = 384, tokens: int = 8) -> None:
        import numpy as np

        rng = np.random.default_rng(0)
        shapes = [(width, width)] * 4 + [(width, 4 * width), (4 * width, width)]
        # scaled by 1/sqrt(fan-in) so the chained products stay finite (no inf or denormal arithmetic)
        self.weights = [
            rng.standard_normal(shape, dtype=np.float32) / np.float32(shape[0] ** 0.5)
            for _ in range(layers)
            for shape in shapes
        ]
        self.tokens = rng.standard_normal((tokens, width), dtype=np.float32)

    def __call__(self, repeats: int = 2) -> float:
        from threadpoolctl import threadpool_limits

        best = float("inf")
        with threadpool_limits(1):
            for _ in range(repeats):
                started = time.thread_time()
                hidden = self.tokens
                for weight in self.weights:
                    hidden = hidden @ weight
                best = min(best, time.thread_time() - started)
        return 1000 * best


def machine_speed_ms(repeats: int = 3) -> float:
    """CPU milliseconds (this thread's, not wall time) a fixed piece of work takes, the least of
    ``repeats``: meant to rise when the machine itself gets slower (a lower clock, a busy neighbour on
    the same core). Session 19's machine kept it at 2.01-2.08 ms through minutes whose forward passes
    cost 5-10 % more CPU; session 20's swung 2.59-4.23 ms idle (1.63x). A small Python loop feels a
    slower clock, not a slower cache or memory: ``MemoryProbe`` times e5-sized matrix products too."""
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        sum(i * i for i in range(50_000))
        best = min(best, time.thread_time() - started)
    return 1000 * best


async def open_loop(
    port: int,
    headers: dict[str, str],
    calls: list[Call],
    rate: float,
    seconds: float,
    connections: int,
    probe: ServerProbe,
    sample_s: float,
    seed: int = 0,
    arrivals: str = "poisson",
    on_minute: Callable[[int], None] | None = None,
) -> tuple[list[Outcome], list[dict[str, float]]]:
    """Arrivals (``paced`` or ``poisson``) at ``rate``/s for ``seconds`` over a pool of
    ``connections`` keep-alive connections; latency from each request's scheduled time. Returns
    outcomes and /proc samples."""
    # last in, first out: the busiest connections stay warm, the rest idle out (and reconnect)
    every = [Connection(port, headers) for _ in range(connections)]
    pool: asyncio.LifoQueue[Connection] = asyncio.LifoQueue()
    for connection in every:
        pool.put_nowait(connection)
    outcomes: list[Outcome] = []
    samples: list[dict[str, float]] = []
    rng = random.Random(seed)
    memory_probe = MemoryProbe()
    origin = time.perf_counter()

    async def send(call: Call, scheduled: float) -> None:
        connection = await pool.get()  # waiting for a free connection counts in the latency
        try:
            status, _ = await asyncio.wait_for(
                connection.request("POST", call.path, call.body), REQUEST_TIMEOUT_S
            )
        except (*CONNECTION_ERRORS, asyncio.TimeoutError):
            status = 0
            connection.close()
        except asyncio.CancelledError:  # still unanswered when the drain ended
            connection.close()
            outcomes.append(Outcome(call.kind, scheduled, time.perf_counter() - origin - scheduled, 0))
            raise
        finally:
            pool.put_nowait(connection)
        outcomes.append(Outcome(call.kind, scheduled, time.perf_counter() - origin - scheduled, status))

    def sample() -> dict[str, float]:
        client = sum(c.open for c in every)  # the server holds one socket for each
        own = os.times()  # the load generator shares the cores: its CPU is part of the picture
        return {
            "t": time.perf_counter() - origin,
            "client_connections": client,
            "client_cpu_s": own.user + own.system,
            "machine_ms": machine_speed_ms(),
            "memory_ms": memory_probe(),
            **probe.sample(),
        }

    async def sampler() -> None:
        while time.perf_counter() - origin < seconds:
            samples.append({**sample(), **await server_view(port, headers)})
            await asyncio.sleep(sample_s)

    sampling = asyncio.create_task(sampler())
    in_flight: set[asyncio.Task[None]] = set()
    scheduled, index, minute = 0.0, 0, 0
    while True:
        scheduled += rng.expovariate(rate) if arrivals == "poisson" else 1 / rate
        if scheduled >= seconds:
            break
        delay = scheduled - (time.perf_counter() - origin)
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(send(calls[index % len(calls)], scheduled))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
        index += 1
        if on_minute and int(scheduled // 60) > minute:
            minute = int(scheduled // 60)
            on_minute(minute)
    # an overloaded or hung server leaves a backlog: it is counted, not waited out
    _, unanswered = await asyncio.wait(set(in_flight), timeout=DRAIN_S) if in_flight else (set(), set())
    for task in unanswered:
        task.cancel()
    await asyncio.gather(*unanswered, return_exceptions=True)
    queued = index - len(outcomes)  # cancelled while still waiting for a free connection
    if unanswered:
        print(f"  {len(unanswered)} requests unanswered {DRAIN_S:g}s after the last arrival", flush=True)
    outcomes.extend(Outcome("backlog", seconds, float("nan"), 0) for _ in range(max(0, queued)))
    await sampling
    with contextlib.suppress(OSError, psutil_errors()):
        samples.append({**sample(), **await server_view(port, headers)})
    for connection in every:
        connection.close()
    return outcomes, samples


async def server_view(port: int, headers: dict[str, str]) -> dict[str, float]:
    """What the server says over HTTP at a sample: /readyz's status and time, /metrics' batch counters."""
    return {**await readiness(port, headers), **await batch_counters(port, headers)}


# what /metrics says per model, summed over label sets: seconds spent in forward passes, items in them,
# batches, seconds items queued; per minute this gives cores busy per model, mean batch, mean wait
BATCH_METRICS = {
    "aiforge_inference_seconds_sum": "busy_s",
    "aiforge_batch_size_sum": "items",
    "aiforge_batch_size_count": "batches",
    "aiforge_queue_wait_seconds_sum": "wait_s",
}
# the garbage collector's full passes (generation 2): how many, and seconds with the GIL held
GC_METRICS = {"aiforge_gc_passes_total": "gc_full_passes", "aiforge_gc_pause_seconds_total": "gc_full_s"}


async def batch_counters(port: int, headers: dict[str, str]) -> dict[str, float]:
    """The server's own batch counters from ``GET /metrics``, e.g. ``e5.busy_s``."""
    try:
        status, body = await asyncio.wait_for(request_once(port, "GET", "/metrics", headers), PROBE_TIMEOUT_S)
    except asyncio.TimeoutError:
        return {}
    counters: dict[str, float] = {}
    for line in body.decode().splitlines() if status == 200 else []:
        name, _, rest = line.partition("{")
        if name in BATCH_METRICS and 'model="' in rest:
            model = rest.split('model="', 1)[1].split('"', 1)[0]
            key = f"{model}.{BATCH_METRICS[name]}"
            counters[key] = counters.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
        elif name in GC_METRICS and 'generation="2"' in rest:
            counters[GC_METRICS[name]] = float(line.rsplit(" ", 1)[1])
    return counters


async def readiness(port: int, headers: dict[str, str]) -> dict[str, float]:
    """``GET /readyz`` on a fresh connection: its status (0: no answer within PROBE_TIMEOUT_S) and
    how long it took, as a load balancer's probe would see it."""
    started = time.perf_counter()
    try:
        status, _ = await asyncio.wait_for(request_once(port, "GET", "/readyz", headers), PROBE_TIMEOUT_S)
    except asyncio.TimeoutError:
        status = 0
    return {"readyz_status": status, "readyz_ms": (time.perf_counter() - started) * 1000}


def psutil_errors() -> type[Exception]:
    import psutil

    return psutil.Error


# ---- per-minute figures and the checks ---------------------------------------------------------------
@dataclass
class Minute:
    minute: int
    requests: int
    req_per_s: float
    p50_ms: float
    p99_ms: float
    p99_classify_ms: float
    p99_embed_ms: float
    statuses: dict[int, int]
    rss_mb: float  # the last sample in the minute
    fds: int  # the most in the minute that are not sockets (own_fds)
    sockets: int  # the server's sockets, the most in the minute
    connections: int  # the most client connections open at a sample
    threads: int
    loadavg_1m: float  # mean over the minute's samples
    server_cpu: float  # cores the server used on average
    loop_cpu: float  # of which its event loop thread
    client_cpu: float  # cores the load generator used on average
    batches: dict[str, dict[str, float]]  # per model: cores busy in forward passes, mean batch, mean wait ms
    readyz_max_ms: float  # the slowest /readyz probe in the minute
    readyz_failed: int  # probes that got no 200 (503 not ready, or no answer in PROBE_TIMEOUT_S)
    gc_full_passes: int  # full garbage-collector passes in the minute
    gc_full_ms: float  # and the milliseconds they held the GIL
    machine_ms: float  # median CPU ms of the load generator's fixed work (machine_speed_ms)
    memory_ms: float  # median CPU ms of its pass over e5-sized weights (MemoryProbe)
    sys_cpu: float  # cores the server spent in the kernel
    minor_faults: float  # the server's minor page faults per second
    preempted: float  # the server's involuntary context switches per second
    steal: float  # cores the hypervisor gave to other guests (the whole machine)


def per_minute(outcomes: list[Outcome], samples: list[dict[str, float]], minutes: int) -> list[Minute]:
    rows = []
    for m in range(minutes):
        mine = [o for o in outcomes if m * 60 <= o.scheduled < (m + 1) * 60]
        window = [s for s in samples if m * 60 <= s["t"] < (m + 1) * 60] or samples[-1:]
        statuses: dict[int, int] = {}
        for o in mine:
            statuses[o.status] = statuses.get(o.status, 0) + 1
        span = max(window[-1]["t"] - window[0]["t"], 1e-9)
        rows.append(
            Minute(
                minute=m + 1,
                requests=len(mine),
                req_per_s=statuses.get(200, 0) / 60,
                p50_ms=percentile_ms([o.latency_s for o in mine], 0.5),
                p99_ms=percentile_ms([o.latency_s for o in mine], 0.99),
                p99_classify_ms=percentile_ms([o.latency_s for o in mine if o.kind == "classify"], 0.99),
                p99_embed_ms=percentile_ms([o.latency_s for o in mine if o.kind == "embed"], 0.99),
                statuses=statuses,
                rss_mb=window[-1]["rss_mb"],
                fds=max(own_fds(s) for s in window),
                sockets=int(max(s.get("sockets", 0) for s in window)),
                connections=int(max(s.get("client_connections", 0) for s in window)),
                threads=int(max(s["threads"] for s in window)),
                loadavg_1m=statistics.fmean(s["loadavg_1m"] for s in window),
                server_cpu=per_second(window, "cpu_s"),
                loop_cpu=per_second(window, "loop_cpu_s"),
                client_cpu=per_second(window, "client_cpu_s"),
                batches=batch_figures(window[0], window[-1], span),
                readyz_max_ms=max(s.get("readyz_ms", 0.0) for s in window),
                readyz_failed=sum(1 for s in window if s.get("readyz_status", 200) != 200),
                gc_full_passes=int(window[-1].get("gc_full_passes", 0) - window[0].get("gc_full_passes", 0)),
                gc_full_ms=1000 * (window[-1].get("gc_full_s", 0) - window[0].get("gc_full_s", 0)),
                machine_ms=statistics.median(s.get("machine_ms", 0.0) for s in window),
                memory_ms=statistics.median(s.get("memory_ms", 0.0) for s in window),
                sys_cpu=per_second(window, "sys_cpu_s"),
                minor_faults=per_second(window, "minor_faults"),
                preempted=per_second(window, "preempted"),
                steal=per_second(window, "steal_s"),
            )
        )
    return rows


def per_second(window: list[dict[str, float]], key: str) -> float:
    """A counter's mean rate between a window's first and last sample (of CPU seconds: cores used)."""
    if len(window) < 2:
        return 0.0
    return (window[-1][key] - window[0][key]) / max(window[-1]["t"] - window[0]["t"], 1e-9)


def batch_figures(start: dict[str, float], end: dict[str, float], span: float) -> dict[str, dict[str, float]]:
    """Per model between two samples: cores busy in forward passes, items per batch, ms queued per item."""
    figures = {}
    for model in sorted({key.split(".", 1)[0] for key in end if key.endswith(".busy_s")}):
        delta = {
            name: end.get(f"{model}.{name}", 0.0) - start.get(f"{model}.{name}", 0.0)
            for name in BATCH_METRICS.values()
        }
        figures[model] = {
            "busy_cores": delta["busy_s"] / span,
            "mean_batch": delta["items"] / max(delta["batches"], 1.0),
            "mean_wait_ms": 1000 * delta["wait_s"] / max(delta["items"], 1.0),
        }
    return figures


@dataclass
class Check:
    name: str
    passed: bool
    figure: str


@dataclass
class Verdict:
    checks: list[Check] = field(default_factory=list)
    machine: str = ""  # how steady the machine was: not a check of the server, read beside the p99

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def line(self) -> str:
        word = "PASS" if self.passed else "FAIL"
        return f"verdict: {word}: " + "; ".join(
            [f"{c.name} {c.figure}{'' if c.passed else ' (FAILED)'}" for c in self.checks] + [self.machine]
        )


def judge(rows: list[Minute], samples: list[dict[str, float]], outcomes: list[Outcome]) -> Verdict:
    """The soak's checks, on what came after the warm-up minute."""
    after = [s for s in samples if s["t"] >= WARMUP_S] or samples[-1:]
    measured = rows[1:] or rows
    last_minute_start = after[-1]["t"] - 60
    last = [s for s in after if s["t"] >= last_minute_start]
    first = [s for s in after if s["t"] < WARMUP_S + 60]
    # medians of a minute on both sides: one sample swung 1,008-1,245 MB within a run (session 17)
    # with the server's periodic malloc_trim, so a single first sample made the verdict a coin toss
    rss_start = statistics.median(s["rss_mb"] for s in first or after[:1])
    rss_end = statistics.median(s["rss_mb"] for s in last)
    growth = rss_end / rss_start - 1
    base_p99 = measured[0].p99_ms
    worst = max(measured, key=lambda r: r.p99_ms)
    fds_start, fds_end = max(own_fds(s) for s in first), max(own_fds(s) for s in last)
    threads_start, threads_end = max(s["threads"] for s in first), max(s["threads"] for s in last)
    clients = int(max(s.get("client_connections", 0) for s in samples))
    sockets_end = int(max(s.get("sockets", 0) for s in last))
    failed = sum(1 for o in outcomes if o.status >= 500 or o.status == 0)
    work = [r.memory_ms for r in measured if r.memory_ms > 0] or [1.0]
    swing = max(work) / min(work)
    return Verdict(
        [
            Check(
                "RSS",
                growth <= RSS_GROWTH_LIMIT,
                f"{rss_start:.0f} -> {rss_end:.0f} MB ({growth:+.1%}, limit +{RSS_GROWTH_LIMIT:.0%})",
            ),
            Check(
                "p99",
                worst.p99_ms <= P99_RATIO_LIMIT * base_p99,
                f"worst minute {worst.minute} {worst.p99_ms:.0f} ms = {worst.p99_ms / base_p99:.2f}x "
                f"minute {measured[0].minute}'s {base_p99:.0f} ms (limit {P99_RATIO_LIMIT}x)",
            ),
            Check("fds", fds_end <= fds_start + FLAT_SLACK, f"{fds_start} -> {fds_end} (not sockets)"),
            Check(
                "sockets",
                sockets_end <= clients + SOCKET_SLACK,
                f"{sockets_end} in the last minute for {clients} client connections",
            ),
            Check("threads", threads_end <= threads_start + FLAT_SLACK, f"{threads_start} -> {threads_end}"),
            Check("5xx", failed == 0, f"{failed} x 5xx or dropped"),
        ],
        machine=f"machine: fixed work {min(work):.1f}-{max(work):.1f} ms a minute = {swing:.2f}x"
        + (
            f" (over {MACHINE_SWING_LIMIT}x: a p99 swing may be the machine's, not the server's; "
            "rerun on a quieter one)"
            if swing > MACHINE_SWING_LIMIT
            else " (steady)"
        ),
    )


def print_table(rows: list[Minute]) -> None:
    print(
        "\n| min | req | req/s | p50 ms | p99 ms | p99 clf | p99 e5 | non-200 | RSS MB | fds | conns "
        "| threads | load 1m | server cores (event loop) | client cores "
        "| per model: busy cores / batch / wait ms | /readyz max ms (not 200) | full GC passes (ms) "
        "| fixed work ms (memory) | server sys cores | minor faults/s | preempted/s | steal cores |"
    )
    print("|---" * 24 + "|")
    for r in rows:
        bad = {k: v for k, v in r.statuses.items() if k != 200} or 0
        per_model = ", ".join(
            f"{m} {f['busy_cores']:.2f}/{f['mean_batch']:.1f}/{f['mean_wait_ms']:.0f}"
            for m, f in r.batches.items()
        )
        print(
            f"| {r.minute}{' (warm-up)' if r.minute == 1 else ''} | {r.requests} | {r.req_per_s:.1f} | "
            f"{r.p50_ms:.0f} | {r.p99_ms:.0f} | {r.p99_classify_ms:.0f} | {r.p99_embed_ms:.0f} | {bad} | "
            f"{r.rss_mb:.0f} | {r.fds} | {r.sockets} | {r.connections} | {r.threads} | {r.loadavg_1m:.1f} | "
            f"{r.server_cpu:.2f} ({r.loop_cpu:.2f}) | {r.client_cpu:.2f} | {per_model} | "
            f"{r.readyz_max_ms:.0f} ({r.readyz_failed}) | {r.gc_full_passes} ({r.gc_full_ms:.0f}) | "
            f"{r.machine_ms:.2f} ({r.memory_ms:.1f}) | {r.sys_cpu:.2f} | {r.minor_faults:.0f} | "
            f"{r.preempted:.0f} | {r.steal:.3f} |"
        )


def plot(rows: list[Minute], samples: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t"] / 60 for s in samples]
    fig, axes = plt.subplots(3, 1, figsize=(9, 9), sharex=True)
    axes[0].plot(minutes, [s["rss_mb"] for s in samples])
    axes[0].set_ylabel("server RSS (MB)")
    centres = [r.minute - 0.5 for r in rows]
    axes[1].plot(centres, [r.p50_ms for r in rows], "o-", label="p50")
    axes[1].plot(centres, [r.p99_ms for r in rows], "o-", label="p99")
    axes[1].set_ylabel("latency per minute (ms)")
    axes[1].legend()
    axes[2].plot(minutes, [own_fds(s) for s in samples], label="open fds (besides client sockets)")
    axes[2].plot(minutes, [s["threads"] for s in samples], label="threads")
    axes[2].set_ylabel("count")
    axes[2].set_xlabel("minutes")
    axes[2].legend()
    for axis in axes:
        axis.axvspan(0, WARMUP_S / 60, color="0.9")  # the warm-up minute, not judged
        axis.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ---- the run -----------------------------------------------------------------------------------------
def serve_config(work: Path, model_dir: Path, port: int, key: str, options: dict[str, Any]) -> Path:
    """serve.yaml for the soak; ``options``: server settings under comparison (malloc_trim_s, ...)."""
    keys = work / "keys.txt"
    keys.write_text(f"{key}\n", encoding="utf-8")
    limits = {"device": "cpu", "timeout_s": 30}
    config = {
        "port": port,
        "demo": False,
        "log_level": "warning",
        **options,
        "api_key_file": str(keys),
        "models": [
            {"name": "clf", "task": "text-classification", "model": str(model_dir), **limits},
            {"name": "e5", "task": "sentence-embeddings", **limits},  # the packaged multilingual-e5-small
        ],
    }
    path = work / "serve.yaml"  # JSON is YAML; the CLI knows a config by its suffix
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=20, help="soak length, warm-up minute included")
    parser.add_argument("--load", type=float, default=0.8, help="arrival rate as a fraction of capacity")
    parser.add_argument("--capacity", type=float, help="req/s; skips the ramp")
    parser.add_argument(
        "--capacity-by",
        choices=["latency", "peak"],
        default="latency",
        help="latency: the highest open-loop rate whose p99 stays within --latency-x times the p99 at "
        "light load (MLPerf's server scenario); peak: the closed-loop ramp's best throughput",
    )
    parser.add_argument(
        "--latency-x", type=float, default=2.0, help="the latency bound of --capacity-by latency"
    )
    parser.add_argument("--step-s", type=float, default=20, help="seconds per open-loop capacity step")
    parser.add_argument("--ramp-s", type=float, default=10, help="seconds per ramp step")
    parser.add_argument("--max-clients", type=int, default=64, help="the ramp's last step")
    parser.add_argument("--connections", type=int, default=64, help="keep-alive connections of the soak")
    parser.add_argument("--embed-every", type=int, default=4, help="one request in N is an embedding")
    parser.add_argument("--sample-s", type=float, default=5, help="seconds between /proc samples")
    parser.add_argument("--seed", type=int, default=0, help="arrival times (poisson)")
    parser.add_argument("--arrivals", choices=list(ARRIVALS), default="paced", help="arrival process")
    parser.add_argument(
        "--malloc-arena-max",
        type=int,
        help="MALLOC_ARENA_MAX for the server (default: aiforge's own cap, 2; 16 is glibc's default "
        "on 2 cores)",
    )
    parser.add_argument(
        "--malloc-trim-s", type=float, default=10, help="the server's malloc_trim period (0: never)"
    )
    parser.add_argument(
        "--no-share-cores",
        action="store_true",
        help="serve with share_cores: false (each model's workers run regardless of the other's), "
        "for comparison",
    )
    parser.add_argument(
        "--no-freeze-heap",
        action="store_true",
        help="serve with freeze_heap: false (full GC passes walk the models' objects), for comparison",
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "soak")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aiforge-soak-"))
    key = secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {key}"}
    port = free_port()
    calls = workload(load_sentences(4096), args.embed_every)
    config = serve_config(
        work,
        build_model(work / "clf"),
        port,
        key,
        {
            "malloc_trim_s": args.malloc_trim_s,
            "share_cores": not args.no_share_cores,
            "freeze_heap": not args.no_freeze_heap,
        },
    )
    env = {**os.environ}
    if args.malloc_arena_max:
        env["MALLOC_ARENA_MAX"] = str(args.malloc_arena_max)
    server = start(aiforge_command(config), port, "/readyz", work / "serve.log", headers=headers, env=env)
    print(
        f"aiforge serve pid {server.pid} on 127.0.0.1:{port}: MiniLM classifier + packaged e5, API key; "
        f"1 in {args.embed_every} requests an embedding; {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} (the machine is shared)",
        flush=True,
    )
    probe = ServerProbe(server.pid)
    try:
        asyncio.run(closed_loop(port, headers, calls, 8, 5))  # warm the batchers' cost models
        peak, ramp, steps = args.capacity, [], []
        if not args.capacity:
            peak, ramp = find_capacity(port, headers, calls, args.ramp_s, args.max_clients)
        capacity = peak
        if not args.capacity and args.capacity_by == "latency":
            capacity, steps = capacity_within_latency(
                port,
                headers,
                calls,
                peak,
                probe,
                args.step_s,
                args.latency_x,
                args.connections,
                args.arrivals,
            )
            print(
                f"closed-loop peak {peak:.1f} req/s; within {args.latency_x:g}x the light-load p99: "
                f"{capacity:.1f} req/s",
                flush=True,
            )
        rate = args.load * capacity
        seconds = args.minutes * 60
        print(
            f"capacity {capacity:.1f} req/s; soak: {args.minutes:g} min of {args.arrivals} arrivals at "
            f"{rate:.1f} req/s ({args.load:.0%}), {args.connections} connections",
            flush=True,
        )
        outcomes, samples = asyncio.run(
            open_loop(
                port,
                headers,
                calls,
                rate,
                seconds,
                args.connections,
                probe,
                args.sample_s,
                args.seed,
                args.arrivals,
                on_minute=lambda m: print(f"  minute {m} done", flush=True),
            )
        )
    finally:
        stop(server)
    rows = per_minute(outcomes, samples, max(1, round(args.minutes)))
    verdict = judge(rows, samples, outcomes)
    print_table(rows)
    print(verdict.line())
    args.out.mkdir(parents=True, exist_ok=True)
    report = {
        "args": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "cpus": os.cpu_count(),
        "capacity_req_per_s": capacity,
        "closed_loop_peak_req_per_s": peak,
        "rate_req_per_s": rate,
        "ramp": ramp,
        "capacity_steps": steps,
        "minutes": [asdict(r) for r in rows],
        "samples": samples,
        # finer than a minute, to see how long a swing lasts
        "p99_per_10s_ms": [
            percentile_ms([o.latency_s for o in outcomes if t <= o.scheduled < t + 10], 0.99)
            for t in range(0, round(args.minutes * 60), 10)
        ],
        "checks": [asdict(c) for c in verdict.checks],
        "machine": verdict.machine,
        "passed": verdict.passed,
    }
    (args.out / "soak.json").write_text(json.dumps(report, indent=1), encoding="utf-8")
    plot(
        rows,
        samples,
        args.out / "soak.png",
        f"aiforge serve soak: {rate:.0f} req/s ({args.load:.0%} of {capacity:.0f}), "
        f"{'PASS' if verdict.passed else 'FAIL'}",
    )
    print(f"wrote {args.out / 'soak.json'} and {args.out / 'soak.png'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if verdict.passed else 1


if __name__ == "__main__":
    sys.exit(main())
