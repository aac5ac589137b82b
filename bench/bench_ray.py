"""Ray backend vs local backend on one node, side by side in one run (ratios; never a timed test).

A Ray head is started here with ``--num-cpus`` = the cores (what a user's cluster would be; its
start is not timed), and the MiniLM classifier of ``bench_serve.py`` is measured three ways:

* **batch inference**: ``aiforge run -i ITEMS.jsonl -o out.jsonl`` locally vs ``--backend ray``
  (default actors: one per cluster CPU), both as the real command in a subprocess, run local, Ray,
  local (Ray against the mean of the two local runs). Two figures each: *steady-state* items/s
  (from the first output line to the last: model loaded, pool running) and *end-to-end* items/s
  (the whole command: Python start, Ray connect, actors loading the model). The outputs must be
  byte-identical. Before them, a one-window Ray job starts Ray Data's own detached actors, as any
  earlier job on a cluster would have (its time to first output is printed).
* **serving**: requests/s of ``aiforge serve`` (one process) vs the Ray deployment with one replica
  holding every CPU (like for like), then with ``--replicas`` replicas sharing them; same clients,
  payloads and warm-up, measured in ``--rounds`` paired rounds (a local load, then a Ray load,
  back to back, the local server idling meanwhile: the machine's speed drifts between minutes, so
  each Ray figure is set against local figures taken alongside it). For each ``--ingress``:
  ``direct`` (HAProxy -> the replicas' own HTTP servers) and ``gateway`` (Ray's Python proxy ->
  Gateway -> replicas), each on a Serve instance of its own. Then, per ingress, the *Ray Serve
  floor*: a trivial ingress deployment (constant JSON, no model) behind the same ingress, the most
  any Ray Serve app could do there. Each row also gives the server side's CPU-ms per request (the
  machine's busy CPU during the run, less the load generator's).
* **training**: optimizer steps/s of the training loop alone (timed by a callback from step 3 on,
  so model loading, evaluation and saving are left out) for a local run using every core, Ray Train
  with 1 worker holding every CPU, and 2 workers with 1 CPU each; samples/s = steps/s x workers x
  batch size. With ``--sync-compare`` instead: 2 workers x 1 CPU, the gradient sync alone, DDP (what
  the training loop uses) vs a flat all-reduce after backward, same seed and batches, in
  ``--rounds`` paired rounds (order alternating, ``--sync-first``): steps/s, samples/s, the
  DDP/flat ratio and the largest per-step loss difference.

Usage: python bench/bench_ray.py [--items 10000] [--requests 1024] [--replicas 2] [--only batch,serving]
       [--ingress direct,gateway]
Run it on an otherwise idle machine (on the shared box: under ``flock /tmp/aiforge-cpu.lock``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from aiforge.train.callbacks import Callback  # noqa: E402
from bench.serving import (  # noqa: E402
    Load,
    build_model,
    drive,
    free_port,
    load_sentences,
    merged,
    payloads,
    start,
    stop,
)

RAY = str(Path(sys.executable).parent / "ray")
AIFORGE = [sys.executable, "-m", "aiforge.cli"]
WARMUP_STEPS = 3


# ---- batch inference ----------------------------------------------------------------------------------
def timed_command(command: list[str], out: Path, items: int, env: dict, log: Path) -> dict:
    """Run ``command`` (which writes ``items`` lines to ``out``), watching the output grow."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w"))
    lines, offset, first, done = 0, 0, None, None
    while True:
        exited = process.poll() is not None
        if out.exists():
            with out.open("rb") as fh:
                fh.seek(offset)
                data = fh.read()
            offset, lines = offset + len(data), lines + data.count(b"\n")
        now = time.perf_counter() - started
        if lines and first is None:
            first = (now, lines)
        if lines >= items and done is None:
            done = now
        if exited:
            break
        time.sleep(0.1)
    wall = time.perf_counter() - started
    if process.returncode != 0 or first is None or done is None:
        raise RuntimeError(f"{command} failed ({process.returncode}); see {log}")
    steady = (items - first[1]) / max(1e-9, done - first[0])
    return {"end_to_end_items_s": items / wall, "steady_items_s": steady, "first_output_s": first[0]}


def bench_batch(
    model_dir: Path, sentences: list[str], args: argparse.Namespace, root: Path, env: dict
) -> dict:
    src = root / "items.jsonl"
    src.write_text(
        "".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in sentences[: args.items]),
        encoding="utf-8",
    )

    def command(items: Path, out: Path, *extra: str) -> list[str]:
        return [*AIFORGE, "run", "text-classification", "-m", str(model_dir), "-i", str(items), "-b", "16",
                "-o", str(out), *extra]  # fmt: skip

    ray_flags = ["--backend", "ray"] + (["--workers", str(args.workers)] if args.workers else [])
    # The first Ray Data job on a cluster starts Ray Data's own detached actors (stats, autoscaling
    # coordinator, actor-location tracker), which later jobs reuse: like the head, they are part of
    # a cluster in use, so a one-window job starts them, timed apart, before the measured runs.
    first = root / "first-job.jsonl"
    head = root / "first-items.jsonl"
    head.write_text(
        "".join(src.read_text(encoding="utf-8").splitlines(keepends=True)[:256]), encoding="utf-8"
    )
    cold = timed_command(
        command(head, first, *ray_flags),
        first,
        256,
        env,
        root / "first-job.log",
    )
    print(
        f"batch: the cluster's first Ray Data job (256 items): {cold['first_output_s']:.1f} s to output",
        flush=True,
    )
    # local, Ray, local: the machine's speed drifts, so Ray is set against the mean of the runs around it
    runs: dict[str, list[dict]] = {"local": [], "ray": []}
    for name, extra in (("local", []), ("ray", ray_flags), ("local", [])):
        out = root / f"{name}.jsonl"
        out.unlink(missing_ok=True)
        runs[name].append(
            timed_command(command(src, out, *extra), out, args.items, env, root / f"{name}.log")
        )
        print(f"batch {name}: {runs[name][-1]}", flush=True)
    local = {k: sum(run[k] for run in runs["local"]) / len(runs["local"]) for k in runs["local"][0]}
    ray = runs["ray"][0]
    return {
        "items": args.items,
        "first_job_first_output_s": cold["first_output_s"],
        "local": local,
        "local_runs": runs["local"],
        "ray": ray,
        "ratio_steady": ray["steady_items_s"] / local["steady_items_s"],
        "ratio_end_to_end": ray["end_to_end_items_s"] / local["end_to_end_items_s"],
        "identical_output": (root / "local.jsonl").read_bytes() == (root / "ray.jsonl").read_bytes(),
    }


# ---- serving ----------------------------------------------------------------------------------------------
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


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has spent busy (every process, every core)."""
    import psutil

    times = psutil.cpu_times()
    return sum(times) - times.idle - getattr(times, "iowait", 0.0)


def load_run(port: int, bodies: list[bytes], clients: int) -> tuple[Load, float]:
    """A warm-up, then the measured load: (the load, the server side's CPU seconds)."""
    asyncio.run(drive(port, "/v1/models/clf/predict", bodies[:128], clients))  # warm-up
    busy, own = busy_cpu_s(), time.process_time()
    load = asyncio.run(drive(port, "/v1/models/clf/predict", bodies, clients))
    # the server side's CPU: the machine's, less this process's (the load generator)
    return load, (busy_cpu_s() - busy) - (time.process_time() - own)


def summary(runs: list[tuple[Load, float]]) -> dict:
    load = merged([r[0] for r in runs])
    return {
        "rps": load.throughput,
        "p50_ms": load.percentile(0.5),
        "p99_ms": load.percentile(0.99),
        "cpu_ms_per_req": 1000 * sum(r[1] for r in runs) / max(1, load.ok),
        "statuses": load.statuses,
    }


def paired(local_port: int, ray_port: int, bodies: list[bytes], args: argparse.Namespace) -> dict:
    """``args.rounds`` rounds of (local load, Ray load), back to back: the machine's speed drifts
    between minutes, so each Ray figure is compared with local figures taken alongside it."""
    local: list[tuple[Load, float]] = []
    ray: list[tuple[Load, float]] = []
    for _ in range(args.rounds):
        local.append(load_run(local_port, bodies, args.clients))
        ray.append(load_run(ray_port, bodies, args.clients))
    result = {"local": summary(local), "ray": summary(ray)}
    result["ratio"] = result["ray"]["rps"] / result["local"]["rps"]
    result["ratio_by_round"] = [
        on_ray[0].throughput / here[0].throughput for here, on_ray in zip(local, ray, strict=True)
    ]
    return result


def floor_app() -> Any:
    """The Ray Serve floor: one trivial raw-ASGI deployment (reads the body, answers a constant
    JSON, no model) behind the same proxy, so the report shows what Ray's proxy and one hop cost
    alone. Shaped like aiforge's gateway."""
    from ray import serve

    from aiforge.serve.middleware import read_body

    answer = b'{"outputs":[{"label":"positive","score":1.0}]}'
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(answer)).encode())]

    async def constant(scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": message["type"] + ".complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        await read_body(receive, 1 << 20)
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": answer})

    class Floor:
        def __serve_build_asgi_app__(self) -> Any:
            return constant

    deployment = serve.deployment(
        serve.ingress()(Floor), name="Floor", max_ongoing_requests=100_000, ray_actor_options={"num_cpus": 0}
    )
    return deployment.bind()


def bench_serving(model_dir: Path, sentences: list[str], args: argparse.Namespace, root: Path) -> dict:
    from ray import serve

    from aiforge.scale.serve import Scaling, deploy, shutdown_serve, undeploy, wait_routed, wait_running
    from aiforge.serve import load_settings

    bodies = payloads(sentences[: args.requests])
    port = free_port()
    # the local server stays up (idle while Ray is measured) for the rounds of every Ray setup
    local = start(
        [*AIFORGE, "serve", str(serve_config(model_dir, port, root))], port, "/readyz", root / "l.log"
    )
    results: dict = {}
    try:
        for ingress in args.ingress.split(","):
            shutdown_serve()  # the ingress is chosen when Serve starts
            ray_port = free_port()
            settings = load_settings(serve_config(model_dir, ray_port, root))
            for replicas in sorted({1, args.replicas}):
                scaling = Scaling(
                    replicas=replicas, cpus_per_replica=max(1, args.cpus // replicas), ingress=ingress
                )
                deploy(settings, scaling, address=args.address)
                try:
                    results[f"{ingress}_{replicas}"] = paired(port, ray_port, bodies, args)
                finally:
                    undeploy()
                print(
                    f"serving ray {ingress} {replicas} replica(s): {results[f'{ingress}_{replicas}']}",
                    flush=True,
                )
            # the floor: a trivial app as the ingress deployment behind the same ingress (HAProxy ->
            # replica, or Ray's proxy -> deployment)
            serve.run(floor_app(), name="floor", route_prefix="/", blocking=False)
            try:
                wait_running("floor")
                wait_routed("127.0.0.1", ray_port, "/")
                results[f"{ingress}_floor"] = summary([load_run(ray_port, bodies, args.clients)])
            finally:
                serve.delete("floor")
            print(
                f"serving ray {ingress} floor (trivial deployment): {results[f'{ingress}_floor']}", flush=True
            )
        shutdown_serve()
    finally:
        stop(local)
    return results


# ---- training ---------------------------------------------------------------------------------------------
class StepClock(Callback):
    """Appends the wall time of each optimizer step to ``path.<pid>`` (pickled by value to workers)."""

    def __init__(self, path: str) -> None:
        self.path = path

    def on_step_end(self, state: Any) -> None:
        with open(f"{self.path}.{os.getpid()}", "a") as fh:
            fh.write(f"{time.time()}\n")


def loop_steps_per_s(stamp: Path) -> float:
    rates = []
    for file in stamp.parent.glob(stamp.name + ".*"):
        times = [float(t) for t in file.read_text().split()]
        rates.append((len(times) - WARMUP_STEPS) / (times[-1] - times[WARMUP_STEPS - 1]))
    return min(rates)  # workers step in lockstep; the slowest decides


def bench_training(model_dir: Path, args: argparse.Namespace, root: Path) -> dict:
    from aiforge.scale.train import train as train_on_ray
    from aiforge.train import load_config
    from aiforge.train.loop import train as train_locally

    batch = 16

    def config(name: str, threads: int):
        return load_config(
            None,
            [
                f"model={model_dir}",
                f"output_dir={root / f'train-{name}'}",
                "data.train=packaged:nsmc_sample/train.tsv",
                "data.validation_split=0.1",
                f"training.batch_size={batch}",
                "training.max_length=64",
                f"training.max_steps={args.steps}",
                f"training.num_threads={threads}",
                "tracking.enabled=false",
                "baseline=false",
            ],
        )

    results = {}
    for name, workers, cpus in (
        ("local", 0, args.cpus),
        ("ray_1", 1, args.cpus),
        ("ray_2", 2, args.cpus // 2),
    ):
        stamp = root / f"steps-{name}"
        clock = StepClock(str(stamp))
        if workers == 0:
            train_locally(config(name, cpus), callbacks=[clock], progress=False)
        else:
            train_on_ray(
                config(name, cpus),
                workers=workers,
                cpus_per_worker=cpus,
                address=args.address,
                callbacks=[clock],
            )
        steps = loop_steps_per_s(stamp)
        results[name] = {"steps_s": steps, "samples_s": steps * max(1, workers) * batch}
        print(f"training {name}: {results[name]}", flush=True)
    for name in ("ray_1", "ray_2"):
        results[f"ratio_{name}_samples_vs_local"] = results[name]["samples_s"] / results["local"]["samples_s"]
    results["ratio_2_vs_1_steps"] = results["ray_2"]["steps_s"] / results["ray_1"]["steps_s"]
    return results


def flat_all_reduce(model: Any, world_size: int) -> None:
    """aiforge's gradient sync before DDP: one all-reduce of all gradients, flattened, after backward."""
    import torch
    import torch.distributed as dist

    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def sync_worker(cfg: dict) -> None:
    """One Ray Train worker of the gradient-sync comparison: the same seeded model, batches and
    optimizer; gradients averaged either by a flat all-reduce after backward or by DDP
    (Ray Train's ``prepare_model``: bucketed all-reduce overlapping backward)."""
    import ray.train
    import torch
    import torch.distributed as dist
    from ray.train.torch import prepare_model
    from transformers import AutoModelForSequenceClassification

    from aiforge.train.parallel import DataParallel

    torch.set_num_threads(cfg["threads"])
    context = ray.train.get_context()
    parallel = DataParallel(context.get_world_rank(), context.get_world_size())
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_pretrained(cfg["model"])
    forward = prepare_model(model) if cfg["sync"] == "ddp" else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=5e-5)
    batches = parallel.shard(cfg["batches"])
    losses, stamps = [], []
    for batch in batches:
        inputs = {k: torch.tensor(v) for k, v in batch.items()}
        loss = forward(**inputs).loss
        loss.backward()
        if cfg["sync"] == "flat":
            flat_all_reduce(model, parallel.world_size)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)  # as the training loop's step does
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
        stamps.append(time.time())
    mean_loss = torch.tensor(losses)
    dist.all_reduce(mean_loss)  # after timing: the loss of each step averaged over workers
    rate = (len(stamps) - WARMUP_STEPS) / (stamps[-1] - stamps[WARMUP_STEPS - 1])
    rates = torch.tensor([rate])
    dist.all_reduce(rates, op=dist.ReduceOp.MIN)  # lockstep: the slowest worker decides
    ray.train.report({"steps_s": float(rates), "losses": (mean_loss / parallel.world_size).tolist()})


def bench_gradient_sync(model_dir: Path, args: argparse.Namespace) -> dict:
    """2 workers x 1 CPU: DDP vs aiforge's flat all-reduce, ``--rounds`` paired rounds (order alternates)."""
    from ray.train import ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer
    from transformers import AutoTokenizer

    batch, workers = 16, 2
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    sentences = load_sentences(args.steps * workers * batch)
    batches = []
    for first in range(0, len(sentences), batch):
        encoded = tokenizer(sentences[first : first + batch], padding=True, truncation=True, max_length=64)
        batches.append({**encoded, "labels": [i % 2 for i in range(first, first + batch)]})

    def run(sync: str) -> dict:
        cfg = {"model": str(model_dir), "batches": batches, "sync": sync, "threads": args.cpus // workers}
        trainer = TorchTrainer(
            sync_worker,
            train_loop_config=cfg,
            torch_config=TorchConfig(backend="gloo"),
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": args.cpus // workers}
            ),
        )
        return trainer.fit().metrics

    rounds = []
    for r in range(args.rounds):
        order = args.sync_first, ({"flat", "ddp"} - {args.sync_first}).pop()
        measured = {sync: run(sync) for sync in (order if r % 2 == 0 else order[::-1])}
        flat, ddp = measured["flat"], measured["ddp"]
        gap = max(abs(a - b) for a, b in zip(flat["losses"], ddp["losses"], strict=True))
        rounds.append({"flat_steps_s": flat["steps_s"], "ddp_steps_s": ddp["steps_s"], "max_loss_gap": gap})
        print(
            f"gradient sync round {r + 1}: flat {flat['steps_s']:.3f} steps/s "
            f"({flat['steps_s'] * workers * batch:.1f} samples/s), DDP {ddp['steps_s']:.3f} steps/s "
            f"({ddp['steps_s'] * workers * batch:.1f} samples/s), "
            f"DDP/flat {ddp['steps_s'] / flat['steps_s']:.3f}x; "
            f"largest per-step loss difference {gap:.2e} (first losses {flat['losses'][:3]})",
            flush=True,
        )
    ratios = [x["ddp_steps_s"] / x["flat_steps_s"] for x in rounds]
    return {"rounds": rounds, "ratio_ddp_vs_flat": ratios, "samples_per_step": workers * batch}


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1024)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3, help="serving: paired (local, Ray) load rounds")
    parser.add_argument("--workers", type=int, default=None, help="batch actors (default: aiforge's)")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--cpus", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--only", default="batch,serving,training")
    parser.add_argument(
        "--sync-compare",
        action="store_true",
        help="training: DDP (what aiforge uses) vs a flat all-reduce, 2 workers (instead of local/Ray)",
    )
    parser.add_argument("--sync-first", choices=("flat", "ddp"), default="flat", help="first arm of round 1")
    parser.add_argument(
        "--ingress",
        default="direct,gateway",
        help="serving: Ray ingresses to measure (direct, gateway, auto)",
    )
    args = parser.parse_args()
    parts = set(args.only.split(","))
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "RAY_USAGE_STATS_ENABLED": "0",
        # `ray start`'s default, whatever ~/.ray/auth_token a local ray.init() left behind
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }
    os.environ.update(env)
    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    model_dir = build_model(root / "minilm-clf")
    sentences = load_sentences(max(args.items, args.requests))
    port = free_port()
    args.address = f"127.0.0.1:{port}"
    head = [
        RAY, "start", "--head", f"--port={port}", "--node-ip-address=127.0.0.1", f"--num-cpus={args.cpus}",
        "--include-dashboard=false", "--disable-usage-stats", "--include-log-monitor=false",
    ]  # fmt: skip
    subprocess.run(head, check=True, env=env, capture_output=True)
    results: dict = {}
    try:
        import ray

        ray.init(address=args.address, logging_level="WARNING")
        if "batch" in parts:
            results["batch"] = bench_batch(
                model_dir, sentences, args, root, {**env, "RAY_ADDRESS": args.address}
            )
        if "serving" in parts:
            results["serving"] = bench_serving(model_dir, sentences, args, root)
        if "training" in parts and args.sync_compare:
            results["gradient_sync"] = bench_gradient_sync(model_dir, args)
        elif "training" in parts:
            results["training"] = bench_training(model_dir, args, root)
    finally:
        with contextlib.suppress(Exception):
            from aiforge.scale.serve import shutdown_serve

            shutdown_serve()  # its HAProxy would outlive `ray stop`
        subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True)
    print(json.dumps(results, indent=2))
    if "batch" in results:
        b = results["batch"]
        print(
            f"batch {b['items']} items ray/local: steady {b['ratio_steady']:.2f}x, "
            f"end-to-end {b['ratio_end_to_end']:.2f}x (first output {b['ray']['first_output_s']:.1f} vs "
            f"{b['local']['first_output_s']:.1f} s), identical output {b['identical_output']}"
        )
    if "serving" in results:
        for name, r in results["serving"].items():
            if name.endswith("_floor"):
                print(
                    f"serving {name}: {r['rps']:.1f} req/s, "
                    f"{r['cpu_ms_per_req']:.2f} server CPU-ms per request"
                )
                continue
            print(
                f"serving {name} replica(s) ray/local over {args.rounds} paired rounds: {r['ratio']:.2f}x "
                f"({r['ray']['rps']:.1f} vs {r['local']['rps']:.1f} req/s; by round "
                + ", ".join(f"{x:.2f}" for x in r["ratio_by_round"])
                + f"); server CPU-ms per request {r['ray']['cpu_ms_per_req']:.2f} vs "
                f"{r['local']['cpu_ms_per_req']:.2f}; "
                f"p99 {r['ray']['p99_ms']:.0f} vs {r['local']['p99_ms']:.0f} ms"
            )
    if "gradient_sync" in results:
        ratios = results["gradient_sync"]["ratio_ddp_vs_flat"]
        print(
            "gradient sync, 2 workers, DDP/flat steps/s by round: "
            + ", ".join(f"{x:.3f}" for x in ratios)
            + f" (>1: DDP faster); median {sorted(ratios)[len(ratios) // 2]:.3f}"
        )
    if "training" in results:
        t = results["training"]
        print(
            f"training samples/s vs local: 1 worker {t['ratio_ray_1_samples_vs_local']:.2f}x, "
            f"2 workers {t['ratio_ray_2_samples_vs_local']:.2f}x; 2 vs 1 workers "
            f"{t['ratio_2_vs_1_steps']:.2f}x steps/s"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
