"""Operations: honest readiness, hot swap from the registry with rollback, graceful shutdown, JSON logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from aiforge.serve import ServeSettings
from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.runtime import Runtime
from tests.serve.conftest import Server, running_server, wait_ready


def clf_model(model_dirs: dict[str, Path], **extra: object) -> dict[str, object]:
    return {
        "name": "clf",
        "task": "text-classification",
        "model": str(model_dirs["clf"]),
        "device": "cpu",
        **extra,
    }


def test_not_ready_while_loading(model_dirs: dict[str, Path]) -> None:
    runtime = Runtime(ServeSettings(models=[clf_model(model_dirs)]), ServeMetrics())
    ready, body = runtime.readiness()  # before the lifespan has loaded anything
    assert not ready and body["reasons"]["clf"].startswith("loading")


def test_failed_load_and_dead_worker_are_reported(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{}")
    settings = ServeSettings(
        port=0,
        demo=False,
        log_level="error",
        models=[
            clf_model(model_dirs),
            {"name": "broken", "task": "text-classification", "model": str(broken), "device": "cpu"},
        ],
    )
    with running_server(settings, ready=False) as server, server.client() as client:
        for _ in range(600):
            body = client.get("/readyz").json()
            if body["models"]["broken"]["state"] == "failed" and body["models"]["clf"]["state"] == "ready":
                break
            time.sleep(0.05)
        response = client.get("/readyz")
        assert response.status_code == 503
        assert set(response.json()["reasons"]) == {"broken"}
        assert "load failed" in response.json()["reasons"]["broken"]
        assert client.post("/v1/models/broken/predict", json={"inputs": ["x"]}).status_code == 503
        assert (
            client.post("/v1/models/clf/predict", json={"inputs": ["x"]}).status_code == 200
        )  # others serve

        task = server.app.state.runtime.get("clf").active.batcher._task
        task.get_loop().call_soon_threadsafe(task.cancel)  # kill the inference dispatcher
        time.sleep(0.2)
        reasons = client.get("/readyz").json()["reasons"]
        assert "dispatcher stopped" in reasons["clf"]
        assert client.post("/v1/models/clf/predict", json={"inputs": ["x"]}).status_code == 503


# ---- hot swap from the registry -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def registry_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, list[str]]]:
    """A registry model 'swap' with two versions (different label names); @production -> version 1."""
    from aiforge import registry
    from tests.tiny_models import make_tiny_bert

    root = tmp_path_factory.mktemp("registry-models")
    client = registry.client()
    # artifacts beside the test's database, as aiforge's own runs do, never ./mlruns in the checkout
    experiment = client.create_experiment(
        "serve-swap", artifact_location=registry.artifact_root(registry.default_tracking_uri())
    )
    run_ids = []
    client.create_registered_model("swap")
    for version, labels in enumerate(({0: "neg", 1: "pos"}, {0: "NEG-v2", 1: "POS-v2"}), start=1):
        run = client.create_run(experiment)
        client.log_artifacts(
            run.info.run_id,
            str(make_tiny_bert(root / f"v{version}", head="seq-cls", id2label=labels, seed=version)),
            "model",
        )
        client.create_model_version("swap", f"{run.info.artifact_uri}/model", run_id=run.info.run_id)
        run_ids.append(run.info.run_id)
    client.set_registered_model_alias("swap", "production", "1")
    settings = ServeSettings(
        port=0,
        demo=False,
        log_level="error",
        models=[
            {
                "name": "swap",
                "task": "text-classification",
                "model": "registry:swap@production",
                "device": "cpu",
                "max_wait_ms": 2,
            }
        ],
    )
    with running_server(settings) as server:
        yield server, run_ids


def test_reload_swaps_without_failing_requests_and_rolls_back(
    registry_server: tuple[Server, list[str]],
) -> None:
    from aiforge import registry

    server, run_ids = registry_server
    with server.client() as client:
        first = client.post("/v1/models/swap/predict", json={"inputs": ["hello"]})
        assert first.headers["x-aiforge-model-version"] == "swap/1"
        assert first.headers["x-aiforge-model-run"] == run_ids[0]  # links the answer to its training run
        assert first.json()["outputs"][0]["label"] in ("neg", "pos")
        unchanged = client.post("/admin/reload", json={"model": "swap"}).json()["results"][0]
        assert unchanged == {"model": "swap", "changed": False, "version": "swap/1"}

        registry.client().set_registered_model_alias("swap", "production", "2")
        stop = threading.Event()
        answers: list[httpx.Response] = []

        def hammer() -> None:
            with server.client() as c:
                while not stop.is_set():
                    answers.append(c.post("/v1/models/swap/predict", json={"inputs": ["hello", "world"]}))

        with ThreadPoolExecutor(3) as pool:
            for _ in range(3):
                pool.submit(hammer)
            time.sleep(0.3)
            swapped = client.post("/admin/reload").json()["results"][0]
            time.sleep(0.3)
            stop.set()
        assert swapped == {"model": "swap", "changed": True, "version": "swap/2", "previous": "swap/1"}
        assert answers and all(a.status_code == 200 for a in answers), {a.status_code for a in answers}
        versions = [a.headers["x-aiforge-model-version"] for a in answers]
        assert set(versions) <= {"swap/1", "swap/2"} and versions[-1] == "swap/2"
        for answer in answers:  # the header names the version whose labels are in the body
            labels = {o["label"] for o in answer.json()["outputs"]}
            assert labels <= (
                {"NEG-v2", "POS-v2"}
                if answer.headers["x-aiforge-model-version"] == "swap/2"
                else {"neg", "pos"}
            )

        back = client.post("/admin/rollback", json={"model": "swap"}).json()
        assert back["version"] == "swap/1" and back["previous"] == "swap/2"
        after = client.post("/v1/models/swap/predict", json={"inputs": ["hello"]})
        assert after.headers["x-aiforge-model-version"] == "swap/1"
        assert client.post("/admin/rollback", json={"model": "swap"}).status_code == 409  # nothing older
        info = server.metric("aiforge_model_info", model="swap", version="swap/1")
        assert info == 1 and server.metric("aiforge_model_info", model="swap", version="swap/2") == 0


# ---- graceful shutdown, in a real process ---------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_sigterm_drains_in_flight_requests(model_dirs: dict[str, Path], tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(
        json.dumps(
            {
                "port": port,
                "demo": False,
                "models": [clf_model(model_dirs, max_wait_ms=1500, max_batch_size=64)],
            }
        )
    )  # JSON is YAML
    log_path = tmp_path / "server.log"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "aiforge.serve", str(config)],
            stderr=log,
            env=env,
            cwd=Path(__file__).parents[2],
        )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, {}, alive=lambda: process.poll() is None)
        result: dict[str, httpx.Response] = {}
        request = threading.Thread(
            target=lambda: result.update(
                r=httpx.post(
                    f"{base}/v1/models/clf/predict",
                    json={"inputs": ["마지막 요청"]},
                    headers={"x-request-id": "drain-1"},
                    timeout=30,
                )
            )
        )
        request.start()
        time.sleep(0.5)  # the request now waits in the batcher (max_wait_ms=1500)
        process.send_signal(signal.SIGTERM)
        request.join(30)
        # uvicorn re-raises the signal once shut down, so the exit status says "terminated by SIGTERM"
        assert process.wait(30) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
    assert result["r"].status_code == 200 and result["r"].json()["outputs"][0]["label"]
    lines = [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]
    access = [
        entry for entry in lines if entry.get("msg") == "request" and entry.get("request_id") == "drain-1"
    ]
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/v1/models/{name}/predict"
    assert all({"ts", "level", "logger", "msg"} <= set(entry) for entry in lines)
    messages = [entry["msg"] for entry in lines]
    assert messages.index("Application shutdown complete.") > lines.index(access[0])  # drained, then stopped
