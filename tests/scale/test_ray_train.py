"""``aiforge train --backend ray``: two data-parallel workers on Ray Train finish, track to the same
MLflow store, register a model, and a run that died mid-way continues with ``--resume``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.train.callbacks import Callback
from tests.scale.conftest import Cluster


def test_two_workers_train_track_register_and_resume(
    ray_cluster: Cluster, make_config, tmp_path: Path
) -> None:
    from aiforge.scale.train import train

    config = make_config(
        "training.epochs=4",
        "training.checkpoint_every_steps=2",
        "tracking.enabled=true",
        "tracking.model_name=tiny-ray",
        "tracking.experiment=ray-tests",
    )

    class DieAtStep4(Callback):  # defined here so it is pickled by value to the workers
        def on_checkpoint(self, state) -> None:
            if state.step >= 4:
                import os

                os._exit(1)

    with pytest.raises(AiforgeError) as died:
        train(config, workers=2, address=ray_cluster.address, callbacks=[DieAtStep4()])
    assert died.value.code == "AF-RAY-003"
    saved = torch.load(Path(config.output_dir) / "checkpoints" / "last.pt", weights_only=False)
    assert saved["position"]["step"] == 4 and saved["world_size"] == 2 and saved["run_id"]

    # --resume through the CLI, as a user would after the crash
    cli = [
        sys.executable,
        "-m",
        "aiforge.cli",
        "train",
        "--backend",
        "ray",
        "--workers",
        "2",
        "--resume",
        "--json",
    ]
    config_file = Path(config.output_dir) / "config.yaml"
    result = subprocess.run(
        [*cli, str(config_file)], capture_output=True, text=True, timeout=600, env=ray_cluster.env
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[result.stdout.index("{") :])
    assert summary["run_id"] == saved["run_id"]  # the same MLflow run continued
    # 90 training rows, batches of 16: 6 batches an epoch, 3 per worker, 4 epochs
    assert summary["steps"] == 12 and summary["registered"] == "registry:tiny-ray/1"
    run = registry.client().get_run(summary["run_id"])
    assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
    steps = [m.step for m in registry.client().get_metric_history(summary["run_id"], "train_loss")]
    assert max(steps) == 12
    pipe = load_pipeline("text-classification", model="registry:tiny-ray/1", device="cpu")
    assert "label" in pipe("정말 재밌다")
