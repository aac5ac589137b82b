"""Concurrent chat streams through ``aiforge serve``: llama.cpp's slots vs one request at a time.

Two ``aiforge serve`` processes (uvicorn) serve the packaged SmolLM2-135M-Instruct GGUF:

* ``slots``: aiforge's configuration, ``slots=8`` (llama.cpp decodes the 8 requests in one batch);
* ``naive``: the same server and binding with ``slots=1``, i.e. a server that runs one request at a
  time (the others wait in llama.cpp's queue).

Each round runs, on each server back to back (order alternating between rounds), one stream alone,
then ``--streams`` streams at once (the official ``openai`` client, one thread per stream, each with its
own prompt, greedy, ``--tokens`` tokens). Reported: aggregate tokens/s (completion tokens / wall time)
for the concurrent run and its ratio to the lone stream on the same server, time to first token
(p50 / p95 over the concurrent streams, client side: request sent -> first content chunk), and the
slots/naive ratios with their spread over the rounds. Target: slots >= 2x one stream. Usage (on a
shared machine, under the CPU lock)::

    flock /tmp/aiforge-cpu.lock python bench/bench_llm_serve.py [--rounds 3] [--streams 8] [--tokens 64]

Measured (2 shared cores, load average about 4 from other processes, 2026-12-05): 8 streams of 64
tokens, 3 rounds: slots 1.55x one stream (min 1.22, max 1.62), naive 0.76x; slots vs naive 1.74x
aggregate tokens/s (1.65-2.04), p50 time to first token 0.42 s vs 6.45 s (p95 2.18 s vs 10.84 s).
128 tokens, 2 rounds: slots 1.38x one stream, 1.50x naive (1.36-1.64), p50 TTFT 3.25 s vs 13.62 s.
Re-measured unchanged code (2026-12-06, under the CPU lock, other agents' tests running: one stream
only 34 tokens/s against 63 before), 8 streams of 64 tokens, 3 rounds: slots **3.63x** one stream
(3.30-3.82), naive 0.98x; slots vs naive 3.69x (3.38-3.88); TTFT p50 0.20 s vs 7.31 s, p95 0.71 s vs
12.99 s. The ratio depends on the load: a lone stream suffers most from cores taken by other processes
(each decode step waits for both threads), a batch of 8 shares that wait; on a quieter machine it was
1.55x. The 2x target is met under load, not on an idle 2-core machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai

TOPICS = (
    "a dragon who learns to bake bread",
    "a lighthouse keeper and a lost whale",
    "a robot that paints sunsets",
    "two rival chess players on a train",
    "a city where it never stops raining",
    "a cat who runs a bookshop",
    "the last tree on a space station",
    "a violinist who can hear colours",
    "a detective who is afraid of the dark",
    "a village that forgets one word every day",
    "a mountain that walks at night",
    "a baker who delivers bread by balloon",
)


@dataclass(frozen=True)
class StreamResult:
    first_token_s: float
    tokens: int


@dataclass(frozen=True)
class Run:
    wall_s: float
    streams: list[StreamResult]

    @property
    def tokens_per_s(self) -> float:
        return sum(s.tokens for s in self.streams) / self.wall_s


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextmanager
def aiforge_serve(slots: int, folder: Path) -> Iterator[str]:
    """``aiforge serve`` in its own process, the packaged SmolLM2 with ``slots``; yields its /v1 URL."""
    port = free_port()
    config = folder / f"serve-{slots}.yaml"
    config.write_text(
        "models:\n"
        "  - name: chat\n"
        "    task: text-generation\n"
        "    model: packaged:smollm2-135m-instruct\n"
        f"    params: {{slots: {slots}, context_size: 4096}}\n"
        "    max_queue: 64\n"
        "log_level: warning\n"
    )
    command = [sys.executable, "-m", "aiforge", "serve", str(config), "--port", str(port), "--no-demo"]
    server = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"aiforge serve (slots={slots}) did not become ready")
            time.sleep(0.2)
        yield f"{base}/v1"
    finally:
        server.terminate()
        server.wait(30)


def one_stream(client: openai.OpenAI, topic: str, tokens: int) -> StreamResult:
    started = time.perf_counter()
    first: float | None = None
    stream = client.chat.completions.create(
        model="chat",
        messages=[{"role": "user", "content": f"Write a long story about {topic}."}],
        max_tokens=tokens,
        stream=True,
        stream_options={"include_usage": True},
    )
    made = 0
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - started
        if chunk.usage is not None:
            made = chunk.usage.completion_tokens
    return StreamResult(first if first is not None else float("nan"), made)


def run(client: openai.OpenAI, streams: int, tokens: int, offset: int) -> Run:
    topics = [TOPICS[(offset + i) % len(TOPICS)] for i in range(streams)]
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(streams) as pool:
        results = list(pool.map(lambda t: one_stream(client, t, tokens), topics))
    return Run(time.perf_counter() - started, results)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def spread(values: list[float]) -> str:
    return f"{statistics.median(values):.2f}x (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--streams", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    servers = {"slots": args.streams, "naive": 1}
    rows: dict[str, list[tuple[Run, Run]]] = {name: [] for name in servers}
    with tempfile.TemporaryDirectory() as folder, contextlib.ExitStack() as stack:
        clients = {
            name: openai.OpenAI(
                base_url=stack.enter_context(aiforge_serve(slots, Path(folder))),
                api_key="none",
                max_retries=0,
                timeout=600,
            )
            for name, slots in servers.items()
        }
        for client in clients.values():  # warm: first requests pay for page faults
            run(client, 2, 8, 0)
        for round_ in range(args.rounds):
            order = list(servers) if round_ % 2 == 0 else list(reversed(servers))
            for name in order:
                alone = run(clients[name], 1, args.tokens, round_)
                together = run(clients[name], args.streams, args.tokens, round_)
                rows[name].append((alone, together))
                firsts = [s.first_token_s for s in together.streams]
                print(
                    f"round {round_ + 1} {name:5s}: 1 stream {alone.tokens_per_s:6.1f} tok/s | "
                    f"{args.streams} streams {together.tokens_per_s:6.1f} tok/s aggregate "
                    f"({together.tokens_per_s / alone.tokens_per_s:.2f}x one stream) | "
                    f"TTFT p50 {percentile(firsts, 0.5):.2f}s p95 {percentile(firsts, 0.95):.2f}s",
                    flush=True,
                )
    print(f"\n{args.streams} concurrent streams, {args.tokens} tokens each, {args.rounds} rounds:")
    for name in servers:
        ratios = [together.tokens_per_s / alone.tokens_per_s for alone, together in rows[name]]
        firsts = [s.first_token_s for _, together in rows[name] for s in together.streams]
        print(
            f"  {name:5s}: aggregate vs one stream {spread(ratios)}; "
            f"TTFT p50 {percentile(firsts, 0.5):.2f}s p95 {percentile(firsts, 0.95):.2f}s"
        )
    throughput = [
        s[1].tokens_per_s / n[1].tokens_per_s for s, n in zip(rows["slots"], rows["naive"], strict=True)
    ]
    ttft = [
        statistics.median(f.first_token_s for f in n[1].streams)
        / statistics.median(f.first_token_s for f in s[1].streams)
        for s, n in zip(rows["slots"], rows["naive"], strict=True)
    ]
    print(f"  slots vs naive: aggregate tokens/s {spread(throughput)}; p50 TTFT naive/slots {spread(ttft)}")


if __name__ == "__main__":
    main()
