"""Step-time overhead of ``aiforge train`` against a hand-written PyTorch loop.

Both loops train the same model (fresh from the same seed) on the same batches (aiforge's
length-grouped order, dynamically padded) with the same optimizer, schedule and clipping; only the
loop around them differs (progress bar, logging windows, callbacks, checkpoint checks). Each loop
runs ``--rounds`` times, alternating, and the median step time is compared (target: <= 5 %).
Both wall time and process CPU time per step are reported: on a shared machine other jobs inflate
wall time at random, while CPU time still counts only the work this process does.

    python bench/bench_train.py                       # packaged all-MiniLM on the NSMC sample, CPU
    python bench/bench_train.py --steps 60 --device cuda
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from aiforge.train import load_config
from aiforge.train.batches import epoch_batches
from aiforge.train.callbacks import Callback, TrainState
from aiforge.train.loop import build_optimizer, get_lr_lambda, prepare, train


class StepClock(Callback):
    """Records the wall time at the end of every optimizer step."""

    def __init__(self) -> None:
        self.times: list[tuple[float, float]] = []

    def on_step_end(self, state: TrainState) -> None:
        self.times.append(stamp())


def stamp() -> tuple[float, float]:
    """(wall, process CPU) seconds, after the accelerator finished its queued work."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter(), time.process_time()


def step_times(stamps: list[tuple[float, float]], warmup: int) -> dict[str, list[float]]:
    pairs = list(zip(stamps[warmup:], stamps[warmup + 1 :], strict=False))
    return {"wall": [b[0] - a[0] for a, b in pairs], "cpu": [b[1] - a[1] for a, b in pairs]}


def hand_written(config, steps: int) -> list[tuple[float, float]]:
    """The loop a careful engineer writes by hand: pad, forward, backward, clip, step, schedule."""
    prep = prepare(config)
    model, cfg, device = prep.model, config.training, prep.device
    optimizer = build_optimizer(model, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, get_lr_lambda(cfg, steps))
    batches = epoch_batches(prep.train.lengths(), cfg.batch_size, cfg.seed, 0, cfg.length_grouping)
    pad_id = prep.task.tokenizer.pad_token_id or 0
    model.train()
    stamps = []
    for indices in batches[:steps]:
        rows = [prep.train.input_ids[i] for i in indices]
        longest = max(map(len, rows))
        ids = torch.tensor([r + [pad_id] * (longest - len(r)) for r in rows], device=device)
        mask = torch.tensor([[1] * len(r) + [0] * (longest - len(r)) for r in rows], device=device)
        labels = torch.tensor([prep.train.labels[i] for i in indices], device=device)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        loss.item()
        stamps.append(stamp())
    return stamps


def aiforge_loop(config, steps: int) -> list[tuple[float, float]]:
    clock = StepClock()
    train(
        config.model_copy(update={"training": config.training.model_copy(update={"max_steps": steps})}),
        callbacks=[clock],
        progress=True,
    )
    return clock.times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="examples/nsmc-sentiment.yaml")
    parser.add_argument("--model", default="packaged:all-minilm-l6-v2")
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (1 resists shared-CPU noise)"
    )
    parser.add_argument("--output-dir", default="bench/results/train-overhead")
    args = parser.parse_args()
    config = load_config(
        args.config,
        [
            f"model={args.model}",
            f"training.device={args.device}",
            f"output_dir={args.output_dir}",
            "tracking.enabled=false",
            "baseline=false",
            "training.checkpoint_every_steps=100000",
            "data.max_rows=2000",
            *([f"training.num_threads={args.threads}"] if args.threads else []),
        ],
    )
    results: dict[str, dict[str, list[float]]] = {
        "hand-written": {"wall": [], "cpu": []},
        "aiforge": {"wall": [], "cpu": []},
    }
    for _ in range(args.rounds):
        for name, loop in (("hand-written", hand_written), ("aiforge", aiforge_loop)):
            for clock, values in step_times(loop(config, args.steps), args.warmup).items():
                results[name][clock] += values
    print(
        f"\nmodel {args.model}, batch {config.training.batch_size}, "
        f"{args.steps} steps x {args.rounds} rounds, "
        f"device {args.device}, torch threads {torch.get_num_threads()}"
    )
    print(f"{'loop':<14}{'wall s/step (median)':>22}{'CPU s/step (median)':>22}")
    for name, clocks in results.items():
        print(
            f"{name:<14}{statistics.median(clocks['wall']):>22.4f}{statistics.median(clocks['cpu']):>22.4f}"
        )
    for clock in ("wall", "cpu"):
        hand, ours = (statistics.median(results[k][clock]) for k in ("hand-written", "aiforge"))
        print(f"overhead ({clock}): {100 * (ours / hand - 1):+.1f} % (target <= 5 %)")


if __name__ == "__main__":
    main()
