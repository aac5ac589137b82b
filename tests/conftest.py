"""Shared fixtures. Every test runs offline and keeps aiforge's cache (registry db, assembled
weights) in a per-session temporary home, never in the user's ~/.cache."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def aiforge_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("aiforge-home")
    previous = os.environ.get("AIFORGE_HOME")
    os.environ["AIFORGE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    if previous is None:
        os.environ.pop("AIFORGE_HOME", None)
    else:
        os.environ["AIFORGE_HOME"] = previous
