"""Fixtures for the sweep tests: an inline training config on the tiny BERT and a slice of NSMC,
small enough that a trial trains in a few seconds on one thread."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.train.conftest import nsmc_files, tiny_bert  # noqa: F401 - shared fixtures


@pytest.fixture
def train_fields(tiny_bert: Path, nsmc_files: dict[str, Path], tmp_path: Path) -> dict[str, Any]:  # noqa: F811
    """A training config as a sweep's inline ``train:`` mapping: 90 training rows, 6 steps an epoch,
    tracked in a SQLite store of the test's own."""
    return {
        "task": "text-classification",
        "model": str(tiny_bert),
        "baseline": False,
        "data": {"train": str(nsmc_files["train"]), "validation_split": 0.25},
        "training": {"epochs": 1, "batch_size": 16, "num_threads": 1, "max_length": 32},
        "tracking": {"enabled": False, "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    }
