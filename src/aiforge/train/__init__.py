"""Fine-tuning: ``train(config) -> TrainResult``, ``dry_run(config)``, ``init_template(task)``.

Example::

    from aiforge.train import load_config, train
    result = train(load_config("examples/nsmc-sentiment.yaml", ["training.epochs=1"]))
    print(result.metrics["test"]["accuracy"], result.baseline["test"]["accuracy"], result.ref)

Heavy imports (torch, transformers) happen when these functions run, not on ``import aiforge.train``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiforge.train.config import TrainConfig, init_template, load_config

if TYPE_CHECKING:
    from aiforge.train.callbacks import Callback
    from aiforge.train.dryrun import DryRunReport
    from aiforge.train.report import TrainResult

__all__ = ["TrainConfig", "load_config", "init_template", "train", "dry_run", "config_from_run"]


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    strict: bool = False,
    callbacks: list[Callback] | None = None,
    progress: bool = True,
) -> TrainResult:
    """Fine-tune, evaluate, save, track and register; see :mod:`aiforge.train.loop`."""
    from aiforge.train.loop import train as _train

    return _train(config, resume=resume, strict=strict, callbacks=callbacks, progress=progress)


def dry_run(config: TrainConfig, strict: bool = False) -> DryRunReport:
    """Validate data and model and estimate time and memory, without training."""
    from aiforge.train.dryrun import dry_run as _dry_run

    return _dry_run(config, strict=strict)


def config_from_run(run_id: str, tracking_uri: str | None = None) -> dict[str, Any]:
    """The resolved config a tracked run used (``aiforge train --from-run RUN_ID``), as a dict that
    ``load_config(path, overrides, base=...)`` layers under the file and ``--set`` overrides."""
    import tempfile
    from pathlib import Path

    import yaml

    from aiforge import registry
    from aiforge.errors import AiforgeError

    mlflow_client = registry.client(tracking_uri)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            path = mlflow_client.download_artifacts(run_id, "config.yaml", tmp)
            return yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except Exception as exc:  # noqa: BLE001 - mlflow raises several types for a missing run/artifact
        raise AiforgeError(
            "AF-CONFIG-001",
            f"no config found for run '{run_id}': {type(exc).__name__}: {exc}",
            "`aiforge runs` lists run ids",
        ) from None
