"""``aiforge train CONFIG --backend ray --workers N``: the same training loop, data-parallel on Ray Train.

Every Ray Train worker runs :func:`aiforge.train.loop.train` with its :class:`DataParallel` share
(rank, world size): the same data preparation, the same seeded batch order dealt out round-robin,
gradients averaged during backward by PyTorch DDP (``torch.distributed`` over gloo, which Ray Train
sets up), the same evaluation and early stopping. Rank 0 alone writes what a local run writes: the
checkpoints in ``output_dir/checkpoints`` (so ``--resume`` continues a Ray run, with the same number
of workers), the model dir, the MLflow run and the registered version. Ray Train's own run state
goes to ``output_dir/ray``.

On more than one machine, ``output_dir`` must be storage every worker sees (NFS, a mounted bucket)
and ``MLFLOW_TRACKING_URI`` a tracking server, since rank 0 may run on any node.
"""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.train.config import TrainConfig

RESULT_FILE = "aiforge_result.pkl"


def worker_loop(args: dict[str, Any]) -> None:
    """What each Ray Train worker runs."""
    os.environ.update(args["env"])  # caches, offline mode and tracking, as the driver sees them
    import ray.train

    from aiforge.train.loop import train
    from aiforge.train.parallel import DataParallel

    context = ray.train.get_context()
    parallel = DataParallel(context.get_world_rank(), context.get_world_size())
    config = TrainConfig.model_validate(args["config"])
    try:
        outcome: Any = train(
            config,
            resume=args["resume"],
            strict=args["strict"],
            callbacks=args["callbacks"],
            progress=False,
            parallel=parallel,
        )
    except AiforgeError as exc:  # travels back as data: the driver re-raises it as the user error it is
        outcome = exc
    report_outcome(outcome, parallel.main)


def report_outcome(outcome: Any, main: bool) -> None:
    """Rank 0's TrainResult (or AiforgeError) as a Ray Train checkpoint, copied to the run's storage."""
    import ray.train

    if not main:
        ray.train.report({})
        return
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / RESULT_FILE).write_bytes(pickle.dumps(outcome))
        ray.train.report({"done": 1}, checkpoint=ray.train.Checkpoint.from_directory(tmp))


def train(
    config: TrainConfig,
    *,
    workers: int = 2,
    resume: bool = False,
    strict: bool = False,
    address: str | None = None,
    cpus_per_worker: float = 1,
    callbacks: list[Any] | None = None,
) -> Any:
    """Run ``config`` on ``workers`` Ray Train workers; returns rank 0's :class:`TrainResult`.

    ``callbacks`` (:class:`aiforge.train.callbacks.Callback`) are pickled to every worker.
    """
    from aiforge.scale.cluster import connect, worker_env

    connect(address)
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    out = Path(config.output_dir).resolve()
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={
            "config": config.model_dump(mode="json"),
            "resume": resume,
            "strict": strict,
            "env": worker_env(),
            "callbacks": list(callbacks or []),
        },
        torch_config=TorchConfig(backend="gloo"),
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
        ),
        run_config=RunConfig(name=out.name, storage_path=str(out / "ray")),
    )
    try:
        result = trainer.fit()
    except Exception as exc:  # noqa: BLE001 - Ray wraps worker failures in its own types
        raise AiforgeError(
            "AF-RAY-003",
            f"a training worker failed: {type(exc).__name__}: {exc}",
            "the worker logs above have the traceback; fix it and continue with --resume",
        ) from None
    if result.checkpoint is None:
        raise AiforgeError("AF-RAY-003", "the training workers ended without a result", "rerun with --resume")
    with result.checkpoint.as_directory() as directory:
        outcome = pickle.loads((Path(directory) / RESULT_FILE).read_bytes())
    if isinstance(outcome, AiforgeError):
        raise outcome
    return outcome
