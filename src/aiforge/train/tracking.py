"""MLflow as one training callback: params at the start, metrics as they come, artifacts and a
registered model version at the end. Every call goes through :class:`aiforge.registry.RunLogger`,
which never raises, so a locked or unreachable store cannot stop a run."""

from __future__ import annotations

import logging
from pathlib import Path

from aiforge.secrets import redact
from aiforge.train.callbacks import Callback, TrainState
from aiforge.train.config import TrackingConfig

log = logging.getLogger(__name__)


class MlflowCallback(Callback):
    def __init__(
        self,
        cfg: TrackingConfig,
        output_dir: Path,
        tags: dict[str, str],
        params: dict[str, object],
        resume_run_id: str | None = None,
    ) -> None:
        from aiforge.registry import RunLogger

        self.cfg = cfg
        self.logger = RunLogger(output_dir, cfg.tracking_uri, cfg.experiment)
        self.tags = tags
        self.params = params
        self.resume_run_id = resume_run_id

    def on_train_start(self, state: TrainState) -> None:
        run_name = self.cfg.run_name or Path(state.output_dir).name
        state.run_id = self.logger.start(run_name, self.tags, run_id=self.resume_run_id)
        if self.resume_run_id is None:  # a resumed run logged its params already
            self.logger.log_params(redact(self.params))  # params may leave the machine

    def on_log(self, state: TrainState) -> None:
        self.logger.log_metrics({f"train_{k}": v for k, v in state.logs.items()}, state.step)

    def on_eval_end(self, state: TrainState) -> None:
        numbers = {f"val_{k}": v for k, v in state.evaluation.items() if isinstance(v, int | float)}
        self.logger.log_metrics({**numbers, "epoch": state.epoch}, state.step)

    def on_train_end(self, state: TrainState) -> None:
        summary = state.summary
        self.logger.log_metrics(summary.get("final_metrics", {}), state.step)
        if summary.get("tags"):
            self.logger.set_tags(summary["tags"])  # aiforge.vs_baseline.test: beats / tie / below
        for path in summary.get("artifacts", []):
            self.logger.log_artifact(Path(path))
        model_dir = Path(summary["model_dir"])
        self._wrap_as_mlflow_model(model_dir)
        self.logger.log_artifact(model_dir, "model")
        self._register(state, model_dir)
        self.logger.finish("FINISHED")

    def _wrap_as_mlflow_model(self, model_dir: Path) -> None:
        """MLmodel beside the weights: the registered version then loads with mlflow.pyfunc."""
        from aiforge.registry import write_pyfunc_wrapper
        from aiforge.tasks.card import get_task

        task = self.tags.get("aiforge.task", "")
        try:
            card = get_task(task)
            field = card.pipeline.primary_field
            example = card.warmup({}) if card.warmup is not None and field else None
            write_pyfunc_wrapper(model_dir, card.name, field, example if isinstance(example, str) else None)
        except Exception as exc:  # noqa: BLE001 - the model itself is saved; only the wrapper is missing
            log.warning("[AF-TRACK-001] could not write the MLflow model wrapper for %s: %s", model_dir, exc)

    def _register(self, state: TrainState, model_dir: Path) -> None:
        if not (self.cfg.register_model and self.logger.run_id and self.logger.artifact_uri):
            return
        from aiforge.registry import register_version

        name = self.cfg.model_name or Path(state.output_dir).name
        try:
            state.registered_version = register_version(
                self.logger.run_id,
                f"{self.logger.artifact_uri}/model",
                name,
                self.cfg.alias,
                self.cfg.tracking_uri,
                description=state.summary.get("description", ""),
            )
            state.summary["registered_name"] = name
            self.logger.set_tags({"aiforge.registered": f"{name}/{state.registered_version}"})
        except Exception as exc:  # noqa: BLE001 - the model is saved locally; registration can be redone
            log.warning(
                "[AF-TRACK-001] could not register %s: %s: %s; the model is in %s",
                name,
                type(exc).__name__,
                exc,
                model_dir,
            )
