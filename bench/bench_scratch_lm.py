"""Benchmark training from scratch: nanoGPT's CPU recipe in aiforge against a hand-written loop.

Same model (GPT-2 config, 4 layers, 4 heads, 128 wide, blocks of 64), same data (the packaged NSMC
review text, character tokenizer), same batches (12 blocks, the same seeded order), same optimizer
(AdamW, decay on matrices only, lr 1e-3, cosine after 5 % warm-up, clip 1.0). The hand-written loop
is nanoGPT's ``train.py`` inner loop: forward, backward, clip, step, zero_grad, nothing else.

* **iterations/s**: paired rounds, aiforge then the hand loop back to back, ``--iters`` steps each
  (the rate between the first and the last step: preparation and evaluation excluded); the ratio of
  each round is printed, then the median and the range. Target: >= 0.95x.
* **final validation loss**: each side's loss on the validation text after its last round; equal
  within noise (same seed: the difference measures the loop, not luck).
* **bits per character**: aiforge's model against the interpolated Kneser-Ney character 5-gram
  fitted on the same training text, with the wall time of each.

Run alone (it is a timing)::

    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_scratch_lm.py --iters 2000 --rounds 1
    flock /tmp/aiforge-cpu.lock .venv/bin/python bench/bench_scratch_lm.py --iters 100 --rounds 3
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from pathlib import Path

import torch

from aiforge.train import load_config, train
from aiforge.train.batches import epoch_batches
from aiforge.train.callbacks import Callback, TrainState
from aiforge.train.config import TrainConfig
from aiforge.train.loop import autocast_factory, build_optimizer, get_lr_lambda, prepare

EXAMPLE = Path(__file__).parents[1] / "examples" / "korean-char-lm.yaml"


class StepClock(Callback):
    """Wall time at each optimizer step's end."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_end(self, state: TrainState) -> None:
        self.times.append(time.perf_counter())


def rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


# nanoGPT's shakespeare_char CPU recipe, whatever the example's own settings are.
NANOGPT_CPU_RECIPE = [
    "model.architecture=gpt2",
    "model.layers=4",
    "model.heads=4",
    "model.hidden=128",
    "model.context=64",
    "model.dropout=0.0",
    "training.batch_size=12",
    "training.lr=1.0e-3",
    "training.warmup_ratio=0.05",
]


def config_for(iters: int, output: Path, threads: int) -> TrainConfig:
    return load_config(
        EXAMPLE,
        [
            *NANOGPT_CPU_RECIPE,
            f"training.max_steps={iters}",
            f"output_dir={output}",
            f"training.num_threads={threads}",
            "training.eval_every_steps=1000000",  # evaluate once, at the end
            "training.checkpoint_every_steps=1000000",
            "training.log_every_steps=1000000",
            "tracking.enabled=false",
            "baseline=false",
        ],
    )


def run_aiforge(config: TrainConfig) -> tuple[float, float, float]:
    clock = StepClock()
    result = train(config, callbacks=[clock], progress=False)
    validation = result.metrics["validation"]
    return rate(clock.times), validation["loss"], validation["bits_per_char"]


def run_hand_loop(config: TrainConfig) -> tuple[float, float]:
    """nanoGPT's loop on the model, blocks and batch order aiforge prepared (no aiforge code runs
    between the steps)."""
    prep = prepare(config)
    cfg, model, blocks = config.training, prep.model, prep.train.ids
    optimizer = build_optimizer(model, cfg)
    lr_at = get_lr_lambda(cfg, cfg.max_steps or 1)
    times, step, epoch = [], 0, 0
    model.train()
    while step < (cfg.max_steps or 1):
        for indices in epoch_batches([1] * len(blocks), cfg.batch_size, cfg.seed, epoch, False):
            for group in optimizer.param_groups:
                group["lr"] = cfg.lr * lr_at(step)
            x = blocks[indices]
            loss = model(input_ids=x, labels=x).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or math.inf)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            times.append(time.perf_counter())
            if step >= (cfg.max_steps or 1):
                break
        epoch += 1
    autocast, _ = autocast_factory(cfg.mixed_precision, prep.device)
    metrics = prep.task.evaluate(model, prep.validation, prep.device, cfg.batch_size * 2, autocast)
    return rate(times), metrics["loss"]


def loop_comparison(iters: int, rounds: int, threads: int, tmp: Path) -> None:
    ratios: list[float] = []
    losses: tuple[float, float] = (math.nan, math.nan)
    for round_index in range(rounds):
        ours, loss, _ = run_aiforge(config_for(iters, tmp / f"aiforge{round_index}", threads))
        theirs, hand_loss = run_hand_loop(config_for(iters, tmp / f"hand{round_index}", threads))
        ratios.append(ours / theirs)
        losses = (loss, hand_loss)
        print(
            f"round {round_index + 1}: aiforge {ours:.2f} it/s, hand loop {theirs:.2f} it/s, "
            f"ratio {ours / theirs:.3f}; val loss {loss:.4f} vs {hand_loss:.4f}",
            flush=True,
        )
    print(
        f"iterations/s ratio (aiforge / hand loop): median {statistics.median(ratios):.3f}, "
        f"range {min(ratios):.3f}-{max(ratios):.3f} over {len(ratios)} round(s) of {iters} steps"
    )
    print(
        f"final validation loss: aiforge {losses[0]:.4f}, hand loop {losses[1]:.4f} "
        f"(difference {losses[0] - losses[1]:+.4f})"
    )


def ngram_comparison(model_dir: Path | None, overrides: list[str], output: Path) -> None:
    """The example's character LM against the Kneser-Ney 5-gram, per held-out review (bpc.py)."""
    import transformers

    from aiforge.train.bpc import (
        bootstrap,
        lm_alphabet,
        lm_document_bits,
        map_unseen,
        ngram_document_bits,
        normalize,
    )
    from aiforge.train.corpus import load_corpus
    from aiforge.train.ngram import KneserNey

    config = load_config(
        EXAMPLE, [f"output_dir={output}", "tracking.enabled=false", "baseline=false", *overrides]
    )
    wall = math.nan
    if model_dir is None:
        started = time.perf_counter()
        train(config, progress=False)
        wall = time.perf_counter() - started
        model_dir = Path(config.output_dir) / "model"
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir)
    dataset = load_corpus(config.data)
    reviews = [normalize(text) for text in dataset.validation.inputs]
    alphabet = lm_alphabet(tokenizer)
    started = time.perf_counter()
    ngram = KneserNey(map_unseen(normalize("\n".join(dataset.train.inputs)), alphabet))
    ngram_fit = time.perf_counter() - started
    sides = {
        "char 5-gram (interpolated Kneser-Ney)": ngram_document_bits(
            ngram, [map_unseen(review, alphabet) for review in reviews]
        ),
        f"aiforge char LM ({config.model.describe() if hasattr(config.model, 'describe') else ''})": (
            lm_document_bits(model, tokenizer, reviews, int(model.config.max_position_embeddings))
        ),
    }
    intervals = bootstrap(sides)
    characters = sum(next(iter(sides.values())).symbols)
    print(
        f"bits per character on {len(reviews):,} held-out reviews ({characters:,} characters incl. one "
        f"end-of-review symbol each; training text {sum(map(len, dataset.train.inputs)):,} characters):"
    )
    for name, side in sides.items():
        low, high = intervals[name]
        print(f"  {name:48s} {side.bits_per_char:.3f}  95% CI [{low:.3f}, {high:.3f}]")
    for name, (low, high) in intervals.items():
        if " - " in name:
            print(f"  difference {name}: 95% CI [{low:+.3f}, {high:+.3f}] (paired bootstrap over reviews)")
    trained = "not trained here (--model given)" if wall != wall else f"{wall / 60:.1f} min"
    print(
        f"wall time: char LM training {trained} on {config.training.num_threads} thread(s), "
        f"5-gram fit {ngram_fit:.0f} s"
    )
    from aiforge.train.lm import SAMPLE_TEMPERATURE

    torch.manual_seed(0)
    for prompt in ["이 영화", "배우들 연기가", "진짜"]:
        ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        out = model.generate(  # type: ignore[operator]
            ids,
            attention_mask=torch.ones_like(ids),
            do_sample=True,
            max_new_tokens=int(model.config.max_position_embeddings) - ids.shape[1],
            temperature=SAMPLE_TEMPERATURE,
            top_k=0,
            pad_token_id=tokenizer.pad_token_id,
        )
        print(f"  sample: {tokenizer.decode(out[0], skip_special_tokens=True).splitlines()[0]!r}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--iters", type=int, default=2000, help="loop comparison: steps per round")
    parser.add_argument("--rounds", type=int, default=1, help="loop comparison: paired rounds (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--ngram",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="train examples/korean-char-lm.yaml and score it against the 5-gram per held-out review",
    )
    parser.add_argument("--model", type=Path, help="score this trained model directory instead of training")
    parser.add_argument(
        "--output", type=Path, help="keep the trained example here (default: a temporary folder)"
    )
    parser.add_argument("--set", action="append", default=[], help="KEY=VALUE override of the example")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        if args.rounds:
            loop_comparison(args.iters, args.rounds, args.threads, Path(tmp))
        if args.ngram:
            ngram_comparison(args.model, args.set, args.output or Path(tmp) / "example")


if __name__ == "__main__":
    main()
