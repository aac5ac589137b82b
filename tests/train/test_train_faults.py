"""Crashes and full disks around what training writes: a SIGKILL mid-checkpoint or mid-promotion, a disk
that fills during a checkpoint or a model save, a checkpoint or weights file cut short, two runs writing
one MLflow SQLite store at once. After each, the next command finds the previous state whole, or says
which file is damaged and what to do."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from aiforge import registry
from aiforge.errors import AiforgeError
from aiforge.train.checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint
from aiforge.train.config import dump_yaml
from aiforge.train.loop import save_model_dir
from tests.conftest import fill_disk

REPO = Path(__file__).parents[2]
ENV = {**os.environ, "PYTHONPATH": str(REPO / "src"), "HF_HUB_OFFLINE": "1"}


class SavePretrained:
    """The one TrainingTask method save_model_dir calls, as every transformers task implements it."""

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)  # type: ignore[operator]


def _child(tmp_path: Path, body: str) -> subprocess.Popen:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(body), encoding="utf-8")
    return subprocess.Popen([sys.executable, str(script)], env=ENV, stderr=subprocess.PIPE, text=True)


def test_full_disk_during_a_checkpoint_keeps_the_last_one(small_disk: Path) -> None:
    path = small_disk / CHECKPOINT_NAME
    atomic_save({"position": {"step": 5}, "weights": torch.ones(1_000)}, path)
    fill_disk(small_disk, leave_bytes=64 * 1024)
    with pytest.raises(AiforgeError) as err:
        atomic_save({"position": {"step": 10}, "weights": torch.ones(500_000)}, path)  # 2 MB
    assert err.value.code == "AF-DISK-002" and str(path) in err.value.message
    assert "previous checkpoint is kept" in err.value.message and "df -h" in err.value.fix
    assert load_checkpoint(small_disk)["position"] == {"step": 5}
    assert not path.with_name(CHECKPOINT_NAME + ".tmp").exists()  # the partial file does not eat the disk


def test_full_disk_during_a_model_save_keeps_the_previous_model(small_disk: Path, tiny_bert: Path) -> None:
    from transformers import AutoModelForSequenceClassification

    target = small_disk / "model"
    first = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    save_model_dir(SavePretrained(), first, target)  # type: ignore[arg-type]
    changed = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    with torch.no_grad():
        changed.classifier.weight.add_(1.0)
    fill_disk(small_disk, leave_bytes=64 * 1024)
    with pytest.raises(AiforgeError) as err:
        save_model_dir(SavePretrained(), changed, target)  # type: ignore[arg-type]
    assert err.value.code == "AF-DISK-002" and "model folder" in err.value.message
    kept = AutoModelForSequenceClassification.from_pretrained(target)
    torch.testing.assert_close(kept.classifier.weight, first.classifier.weight)
    assert sorted(p.name for p in small_disk.iterdir()) == ["filler.bin", "model"]


def test_sigkill_mid_checkpoint_write_leaves_a_whole_checkpoint(tmp_path: Path) -> None:
    """A child rewrites an 8 MB checkpoint in a loop; killed at three moments, the file on disk is
    always one whole checkpoint (every weight equals its step), and writing resumes over the leftover."""
    folder = tmp_path / "ckpt"
    for delay in (0.3, 0.7, 1.1):
        child = _child(
            tmp_path,
            f"""
            from pathlib import Path
            import torch
            from aiforge.train.checkpoint import atomic_save
            for step in range(10**6):
                atomic_save({{"step": step, "weights": torch.full((2_000_000,), float(step))}},
                            Path({str(folder)!r}) / "last.pt")
            """,
        )
        deadline = time.monotonic() + 60
        while not (folder / "last.pt").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(delay)
        child.send_signal(signal.SIGKILL)
        assert child.wait(30) == -9
        state = load_checkpoint(folder)
        assert torch.equal(state["weights"], torch.full((2_000_000,), float(state["step"])))


def test_truncated_checkpoint_names_the_file_and_the_fix(tmp_path: Path) -> None:
    path = tmp_path / CHECKPOINT_NAME
    atomic_save({"position": {"step": 1}, "weights": torch.ones(10_000)}, path)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.raises(AiforgeError) as err:
        load_checkpoint(tmp_path)
    assert err.value.code == "AF-FILE-001" and str(path) in err.value.message
    assert "without --resume" in err.value.fix


def test_truncated_weights_are_named_by_aiforge_run(tmp_path: Path, tiny_bert: Path) -> None:
    import shutil

    model = shutil.copytree(tiny_bert, tmp_path / "model")
    weights = model / "model.safetensors"
    os.truncate(weights, weights.stat().st_size // 2)  # an interrupted copy
    done = subprocess.run(
        [sys.executable, "-m", "aiforge", "run", "text-classification", "좋아요", "--model", str(model)],
        capture_output=True,
        text=True,
        env={**ENV, "COLUMNS": "400"},  # one line per message: the path is not wrapped
        timeout=120,
    )
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert "AF-FILE-001" in done.stderr and str(weights) in done.stderr and "copy" in done.stderr


def _registered_model(tmp_path: Path, store: str) -> str:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    logger = registry.RunLogger(tmp_path, store, experiment="faults")
    logger.start("faults-run")
    logger.log_artifact(model_dir, "model")
    logger.finish()
    for alias in (None, "production"):
        registry.register_version(logger.run_id, f"{logger.artifact_uri}/model", "flip", alias, store)
    return f"{logger.artifact_uri}/model"


def test_sigkill_mid_promotion_leaves_the_registry_consistent(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    _registered_model(tmp_path, store)
    child = _child(
        tmp_path,
        f"""
        from aiforge import registry
        for i in range(10**6):
            registry.promote("flip", 1 + i % 2, "production", tracking_uri={store!r})
            registry.promote("flip", 2 - i % 2, "staging", tracking_uri={store!r})
        """,
    )
    time.sleep(4.0)  # MLflow's import and first connection take ~2-3 s; then it flips many times a second
    child.send_signal(signal.SIGKILL)
    assert child.wait(30) == -9
    client = registry.client(store)
    aliases = client.get_registered_model("flip").aliases
    assert set(aliases) <= {"production", "staging"} and "production" in aliases
    assert all(str(version) in ("1", "2") for version in aliases.values())
    moved = registry.promote("flip", 1, "production", tracking_uri=store)  # the store still takes writes
    assert moved["version"] == "1"


@pytest.mark.slow
def test_two_runs_track_into_one_sqlite_store_at_once(make_config, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'shared.db'}"
    children = []
    for name in ("left", "right"):
        config = make_config(
            f"output_dir={tmp_path / name}",
            "tracking.enabled=true",
            f"tracking.tracking_uri={store}",
            "tracking.model_name=shared-model",
            "training.epochs=1",
        )
        path = tmp_path / f"{name}.yaml"
        path.write_text(dump_yaml(config), encoding="utf-8")
        children.append(
            subprocess.Popen(
                [sys.executable, "-m", "aiforge", "train", str(path), "--json"],
                env=ENV,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    for child in children:
        _, stderr = child.communicate(timeout=600)
        assert child.returncode == 0, stderr[-2000:]
        assert "AF-TRACK-001" not in stderr, stderr[-2000:]
    client = registry.client(store)
    versions = sorted(str(v.version) for v in client.search_model_versions("name='shared-model'"))
    assert versions == ["1", "2"]
    runs = registry.list_runs(limit=10, tracking_uri=store)
    assert {r["name"] for r in runs} >= {"left", "right"} and all(r["status"] == "FINISHED" for r in runs)
    assert not list(tmp_path.glob("*/tracking_pending.jsonl"))  # nothing was left waiting for a retry
