"""`aiforge quantize`: the int8 quality gate of a trained classifier, on its own data.

Without ``--data`` the splits come from the model's training record (``aiforge.json``: the data
section and seed the run used): the validation split the run held out and its test file, the
held-back split no training decision saw. The measurement (``tasks.onnxrt.quantize_gate``) is then
written three places: ``onnx/quality.json`` (what ``-p runtime=onnx`` reads to pick its default
precision), the model's metadata (``aiforge.json`` -> ``int8``; for a registry model also its
version's tags) and an MLflow run (parameters, per-split metrics), so the registry shows whether a
version may serve at int8 and what it costs.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.models import resolve

log = logging.getLogger("aiforge.train")

Splits = dict[str, tuple[list[str], list[str]]]
RECORD_FILE = "aiforge.json"


def training_splits(model_dir: Path) -> Splits:
    """The validation and held-back (test) splits of the run that trained ``model_dir``."""
    from aiforge.train.config import DataConfig
    from aiforge.train.dataset import load_dataset

    try:
        record = json.loads((model_dir / RECORD_FILE).read_text(encoding="utf-8"))
        data, seed = record["config"]["data"], int(record["config"]["training"]["seed"])
    except (OSError, ValueError, KeyError, TypeError):
        raise AiforgeError(
            "AF-DATA-001",
            f"'{model_dir}' has no training record ({RECORD_FILE}) naming its data",
            "pass the splits: --data validation.jsonl --data heldback.jsonl (text, label)",
        ) from None
    dataset = load_dataset(DataConfig(**data), seed)
    splits: Splits = {
        "validation": (list(dataset.validation.inputs), [str(y) for y in dataset.validation.labels])
    }
    if dataset.test is not None:
        splits["held-back"] = (list(dataset.test.inputs), [str(y) for y in dataset.test.labels])
    return splits


def record_in_metadata(model_dir: Path, record: dict[str, Any]) -> None:
    """The gate's verdict in the model's own record, beside its training metrics."""
    path = model_dir / RECORD_FILE
    try:
        metadata = json.loads(path.read_text(encoding="utf-8")) if path.exists() else {}
        metadata["int8"] = summary(record)
        path.write_text(json.dumps(metadata, indent=2, ensure_ascii=False), encoding="utf-8")
    except (OSError, ValueError) as exc:  # a read-only model: quality.json and MLflow still hold it
        log.warning("could not write the int8 verdict into %s: %s", path, exc)


def summary(record: dict[str, Any]) -> dict[str, Any]:
    return {
        "default": record["int8_default"],
        "tolerance_points": record["tolerance_points"],
        "loss_points": record["loss_points"],
        "model_hash": record["model_hash"],
        **{
            f"{name}_accuracy": [s["fp32_accuracy"], s["int8_accuracy"]]
            for name, s in record["splits"].items()
        },
    }


def log_to_mlflow(model: str, record: dict[str, Any], registry_version: tuple[str, str] | None) -> str | None:
    """One MLflow run for the gate (params, per-split metrics); a registry version gets tags."""
    from aiforge import registry
    from aiforge.cache import cache_dir

    tracker = registry.RunLogger(cache_dir() / "quantize")
    run_id = tracker.start(f"quantize {model}", tags={"aiforge.kind": "quantize"})
    tracker.log_params(
        {
            "model": model,
            "model_hash": record["model_hash"],
            "opset": record["opset"],
            "recipe": record.get("recipe", ""),
            "tolerance_points": record["tolerance_points"],
            "int8_default": record["int8_default"],
        }
    )
    metrics: dict[str, float] = {}
    for name, split in record["splits"].items():
        for key in ("fp32_accuracy", "int8_accuracy", "fp32_macro_f1", "int8_macro_f1", "agreement", "rows"):
            metrics[f"{name}_{key}"] = float(split[key])
        metrics[f"{name}_loss_points"] = float(record["loss_points"][name])
    tracker.log_metrics(metrics, step=0)
    if registry_version is not None:
        name, version = registry_version
        registry.tag_version(
            name,
            version,
            {
                "aiforge.int8_default": str(record["int8_default"]).lower(),
                "aiforge.int8_loss_points": json.dumps(record["loss_points"]),
                "aiforge.int8_gate_run": run_id or "",
            },
        )
    tracker.finish()
    return run_id


def quantize_model(
    model: str, splits: Splits | None, tolerance: float, recipe: str | None = None
) -> dict[str, Any]:
    """Run the gate on ``splits`` (None: the model's own validation and held-back splits) and record
    the verdict in quality.json, the model's metadata and MLflow."""
    from aiforge.tasks.onnxrt import quantize_gate

    ref = resolve(model, "text-classification")
    if splits is None:
        if ref.path is None:
            raise AiforgeError(
                "AF-DATA-001",
                f"'{model}' is not a local or registry model, so its training data is unknown",
                "pass the splits: --data validation.jsonl --data heldback.jsonl (text, label)",
            )
        splits = training_splits(ref.path)
    record = quantize_gate(model, splits, tolerance, recipe)
    if ref.path is not None and ref.kind != "packaged":
        record_in_metadata(ref.path, record)
    version = (ref.registry_name, ref.registry_version) if ref.kind == "registry" else None
    record["mlflow_run_id"] = log_to_mlflow(model, record, version if version and all(version) else None)  # type: ignore[arg-type]
    return record
