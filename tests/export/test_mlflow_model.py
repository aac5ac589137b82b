"""Registered versions are MLflow models: `mlflow.pyfunc.load_model("models:/NAME@ALIAS")` and
`mlflow models serve --env-manager local` run them through aiforge's pipeline."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pandas as pd
import pytest

from aiforge import registry
from tests.export.conftest import KOREAN_REVIEW

MODEL_URI = "models:/nsmc-tiny@production"


@pytest.fixture
def store(trained, monkeypatch: pytest.MonkeyPatch) -> str:
    """The session's registry, named the way MLflow users name it (the environment, no global state)."""
    uri = registry.default_tracking_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    return uri


def test_registered_version_loads_with_pyfunc_and_agrees_with_aiforge(store: str, trained) -> None:
    import mlflow

    from aiforge.api import pipeline

    model = mlflow.pyfunc.load_model(MODEL_URI)
    assert model.metadata.metadata["aiforge_task"] == "text-classification"
    assert model.metadata.get_input_schema().input_names() == ["text"]
    assert model.input_example is not None and list(model.input_example.columns) == ["text"]
    frame = model.predict(pd.DataFrame({"text": [KOREAN_REVIEW, "최악의 영화"]}))
    ours = pipeline("text-classification", model=str(trained.model_dir)).predict(
        [KOREAN_REVIEW, "최악의 영화"]
    )
    assert list(frame["label"]) == [o["label"] for o in ours]
    assert frame["score"].tolist() == pytest.approx([o["score"] for o in ours], abs=1e-5)
    batched = model.predict({"text": [KOREAN_REVIEW, "최악의 영화"]})  # a dict of lists is a batch
    assert list(batched["label"]) == list(frame["label"])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_mlflow_models_serve_answers_offline(store: str, trained) -> None:
    port = free_port()
    bin_dir = str(Path(sys.executable).parent)  # mlflow starts `uvicorn` from PATH
    env = {**os.environ, "MLFLOW_TRACKING_URI": store, "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    command = [f"{bin_dir}/mlflow", "models", "serve", "-m", MODEL_URI, "--env-manager", "local"]
    server = subprocess.Popen(
        [*command, "-h", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert server.poll() is None, "mlflow models serve exited"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/ping", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        body = {"dataframe_split": {"columns": ["text"], "data": [[KOREAN_REVIEW]]}}
        reply = httpx.post(f"http://127.0.0.1:{port}/invocations", json=body, timeout=60)
        assert reply.status_code == 200
        prediction = reply.json()["predictions"][0]
        assert prediction["label"] in ("negative", "positive") and 0 <= prediction["score"] <= 1
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
