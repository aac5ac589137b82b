"""Tracking never kills training; the registry stores versions and moves aliases."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path

import pytest

from aiforge import registry
from aiforge.errors import AiforgeError


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    return f"sqlite:///{tmp_path_factory.mktemp('store') / 'mlflow.db'}?timeout=30"


def test_unreachable_store_logs_locally_warns_once_and_syncs_later(
    tmp_path: Path, store: str, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("a file where the store's folder should be", encoding="utf-8")
    logger = registry.RunLogger(tmp_path / "out", f"sqlite:///{blocker / 'mlflow.db'}", experiment="t")
    with caplog.at_level(logging.WARNING, logger="aiforge.registry"):
        assert logger.start("offline-run") is None
        logger.log_params({"training.lr": 1e-4})
        logger.log_metrics({"train_loss": 0.5}, step=10)
        logger.log_metrics({"train_loss": 0.25}, step=20)
    assert sum("AF-TRACK-001" in r.getMessage() for r in caplog.records) == 1
    assert len(logger.pending_path.read_text(encoding="utf-8").splitlines()) == 4  # start + 3 calls

    logger.tracking_uri = store  # the store is back: finish() replays what was logged locally
    assert logger.finish() is True
    assert not logger.pending_path.exists()
    run = registry.client(store).get_run(logger.run_id)
    assert run.data.params["training.lr"] == "0.0001"
    history = registry.client(store).get_metric_history(logger.run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(10, 0.5), (20, 0.25)]


def test_overlong_param_is_truncated_not_fatal(tmp_path: Path, store: str) -> None:
    logger = registry.RunLogger(tmp_path, store, experiment="t")
    assert logger.start("long-param") is not None
    logger.log_params({"data.train": "x" * 10_000, "ok": 1})
    assert logger.finish() is True
    params = registry.client(store).get_run(logger.run_id).data.params
    assert len(params["data.train"]) == registry.PARAM_VALUE_LIMIT and params["ok"] == "1"


def test_sqlite_store_is_in_wal_mode(store: str) -> None:
    registry.client(store)
    path = registry.sqlite_path(store)
    with sqlite3.connect(path) as con:
        assert con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_default_store_lives_in_aiforge_home_with_a_busy_timeout(aiforge_home: Path) -> None:
    uri = registry.default_tracking_uri()
    assert registry.sqlite_path(uri) == aiforge_home / "mlflow.db"
    assert "timeout=" in uri
    assert registry.artifact_root(uri) == (aiforge_home / "mlartifacts").as_uri()


def test_register_promote_and_list(tmp_path: Path, store: str) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "config.json").write_text("{}", encoding="utf-8")
    logger = registry.RunLogger(tmp_path, store, experiment="t")
    logger.start("reg-run", tags={"aiforge.task": "text-classification"})
    logger.log_artifact(model_dir, "model")
    logger.log_metrics({"test_accuracy": 0.75}, step=1)
    logger.finish()
    first = registry.register_version(
        logger.run_id, f"{logger.artifact_uri}/model", "reg-demo", tracking_uri=store
    )
    second = registry.register_version(
        logger.run_id, f"{logger.artifact_uri}/model", "reg-demo", "staging", store
    )
    assert (first, second) == ("1", "2")
    moved = registry.promote("reg-demo", 1, "staging", tracking_uri=store)
    assert moved == {"name": "reg-demo", "alias": "staging", "version": "1", "previous": "2"}
    with pytest.raises(AiforgeError) as err:
        registry.promote("reg-demo", 7, "production", tracking_uri=store)
    assert err.value.code == "AF-MODEL-004" and "versions of reg-demo: 1, 2" in err.value.message
    rows = registry.list_runs(limit=10, tracking_uri=store)
    row = next(r for r in rows if r["run_id"] == logger.run_id)
    assert row["metrics"]["test_accuracy"] == 0.75 and row["task"] == "text-classification"
