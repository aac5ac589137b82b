"""The quickstart recipe on unseen NSMC rows: model vs TF-IDF baseline vs their stack, with intervals.

Trains ``examples/nsmc-sentiment.yaml`` exactly as ``aiforge quickstart`` does (same config, same
packaged sample: its test split is 5,000 NSMC reviews that no training row repeats), untracked,
and prints each predictor's test accuracy with its 95 % bootstrap interval, the paired McNemar
tests (ensemble vs baseline, model vs baseline, ensemble vs model), the temperature's ECE, and the
wall time of training with the machine's load average around it (2 shared cores: a busy machine
stretches the time, not the accuracy). Levers are measured with ``--set``:

    flock /tmp/aiforge-cpu.lock python bench/bench_quickstart.py
    python bench/bench_quickstart.py --set training.max_length=48 --json lever.json
    python bench/bench_quickstart.py --train ../nsmc-12k/train.tsv --set training.epochs=2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from aiforge.train import load_config, train
from aiforge.train.significance import describe

ROOT = Path(__file__).resolve().parents[1]


def cpu_seconds() -> float:
    """CPU time of this process (user + system): on a shared machine it stays near what the run
    costs alone, while the wall time stretches with the other processes' load."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def accuracy_line(name: str, scores: dict[str, Any]) -> str:
    low, high = scores.get("ci", {}).get("accuracy", (float("nan"), float("nan")))
    return f"{name:<30} {scores['accuracy']:>8.4f}  [{low:.4f}, {high:.4f}]"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--train", help="training file; default: the packaged sample's")
    parser.add_argument("--test", help="test file; default: the packaged sample's (5,000 unseen rows)")
    parser.add_argument("--set", action="append", default=[], help="config overrides (the levers)")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="aiforge-quickstart-bench-"))
    overrides = [f"output_dir={work / 'run'}", "tracking.enabled=false"]
    overrides += [
        f"data.{name}={path}" for name, path in (("train", args.train), ("test", args.test)) if path
    ]
    config = load_config(ROOT / "examples" / "nsmc-sentiment.yaml", overrides=overrides + args.set)
    load_before = os.getloadavg()
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = train(config, progress=False)
    wall, cpu = time.perf_counter() - started, cpu_seconds() - cpu_started
    load_after = os.getloadavg()

    test = result.metrics["test"]
    baseline = (result.baseline or {})["test"]
    stacked = (result.ensemble or {}).get("test")
    print(f"\nquickstart recipe {' '.join(args.set)}: backbone {result.backbone}, {result.steps} steps")
    print(
        f"training wall time {wall / 60:.1f} min, CPU time {cpu / 60:.1f} min; 1-min load average "
        f"{load_before[0]:.1f} before, {load_after[0]:.1f} after, on {os.cpu_count()} cores"
    )
    print(f"{'test rows: ' + str(result.comparison['test']['n']):<30} {'accuracy':>8}  95 % interval")
    print(accuracy_line("fine-tuned model", test))
    print(accuracy_line(f"baseline ({(result.baseline or {}).get('name')})", baseline))
    if stacked:
        print(accuracy_line("ensemble (model + baseline)", stacked))
    print(f"model:    {describe(result.comparison['test'])}")
    if stacked:
        print(f"ensemble: {describe(stacked['vs_baseline'])}")
        print(
            f"ensemble vs model alone: {describe(stacked['vs_model']).replace('its baseline', 'the model')}"
        )
    if result.calibration:
        c = result.calibration
        print(
            f"model ECE {c['ece_before']:.4f} -> {c['ece_after']:.4f} (temperature {c['temperature']:.3f})"
            + (f"; ensemble ECE {stacked['ece']:.4f}" if stacked else "")
        )
    if args.json:
        figures = {
            "overrides": args.set,
            "wall_s": round(wall, 1),
            "cpu_s": round(cpu, 1),
            "load_average": [round(load_before[0], 2), round(load_after[0], 2)],
            "steps": result.steps,
            "model": {k: test[k] for k in ("accuracy", "macro_f1", "ci")},
            "baseline": {k: baseline[k] for k in ("accuracy", "macro_f1", "ci")},
            "comparison": result.comparison["test"],
            "ensemble": stacked,
            "calibration": {k: v for k, v in (result.calibration or {}).items() if "reliability" not in k},
            "max_length": json.loads((result.model_dir / "aiforge.json").read_text())["max_length"],
        }
        args.json.write_text(json.dumps(figures, indent=2), encoding="utf-8")


if __name__ == "__main__":
    main()
