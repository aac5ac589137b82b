"""``aiforge sweep --backend ray``: trials run as Ray tasks, two at a time, report their evaluations to
the study in the sweep dir from the workers, and are tracked as nested runs as in a local sweep."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import optuna
import pytest

from aiforge import registry
from aiforge.sweeps import load_spec
from aiforge.sweeps.trial import TrialOutcome, open_storage
from tests.scale.conftest import Cluster
from tests.sweeps.conftest import train_fields  # noqa: F401 - shared fixture


@pytest.mark.slow
def test_trials_run_two_at_a_time_on_ray_and_report_to_the_study(
    ray_cluster: Cluster,
    train_fields: dict[str, Any],  # noqa: F811
    tmp_path: Path,
) -> None:
    from aiforge.scale.sweep import sweep_on_ray

    train_fields["tracking"]["enabled"] = True
    spec = load_spec(
        None,
        base={
            "train": train_fields,
            "method": "random",
            "trials": 3,
            "parameters": {"training.lr": {"low": 1e-5, "high": 1e-3, "log": True}},
            "output_dir": str(tmp_path / "ray-sweep"),
            "parallel": 2,
        },
    )
    finished: list[TrialOutcome] = []
    result = sweep_on_ray(spec, address=ray_cluster.address, on_trial=finished.append)
    assert [r["state"] for r in result.rows] == ["complete"] * 3 and len(finished) == 3
    first, second = sorted(finished, key=lambda o: o.started_at)[:2]
    assert second.started_at < first.started_at + first.seconds  # two trials at once
    study = optuna.load_study(study_name="aiforge-sweep", storage=open_storage(spec.sweep_dir))
    assert all(list(t.intermediate_values) == [1] for t in study.trials)  # reported from the workers
    client = registry.client(train_fields["tracking"]["tracking_uri"])
    parents = {client.get_run(r["run_id"]).data.tags["mlflow.parentRunId"] for r in result.rows}
    assert len(parents) == 1 and (spec.sweep_dir / "plots" / "parallel_coordinates.png").exists()
