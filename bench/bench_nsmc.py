"""NSMC train -> test with the offline default backbone, next to the TF-IDF baseline.

Issue 4's accuracy benchmark: fine-tune on ``../shared/data/nsmc/train.tsv`` (all 150k rows, or
the first ``--train-rows``) and score on ``test.tsv`` (25k rows, or ``--test-rows``), with the same
code path as ``aiforge train`` (``examples/nsmc-sentiment.yaml`` plus overrides). Every run fits
the character n-gram TF-IDF + logistic-regression baseline on the same split, so the two numbers
printed side by side come from one run on the same data.

    python bench/bench_nsmc.py                                   # full NSMC, offline default backbone
    python bench/bench_nsmc.py --train-rows 20000 --epochs 1     # a CPU-sized slice
    python bench/bench_nsmc.py --model packaged:all-minilm-l6-v2 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import tempfile
import time
from pathlib import Path

from aiforge.train import load_config, train

ROOT = Path(__file__).resolve().parents[1]
NSMC = ROOT.parent / "shared" / "data" / "nsmc"


def write_slice(source: Path, target: Path, rows: int | None) -> int:
    """The first ``rows`` rows of an NSMC tsv as (text, label) with label names; returns the count."""
    written = 0
    with source.open(encoding="utf-8", newline="") as fin, target.open("w", encoding="utf-8") as fout:
        out = csv.writer(fout, delimiter="\t", lineterminator="\n")
        out.writerow(["text", "label"])
        for row in csv.DictReader(fin, delimiter="\t", quoting=csv.QUOTE_NONE):
            if rows is not None and written >= rows:
                break
            text = (row.get("document") or "").strip()
            if text:
                out.writerow([text.replace("\t", " "), "positive" if row["label"] == "1" else "negative"])
                written += 1
    return written


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", default="auto", help="backbone; auto = the quickstart's default")
    parser.add_argument("--train-rows", type=int, default=None)
    parser.add_argument("--test-rows", type=int, default=None)
    parser.add_argument("--epochs", type=float, default=None, help="default: the quickstart config's")
    parser.add_argument("--batch-size", type=int, default=None)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--set", action="append", default=[], help="extra config overrides")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aiforge-nsmc-"))
    n_train = write_slice(NSMC / "train.tsv", work / "train.tsv", args.train_rows)
    n_test = write_slice(NSMC / "test.tsv", work / "test.tsv", args.test_rows)
    overrides = [
        f"model={args.model}",
        f"output_dir={work / 'run'}",
        f"data.train={work / 'train.tsv'}",
        f"data.test={work / 'test.tsv'}",
        "data.validation_split=0.02",
        f"training.device={args.device}",
        "training.checkpoint_every_steps=2000",
        "tracking.enabled=false",
    ]
    for field, value in (
        ("epochs", args.epochs),
        ("batch_size", args.batch_size),
        ("num_threads", args.threads),
    ):
        if value is not None:
            overrides.append(f"training.{field}={value}")
    overrides += args.set
    config = load_config(ROOT / "examples" / "nsmc-sentiment.yaml", overrides=overrides)
    started = time.perf_counter()
    result = train(config)
    wall = time.perf_counter() - started
    test = result.metrics["test"]["accuracy"]
    baseline = (result.baseline or {}).get("test", {}).get("accuracy", float("nan"))
    print(
        f"\nNSMC {n_train} train rows -> {n_test} test rows, {config.training.epochs:g} epochs, "
        f"backbone {result.backbone}, device {config.training.device}"
    )
    print(f"{'model':<34} {'test accuracy':>13} {'wall':>10}")
    print(f"{'fine-tuned backbone':<34} {test:>13.4f} {wall / 60:>8.1f} m")
    print(f"{'TF-IDF char n-grams + logreg':<34} {baseline:>13.4f}")
    print(f"fine-tuned - baseline: {test - baseline:+.4f}")


if __name__ == "__main__":
    main()
