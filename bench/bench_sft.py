"""SFT training speed: aiforge's loop against a hand-written peft loop on the same rows, paired rounds.

    python examples/make_korquad_sft.py
    flock /tmp/aiforge-cpu.lock python bench/bench_sft.py [--model packaged:smollm2-135m-instruct]
        [--steps 10] [--rounds 3]

Both sides train the same LoRA (same config, same packed rows from aiforge's encoder, same batch order,
AdamW) for ``--steps`` optimizer steps; the hand-written side is the loop a peft tutorial shows
(forward, backward, clip, step, zero_grad). Each round runs both back to back, alternating who goes
first; the ratio aiforge / hand-written s/step is printed per round with the median and spread. EM /
F1 before and after fine-tuning come from the run's own report (``aiforge train
examples/korquad-sft.yaml``), not from here: generation would dominate this timing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parents[1] / "src"))

from aiforge.train import load_config  # noqa: E402
from aiforge.train.batches import epoch_batches  # noqa: E402
from aiforge.train.callbacks import Callback  # noqa: E402
from aiforge.train.loop import prepare, train  # noqa: E402


class StepClock(Callback):
    """Times optimizer steps inside aiforge's loop (from the first step's end, so loading is excluded)."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last = 0.0
        self.steps = 0

    def on_step_end(self, state) -> None:  # type: ignore[no-untyped-def]
        now = time.perf_counter()
        if self.first is None:
            self.first = now
        else:
            self.steps += 1
        self.last = now

    def seconds_per_step(self) -> float:
        return (self.last - (self.first or self.last)) / max(1, self.steps)


def config(args: argparse.Namespace, out: Path):  # type: ignore[no-untyped-def]
    return load_config(
        "examples/korquad-sft.yaml",
        [
            f"model={args.model}",
            f"output_dir={out}",
            f"training.max_steps={args.steps + 1}",
            "training.grad_accum=1",
            "training.checkpoint_every_steps=100000",
            "baseline=false",
            "tracking.enabled=false",
            "sft.eval_rows=0",
            "sft.gguf=false",
            "data.max_rows=64",
        ],
    )


def aiforge_round(args: argparse.Namespace, out: Path) -> float:
    clock = StepClock()
    train(config(args, out), callbacks=[clock], progress=False)
    return clock.seconds_per_step()


def hand_round(args: argparse.Namespace, out: Path) -> float:
    cfg = config(args, out)
    prep = prepare(cfg)  # the same model, LoRA and packed rows
    model, task, rows = prep.model, prep.task, prep.train
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.training.lr)
    batches = epoch_batches(rows.lengths(), cfg.training.batch_size, cfg.training.seed, 0, True)
    model.train()
    start = 0.0
    for step, indices in enumerate(batches[: args.steps + 1]):
        if step == 1:
            start = time.perf_counter()
        loss = model(**task.collate(rows, indices, "cpu")).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / args.steps


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="packaged:smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", default="runs/bench-sft")
    args = parser.parse_args()
    ratios = []
    for round_index in range(args.rounds):
        sides = [("aiforge", aiforge_round), ("hand", hand_round)]
        if round_index % 2:
            sides.reverse()
        times = {name: run(args, Path(args.out) / f"{name}-{round_index}") for name, run in sides}
        ratio = times["aiforge"] / times["hand"]
        ratios.append(ratio)
        print(
            f"round {round_index}: aiforge {times['aiforge']:.3f} s/step, hand {times['hand']:.3f} s/step, "
            f"ratio {ratio:.3f}",
            flush=True,
        )
    print(
        f"aiforge / hand-written s/step: median {statistics.median(ratios):.3f} "
        f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {args.rounds} paired rounds)"
    )


if __name__ == "__main__":
    main()
