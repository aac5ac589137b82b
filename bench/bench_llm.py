"""Chat decode speed: aiforge's GGUF runtime vs llama.cpp called directly through the same binding.

The packaged SmolLM2-135M-Instruct (GGUF Q4_1) answers the same chat, greedily, for ``--tokens``
tokens (the prompt asks for a long story, so it rarely stops early), through

* ``direct``: ``xllamacpp.Server.handle_chat_completions`` with the settings aiforge uses (same
  threads, slots, context), no aiforge code in the path;
* ``aiforge``: ``load_pipeline("text-generation").predict([messages])`` (validation, the pipeline's
  batching, the output record);
* ``stream``: ``pipe.stream_chat(messages)``, piece by piece, as ``aiforge chat`` and the server read it;
* ``4 slots``: four such chats at once through ``pipe.predict`` (llama.cpp decodes them together):
  aggregate tokens/s.

Rounds are interleaved (direct, aiforge, stream, 4 slots, direct, ...) so load from other processes hits
each alike; tokens/s is completion tokens / wall time (prompt evaluation included, about 30 tokens).
Target: aiforge >= 0.95x direct. Usage (on a shared machine, under the CPU lock)::

    flock /tmp/aiforge-cpu.lock python bench/bench_llm.py [--rounds 5] [--tokens 128]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

from aiforge.models import resolve
from aiforge.tasks import load_pipeline
from aiforge.tasks.llm import DEFAULT_SYSTEM, _load_xllamacpp, available_cores

MESSAGES = [
    {"role": "system", "content": DEFAULT_SYSTEM},
    {"role": "user", "content": "Write a long story about a dragon who learns to bake bread."},
]
SLOTS = 4


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=128)
    args = parser.parse_args()

    pipe = load_pipeline("text-generation", max_new_tokens=args.tokens, slots=SLOTS)
    xllamacpp = _load_xllamacpp()
    config = xllamacpp.CommonParams()
    config.model.path = resolve("packaged:smollm2-135m-instruct").location
    config.n_parallel, config.kv_unified, config.verbosity = SLOTS, True, -1
    config.cpuparams.n_threads = config.cpuparams_batch.n_threads = available_cores()
    direct_server = xllamacpp.Server(config)
    body = {"messages": MESSAGES, "max_tokens": args.tokens, "temperature": 0.0}

    def direct() -> int:
        return direct_server.handle_chat_completions(body)["usage"]["completion_tokens"]

    def aiforge() -> int:
        return pipe.predict([{"messages": MESSAGES}])[0]["completion_tokens"]

    def stream() -> int:
        return len(list(pipe.stream_chat(MESSAGES)))  # llama.cpp streams one piece per token

    def four_slots() -> int:
        return sum(o["completion_tokens"] for o in pipe.predict([{"messages": MESSAGES}] * SLOTS))

    runs: dict[str, Callable[[], int]] = {"direct": direct, "aiforge": aiforge, "stream": stream}
    runs[f"{SLOTS} slots"] = four_slots
    for run in runs.values():
        run()  # warm-up: first-call allocations
    rates: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, run in runs.items():
            started = time.perf_counter()
            tokens = run()
            rates[name].append(tokens / (time.perf_counter() - started))

    print(f"SmolLM2-135M Q4_1, {available_cores()} threads, {args.tokens} tokens, {args.rounds} rounds")
    for name, values in rates.items():
        print(
            f"{name:>8}: median {statistics.median(values):6.1f} tokens/s (min {min(values):.1f}, "
            f"max {max(values):.1f})"
        )
    ratios = [a / d for a, d in zip(rates["aiforge"], rates["direct"], strict=True)]
    print(
        f"aiforge/direct per round: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f})"
    )
    batched = [b / d for b, d in zip(rates[f"{SLOTS} slots"], rates["direct"], strict=True)]
    print(f"{SLOTS} slots/direct per round: median {statistics.median(batched):.2f}x")


if __name__ == "__main__":
    main()
