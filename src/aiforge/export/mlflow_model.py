"""The pyfunc side of a registered version (``MLmodel`` names this module as its loader, see
:func:`aiforge.registry.write_pyfunc_wrapper`): ``mlflow.pyfunc.load_model("models:/NAME@ALIAS")``
and ``mlflow models serve`` run the model through aiforge's pipeline for its task."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


class AiforgePyfunc:
    """What ``mlflow.pyfunc`` wraps: ``predict(DataFrame | list | dict) -> DataFrame``, one row out
    per row in (an input that fails gives a row with an ``error`` column, as in `aiforge run`)."""

    def __init__(self, model_dir: Path) -> None:
        from aiforge.tasks import load_pipeline

        self.task = task_of(model_dir)
        self.pipeline = load_pipeline(self.task, model=str(model_dir), device="cpu")

    def predict(self, model_input: Any, params: dict[str, Any] | None = None) -> pd.DataFrame:
        if isinstance(model_input, dict):
            model_input = pd.DataFrame(model_input)
        if isinstance(model_input, pd.DataFrame):
            records: list[Any] = batch_rows(model_input).to_dict(orient="records")
        else:
            records = list(model_input)
        outputs = self.pipeline.predict(records)  # params: load-time ones are fixed in the model dir
        return pd.DataFrame([flat(output) for output in outputs])


def batch_rows(frame: pd.DataFrame) -> pd.DataFrame:
    """One row per input. MLflow turns ``{"text": ["a", "b"]}`` (a served ``inputs`` body, a dict
    given to predict) into one row holding lists: a row of lists is a batch."""
    listed = frame.map(lambda value: isinstance(value, list | tuple)).all()
    if len(frame) and listed.all():
        return frame.explode(list(frame.columns), ignore_index=True)
    return frame


def flat(output: dict[str, Any]) -> dict[str, Any]:
    """Nested values (the score table, entities) as JSON text: a DataFrame cell MLflow can serve."""
    return {
        k: json.dumps(v, ensure_ascii=False) if isinstance(v, list | dict) else v for k, v in output.items()
    }


def task_of(model_dir: Path) -> str:
    """The task the MLmodel recorded (``aiforge_task``), else what the model's config says."""
    import yaml

    mlmodel = model_dir / "MLmodel"
    if mlmodel.is_file():
        task = (yaml.safe_load(mlmodel.read_text(encoding="utf-8")).get("metadata") or {}).get("aiforge_task")
        if task:
            return str(task)
    from aiforge.serve.settings import infer_task

    return infer_task(str(model_dir))


def _load_pyfunc(data_path: str) -> AiforgePyfunc:
    """MLflow's entry point for a pyfunc loader module (the name is MLflow's)."""
    return AiforgePyfunc(Path(data_path))
