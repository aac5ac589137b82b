"""Ray backend vs local backend, side by side in one run (ratios; never a timed test assertion).

On one node (a Ray head started here with ``--num-cpus`` = the cores), the MiniLM classifier of
``bench_serve.py``:

* serving: requests/s of ``aiforge serve`` (local, one process) vs the Ray deployment (gateway +
  ``--replicas`` AppReplicas), same clients and payloads;
* batch inference: items/s of ``aiforge run -i -o`` vs ``--backend ray --workers N`` (wall time of
  the whole command, model loading included);
* training: optimizer steps/s (and samples/s) of Ray Train with 2 workers vs 1, tiny max_steps run.

Usage: python bench/bench_ray.py [--requests 512] [--items 2000] [--replicas 2] [--workers 2]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.bench_serve import build_model, drive, free_port, load_sentences, payloads, start, stop  # noqa: E402

RAY = str(Path(sys.executable).parent / "ray")
AIFORGE = [sys.executable, "-m", "aiforge.cli"]


def serve_config(model_dir: Path, port: int, root: Path) -> Path:
    path = root / f"serve-{port}.yaml"
    model = {
        "name": "clf",
        "task": "text-classification",
        "model": str(model_dir),
        "device": "cpu",
        "max_batch_size": 16,
        "max_wait_ms": 5,
        "max_queue": 512,
    }
    path.write_text(
        json.dumps(
            {"host": "127.0.0.1", "port": port, "demo": False, "log_level": "warning", "models": [model]}
        ),
        encoding="utf-8",
    )
    return path


def bench_serving(model_dir: Path, sentences: list[str], args: argparse.Namespace, root: Path) -> dict:
    from aiforge.scale.serve import Scaling, deploy, undeploy
    from aiforge.serve import load_settings

    bodies = payloads(sentences[: args.requests])
    port = free_port()
    local = start(
        [*AIFORGE, "serve", str(serve_config(model_dir, port, root))], port, "/readyz", root / "l.log"
    )
    try:
        asyncio.run(drive(port, "/v1/models/clf/predict", bodies[:64], args.clients))  # warm-up
        local_load = asyncio.run(drive(port, "/v1/models/clf/predict", bodies, args.clients))
    finally:
        stop(local)
    ray_port = free_port()
    settings = load_settings(serve_config(model_dir, ray_port, root))
    scaling = Scaling(replicas=args.replicas, cpus_per_replica=max(1, args.cpus // args.replicas))
    deploy(settings, scaling, address=args.address)
    try:
        asyncio.run(drive(ray_port, "/v1/models/clf/predict", bodies[:64], args.clients))
        ray_load = asyncio.run(drive(ray_port, "/v1/models/clf/predict", bodies, args.clients))
    finally:
        undeploy()
    return {
        "local_rps": local_load.throughput,
        "ray_rps": ray_load.throughput,
        "ratio": ray_load.throughput / local_load.throughput,
        "local_p99_ms": local_load.percentile(0.99),
        "ray_p99_ms": ray_load.percentile(0.99),
        "ray_statuses": ray_load.statuses,
    }


def bench_batch(
    model_dir: Path, sentences: list[str], args: argparse.Namespace, root: Path, env: dict
) -> dict:
    src = root / "items.jsonl"
    src.write_text(
        "".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in sentences[: args.items])
    )
    common = ["run", "text-classification", "-m", str(model_dir), "-i", str(src), "-b", "16"]
    timings = {}
    for name, extra in (("local", []), ("ray", ["--backend", "ray", "--workers", str(args.workers)])):
        out = root / f"{name}.jsonl"
        started = time.perf_counter()
        subprocess.run([*AIFORGE, *common, "-o", str(out), *extra], check=True, env=env, capture_output=True)
        timings[name] = args.items / (time.perf_counter() - started)
    same = (root / "local.jsonl").read_bytes() == (root / "ray.jsonl").read_bytes()
    return {
        "local_items_s": timings["local"],
        "ray_items_s": timings["ray"],
        "ratio": timings["ray"] / timings["local"],
        "identical_output": same,
    }


def bench_training(model_dir: Path, args: argparse.Namespace, root: Path) -> dict:
    from aiforge.scale.train import train
    from aiforge.train import load_config

    rates = {}
    for workers in (1, 2):
        config = load_config(
            None,
            [
                f"model={model_dir}",
                f"output_dir={root / f'train-{workers}'}",
                "data.train=packaged:nsmc_sample/train.tsv",
                "data.validation_split=0.1",
                "training.batch_size=16",
                "training.max_length=64",
                f"training.max_steps={args.steps}",
                "training.num_threads=1",
                "tracking.enabled=false",
                "baseline=false",
            ],
        )
        result = train(config, workers=workers, address=args.address)
        rates[workers] = result.steps / result.seconds
    return {
        "steps_s_1": rates[1],
        "steps_s_2": rates[2],
        "ratio_steps": rates[2] / rates[1],
        "ratio_samples": 2 * rates[2] / rates[1],
    }


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=512)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    os.environ.update(env)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    model_dir = build_model(root / "minilm-clf")
    sentences = load_sentences(max(args.items, args.requests))
    port = free_port()
    args.address = f"127.0.0.1:{port}"
    subprocess.run(
        [
            RAY,
            "start",
            "--head",
            f"--port={port}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={args.cpus}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            "--include-log-monitor=false",
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    try:
        import ray

        ray.init(address=args.address, logging_level="WARNING")
        results = {
            "batch": bench_batch(model_dir, sentences, args, root, {**env, "RAY_ADDRESS": args.address}),
            "serving": bench_serving(model_dir, sentences, args, root),
            "training": bench_training(model_dir, args, root),
        }
    finally:
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    print(json.dumps(results, indent=2))
    print(
        f"serving ray/local {results['serving']['ratio']:.2f}x; "
        f"batch ray/local {results['batch']['ratio']:.2f}x; "
        f"training 2 vs 1 workers {results['training']['ratio_steps']:.2f}x steps/s "
        f"({results['training']['ratio_samples']:.2f}x samples/s)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
