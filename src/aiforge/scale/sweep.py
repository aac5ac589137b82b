"""``aiforge sweep --backend ray``: the same sweep, with ``parallel`` trials at once as Ray tasks.

The driver (:func:`aiforge.sweeps.run_sweep`) still asks and tells Optuna; this runner starts each
trial as a Ray task reserving ``cpus_per_trial`` CPUs, so Ray places as many at once as the cluster
has room for. A trial reports its evaluations to the study's journal in the sweep dir and asks the
pruner there, as a local trial does: on more than one machine the sweep dir must be storage every
node sees (NFS, a mounted bucket) and ``MLFLOW_TRACKING_URI`` a tracking server.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.sweeps import SweepResult, SweepSpec, run_sweep
from aiforge.sweeps.trial import TrialJob, TrialOutcome, run_trial


def trial_task(job: TrialJob, env: dict[str, str], cwd: str) -> TrialOutcome:
    """What a Ray task runs: one trial, in the driver's environment (caches, offline mode, tracking)
    and working directory, where the config's relative paths (data, output_dir) point."""
    import os

    from aiforge.scale.cluster import calm_threads

    os.environ.update(env)
    if os.path.isdir(cwd):
        os.chdir(cwd)
    calm_threads()
    return run_trial(job)


class RayRunner:
    """Up to ``slots`` trials at once, each a Ray task."""

    def __init__(self, slots: int, cpus_per_trial: float) -> None:
        import ray

        from aiforge.scale.cluster import worker_env

        self.remote = ray.remote(num_cpus=cpus_per_trial, max_retries=0)(trial_task)
        self.env = worker_env()
        self.cwd = os.getcwd()
        self.slots = slots
        self.running: dict[Any, int] = {}  # Ray object ref -> trial number

    def start(self, job: TrialJob) -> None:
        self.running[self.remote.remote(job, self.env, self.cwd)] = job.number

    def wait(self) -> list[TrialOutcome]:
        import ray

        done, _ = ray.wait(list(self.running), num_returns=1)
        outcomes = []
        for ref in done:
            number = self.running.pop(ref)
            try:
                outcomes.append(ray.get(ref))
            except Exception as exc:  # noqa: BLE001 - a worker that died: the trial failed, the sweep goes on
                error = AiforgeError(
                    "AF-RAY-003",
                    f"trial {number}'s Ray worker failed: {type(exc).__name__}: {str(exc)[:300]}",
                    "the worker log has the traceback; `aiforge sweep --resume` reruns unfinished trials",
                )
                outcomes.append(TrialOutcome(number, "failed", error=error.to_dict()))
        return outcomes


def sweep_on_ray(
    spec: SweepSpec,
    *,
    resume: bool = False,
    address: str | None = None,
    on_trial: Callable[[TrialOutcome], None] | None = None,
) -> SweepResult:
    """Run ``spec`` with ``spec.parallel`` trials at once on the Ray cluster at ``address`` (default
    ``$RAY_ADDRESS``, else a local Ray)."""
    from aiforge.scale.cluster import connect

    connect(address)
    return run_sweep(
        spec, resume=resume, runner=RayRunner(spec.parallel, spec.cpus_per_trial), on_trial=on_trial
    )
