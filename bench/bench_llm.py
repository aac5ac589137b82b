"""Chat decode speed: aiforge's GGUF runtime vs llama.cpp called directly through the same binding.

The packaged SmolLM2-135M-Instruct (GGUF Q4_1) answers the same chat, greedily, for ``--tokens``
tokens (the prompt asks for a long story, so it rarely stops early), through

* ``direct``: ``xllamacpp.Server.handle_chat_completions`` with the settings aiforge uses (same
  threads, slots, context), no aiforge code in the path;
* ``aiforge``: ``load_pipeline("text-generation").predict([messages])`` (validation, the pipeline's
  batching, the output record);
* ``stream``: ``pipe.stream_chat(messages)``, piece by piece, as ``aiforge chat`` and the server read it;
* ``4 slots``: four such chats at once through ``pipe.predict`` (llama.cpp decodes them together):
  aggregate tokens/s;
* ``hf``: transformers ``generate`` on the same GGUF weights (``from_pretrained(dir, gguf_file=...)``
  dequantises them to fp32), greedy, the same chat template and threads (``--no-transformers`` skips it:
  it loads in about 20 s).

Rounds are interleaved (direct, aiforge, stream, 4 slots, direct, ...) so load from other processes hits
each alike; tokens/s is completion tokens / wall time (prompt evaluation included, about 30 tokens).
Target: aiforge >= 0.95x direct; hf/direct says what llama.cpp buys over transformers on the same
weights. Usage (on a shared machine, under the CPU lock)::

    flock /tmp/aiforge-cpu.lock python bench/bench_llm.py [--rounds 5] [--tokens 128]

Measured (2026-12-06, 2 cores under the CPU lock with other agents' tests running, --rounds 3
--tokens 64): direct 35.3 tokens/s, aiforge 34.2 (0.976x direct per round, 0.969-0.988), stream 34.4,
4 slots 101.2 aggregate (2.81x), transformers generate 18.2 (0.52x direct, 0.49-0.53).
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
    parser.add_argument("--no-transformers", action="store_true", help="skip transformers generate")
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
    if not args.no_transformers:
        runs["hf"] = transformers_generate(config.model.path, args.tokens)
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
    for name in (f"{SLOTS} slots", "hf"):
        if name in rates:
            per_round = [b / d for b, d in zip(rates[name], rates["direct"], strict=True)]
            print(
                f"{name}/direct per round: median {statistics.median(per_round):.2f}x "
                f"(min {min(per_round):.2f}, max {max(per_round):.2f})"
            )


def transformers_generate(gguf_path: str, tokens: int) -> Callable[[], int]:
    """transformers ``generate`` on the GGUF's weights, dequantised to fp32: one greedy chat."""
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(available_cores())
    folder, name = str(Path(gguf_path).parent), Path(gguf_path).name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    ids = tokenizer.apply_chat_template(MESSAGES, add_generation_prompt=True, return_tensors="pt")
    ids = ids if isinstance(ids, torch.Tensor) else ids["input_ids"]

    def generate() -> int:
        with torch.inference_mode():
            out = model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                max_new_tokens=tokens,
                do_sample=False,
                pad_token_id=tokenizer.eos_token_id,
            )
        return int(out.shape[1] - ids.shape[1])

    return generate


if __name__ == "__main__":
    main()
