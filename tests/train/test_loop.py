"""End to end on a tiny BERT: train -> files -> MLflow run -> registered version -> alias ->
``load_pipeline(model="registry:NAME@production")``; resume after SIGKILL; dry run; bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.train import config_from_run, dry_run, train
from aiforge.train.config import dump_yaml
from aiforge.train.loop import _oom_error

REPO = Path(__file__).parents[2]


def test_train_writes_a_loadable_model_tracks_and_registers(make_config) -> None:
    from aiforge.tasks import load_pipeline

    config = make_config(
        "tracking.enabled=true",
        "tracking.model_name=tiny-sentiment",
        "tracking.experiment=tests",
        "training.log_every_steps=2",
    )
    result = train(config, progress=False)

    # the model directory: standard HF files, label names, aiforge metadata
    meta = json.loads((result.model_dir / "aiforge.json").read_text(encoding="utf-8"))
    assert meta["labels"] == ["negative", "positive"]
    assert meta["data_hash"] and meta["config"]["training"]["lr"] == config.training.lr
    assert set(meta["metrics"]) == {"validation", "test"}
    assert meta["baseline"]["test"]["accuracy"] > 0.5  # TF-IDF learns something even from 90 rows
    for name in ("config.yaml", "metrics.json", "confusion_matrix.png", "loss_curve.png"):
        assert (result.output_dir / name).stat().st_size > 0
    assert not (result.output_dir / "checkpoints").exists()  # a finished run has nothing to resume
    local = load_pipeline("text-classification", model=str(result.model_dir), device="cpu")
    text = "정말 재미있는 영화였어요"
    expected = local(text)
    assert expected["label"] in ("negative", "positive")

    # tracking: params, per-step and per-epoch metrics, artifacts, git commit, data hash
    client = registry.client()
    run = client.get_run(result.run_id)
    assert run.info.status == "FINISHED"
    assert run.data.params["training.batch_size"] == "16"
    assert run.data.tags["aiforge.data_hash"] == meta["data_hash"]
    assert "aiforge.git_commit" in run.data.tags
    assert len(client.get_metric_history(result.run_id, "train_loss")) >= 2
    assert [m.step for m in client.get_metric_history(result.run_id, "val_accuracy")] == [6, 12]
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.metrics["test"]["accuracy"])
    artifacts = {a.path for a in client.list_artifacts(result.run_id)}
    assert {"config.yaml", "metrics.json", "confusion_matrix.png", "loss_curve.png", "model"} <= artifacts

    # --from-run: the run's resolved config comes back from its artifacts
    assert config_from_run(result.run_id)["training"]["batch_size"] == 16
    lines = result.lines()
    assert any(line.startswith("test ") and "accuracy" in line and "[" in line for line in lines)
    assert any(line.startswith("baseline") and "tfidf" in line for line in lines)

    # the verdict against the baseline: paired test on the same test rows, everywhere it is reported
    comparison = meta["comparison"]["test"]
    assert comparison["test"] == "mcnemar-mid-p" and comparison["n"] == 40  # the 40 test rows
    assert comparison["verdict"] in ("beats", "tie", "below")
    assert any(line.startswith("verdict") and comparison["verdict"] in line for line in lines)
    assert run.data.tags["aiforge.vs_baseline.test"] == comparison["verdict"]
    assert run.data.metrics["test_vs_baseline_p_value"] == pytest.approx(comparison["p_value"])
    low, high = meta["intervals"]["test"]["accuracy"]
    assert low <= result.metrics["test"]["accuracy"] <= high
    assert "rows" not in json.loads((result.output_dir / "metrics.json").read_text())["metrics"]["test"]

    # calibration: a temperature fitted on validation, saved where the pipeline reads it, ECE before/after
    calibration = meta["calibration"]
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "validation"
    assert (
        json.loads((result.model_dir / "config.json").read_text())["aiforge_temperature"]
        == calibration["temperature"]
    )
    assert (result.output_dir / "reliability.png").stat().st_size > 0 and "reliability.png" in artifacts
    assert run.data.metrics["ece_after"] == pytest.approx(calibration["ece_after"])

    # registry: the run became version 1; promote it and load it by alias
    assert (result.registered_name, result.registered_version) == ("tiny-sentiment", "1")
    registry.promote("tiny-sentiment", result.registered_version, "production")
    served = load_pipeline("text-classification", model="registry:tiny-sentiment@production", device="cpu")
    assert served(text) == expected


def _script(tmp_path: Path, kill_at_step: int | None, resume: bool) -> Path:
    path = tmp_path / f"run_{kill_at_step}_{resume}.py"
    path.write_text(
        textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {str(REPO)!r})
        from aiforge.train import load_config, train
        from aiforge.train.callbacks import Callback

        class KillAt(Callback):
            def on_step_end(self, state):
                if state.step == {kill_at_step!r}:
                    os.kill(os.getpid(), signal.SIGKILL)  # no cleanup, no atexit: a real crash

        train(load_config(sys.argv[1]), resume={resume}, callbacks=[KillAt()], progress=False)
    """),
        encoding="utf-8",
    )
    return path


def _run(script: Path, config: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, str(script), str(config)], capture_output=True, text=True, env=env, timeout=300
    )


def test_resume_after_sigkill_mid_epoch_matches_an_uninterrupted_run(make_config, tmp_path: Path) -> None:
    # 90 training rows / batch 8 = 12 steps per epoch; checkpoints every 5 steps; killed at step 8
    common = ["training.batch_size=8", "training.checkpoint_every_steps=5", "training.epochs=2"]
    reference = make_config(*common, f"output_dir={tmp_path / 'reference'}")
    crashed = make_config(*common, f"output_dir={tmp_path / 'crashed'}")
    ref_cfg, crash_cfg = tmp_path / "reference.yaml", tmp_path / "crashed.yaml"
    ref_cfg.write_text(dump_yaml(reference), encoding="utf-8")
    crash_cfg.write_text(dump_yaml(crashed), encoding="utf-8")

    done = _run(_script(tmp_path, None, resume=False), ref_cfg)
    assert done.returncode == 0, done.stderr[-2000:]
    killed = _run(_script(tmp_path, 8, resume=False), crash_cfg)
    assert killed.returncode == -9
    checkpoint = torch.load(tmp_path / "crashed" / "checkpoints" / "last.pt", weights_only=False)
    assert checkpoint["position"] == {"epoch": 0, "batch": 5, "step": 5}  # mid-epoch, the last good one
    resumed = _run(_script(tmp_path, None, resume=True), crash_cfg)
    assert resumed.returncode == 0, resumed.stderr[-2000:]

    want = json.loads((tmp_path / "reference" / "metrics.json").read_text(encoding="utf-8"))
    got = json.loads((tmp_path / "crashed" / "metrics.json").read_text(encoding="utf-8"))
    assert got["metrics"]["test"]["loss"] == want["metrics"]["test"]["loss"]  # bit for bit, not approx
    assert got["metrics"]["validation"] == want["metrics"]["validation"]
    assert got["history"]["evals"] == want["history"]["evals"]


def test_dry_run_checks_and_estimates(make_config) -> None:
    report = dry_run(make_config("training.max_length=32"))
    assert report.rows == {"train": 90, "validation": 30, "test": 40}
    assert report.labels == {"negative": 45, "positive": 45}
    assert report.max_length == 32 and 0 < report.truncated_share < 1
    assert any("max_length 32 cuts" in w for w in report.warnings)
    assert report.steps_per_epoch == 6 and report.total_steps == 12
    assert report.seconds_per_step > 0 and report.seconds_total > report.seconds_per_epoch
    assert report.peak_memory_mb > 0
    assert any(line.startswith("time") for line in report.lines())


def test_wrong_column_fails_before_the_model_loads(make_config) -> None:
    with pytest.raises(AiforgeError) as err:
        dry_run(make_config("data.input_column=document"))
    assert err.value.code == "AF-DATA-001" and "columns found: id, text, label" in err.value.message


def test_unknown_freeze_prefix_is_a_config_error(make_config) -> None:
    with pytest.raises(AiforgeError) as err:
        dry_run(make_config("training.freeze=[embedings]"))
    assert err.value.code == "AF-CONFIG-001" and "embeddings" in err.value.fix


def test_frozen_layers_do_not_move(make_config, tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    result = train(
        make_config("training.freeze=[embeddings]", "training.max_steps=3", "baseline=false"), progress=False
    )
    before = AutoModelForSequenceClassification.from_pretrained(tiny_bert).state_dict()
    after = AutoModelForSequenceClassification.from_pretrained(result.model_dir).state_dict()
    key = "bert.embeddings.word_embeddings.weight"
    assert torch.equal(before[key], after[key])
    assert not torch.equal(
        before["bert.encoder.layer.0.attention.self.query.weight"],
        after["bert.encoder.layer.0.attention.self.query.weight"],
    )
    assert result.steps == 3 and result.baseline is None


def test_out_of_memory_advice_keeps_the_effective_batch(make_config) -> None:
    err = _oom_error(make_config("training.batch_size=32", "training.grad_accum=2"))
    assert err.code == "AF-TRAIN-001"
    assert "training.batch_size=16" in err.fix and "training.grad_accum=4" in err.fix


def test_config_saved_with_the_run_reloads(make_config, tmp_path: Path) -> None:
    config = make_config()
    path = tmp_path / "again.yaml"
    path.write_text(dump_yaml(config), encoding="utf-8")
    assert yaml.safe_load(path.read_text(encoding="utf-8"))["training"]["batch_size"] == 16
