"""`aiforge quantize REF` with no --data: the gate runs on the model's own validation and held-back
splits (from its training record) and lands in quality.json, aiforge.json, MLflow and the registry."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
from typer.testing import CliRunner

from aiforge import registry
from aiforge.cli import app
from aiforge.io import resolve_data_path
from tests.tiny_models import make_tiny_bert


def trained_looking_model(tmp_path: Path) -> Path:
    """A tiny classifier with the training record a run writes: its data section and seed."""
    rows = pd.read_csv(resolve_data_path("packaged:nsmc_sample/train.tsv"), sep="\t")
    rows = rows.rename(columns={"document": "text"})[["text", "label"]]
    rows.groupby("label").head(20).to_csv(tmp_path / "train.csv", index=False)
    rows.groupby("label").tail(6).to_json(
        tmp_path / "test.jsonl", orient="records", lines=True, force_ascii=False
    )
    model = make_tiny_bert(tmp_path / "model", head="seq-cls", id2label={0: "negative", 1: "positive"})
    record = {
        "task": "text-classification",
        "config": {
            "data": {
                "train": str(tmp_path / "train.csv"),
                "test": str(tmp_path / "test.jsonl"),
                "validation_split": 0.25,
            },
            "training": {"seed": 42},
        },
    }
    (model / "aiforge.json").write_text(json.dumps(record), encoding="utf-8")
    return model


def test_quantize_a_registry_model_on_its_own_splits_records_everywhere(tmp_path: Path) -> None:
    model = trained_looking_model(tmp_path)
    logger = registry.RunLogger(tmp_path / "train-run")
    run_id = logger.start("tiny")
    logger.log_artifact(model, "model")
    logger.finish()
    assert run_id and logger.artifact_uri
    # a name of its own: the session's registry is shared, and test_loop registers "tiny-sentiment"
    version = registry.register_version(run_id, f"{logger.artifact_uri}/model", "quantize-gate-tiny")
    ref = f"registry:quantize-gate-tiny/{version}"

    result = CliRunner().invoke(app, ["quantize", ref, "--tolerance", "50"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.output)
    assert {name: split["rows"] for name, split in record["splits"].items()} == {
        "validation": 10,
        "held-back": 12,
    }
    assert record["int8_default"] is True

    mlflow = registry.client()
    run = mlflow.get_run(record["mlflow_run_id"])
    assert run.data.params["model"] == ref
    assert set(run.data.metrics) >= {
        "validation_int8_accuracy",
        "held-back_loss_points",
        "held-back_agreement",
    }
    tags = mlflow.get_model_version("quantize-gate-tiny", version).tags
    assert tags["aiforge.int8_default"] == "true" and tags["aiforge.int8_gate_run"] == run.info.run_id
    local = registry.fetch_version(ref).path
    assert json.loads((local / "aiforge.json").read_text(encoding="utf-8"))["int8"]["default"] is True


def test_quantize_without_data_or_record_says_how_to_pass_splits(tmp_path: Path) -> None:
    model = make_tiny_bert(tmp_path / "bare", head="seq-cls")
    result = CliRunner().invoke(app, ["quantize", str(model)])
    assert result.exit_code != 0
    assert "AF-DATA-001" in result.output and "--data" in result.output
