"""A real Ray cluster for the scale-out tests: a head and one extra worker node, on 127.0.0.1 only.

``ray_cluster`` starts them once for the whole ``tests/scale`` package (``ray start --head`` with
2 logical CPUs, ``ray start --address=...`` with 1 more), connects this test process to it as a
driver, and stops everything afterwards (``ray stop --force``), also when a test fails. The
dashboard, usage stats and log monitor stay off: on a 2-core machine they only cost CPU.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serve.conftest import model_dirs, speech_wav  # noqa: F401 - shared fixtures
from tests.train.conftest import make_config, nsmc_files, tiny_bert  # noqa: F401

RAY = str(Path(sys.executable).parent / "ray")
SRC = str(Path(__file__).resolve().parents[2] / "src")
HEAD_CPUS, WORKER_CPUS = 2, 1


@dataclass
class Cluster:
    address: str  # HOST:PORT of the head's GCS, what --ray-address takes
    env: dict[str, str]  # the environment a CLI subprocess needs to join it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cluster_env() -> dict[str, str]:
    path = os.environ.get("PYTHONPATH", "")
    return {
        **os.environ,
        "PYTHONPATH": SRC + (os.pathsep + path if path else ""),
        "RAY_USAGE_STATS_ENABLED": "0",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        # the `ray start` default; also keeps a ~/.ray/auth_token left by a local ray.init() out of it
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "disabled"),
    }


def ray_start(*args: str, env: dict[str, str]) -> None:
    common = ["--node-ip-address=127.0.0.1", "--include-log-monitor=false", "--object-store-memory=300000000"]
    result = subprocess.run(
        [RAY, "start", *args, *common], env=env, capture_output=True, text=True, timeout=180
    )
    if result.returncode != 0:
        raise RuntimeError(f"ray start {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


def ray_stop(env: dict[str, str]) -> None:
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)


@pytest.fixture(scope="package")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    import ray

    env = cluster_env()
    auth_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = env["RAY_AUTH_MODE"]  # this process is a driver of the cluster too
    port = free_port()
    address = f"127.0.0.1:{port}"
    try:
        ray_start(
            "--head",
            f"--port={port}",
            f"--num-cpus={HEAD_CPUS}",
            "--include-dashboard=false",
            "--disable-usage-stats",
            f"--ray-client-server-port={free_port()}",
            env=env,
        )
        ray_start(f"--address={address}", f"--num-cpus={WORKER_CPUS}", env=env)
        deadline = time.monotonic() + 60
        ray.init(address=address, logging_level="WARNING", runtime_env={"env_vars": {"HF_HUB_OFFLINE": "1"}})
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the worker node did not join: {ray.nodes()}")
            time.sleep(0.5)
        yield Cluster(address, {**env, "RAY_ADDRESS": address})
    finally:
        with contextlib.suppress(Exception):
            from ray import serve

            serve.shutdown()  # stops Serve's HAProxy, which `ray stop` would leave running
        with contextlib.suppress(Exception):
            ray.shutdown()
        ray_stop(env)
        if auth_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = auth_mode


@pytest.fixture(scope="package")
def serve_port() -> int:
    """Ray Serve has one HTTP port per cluster: every serving test module deploys behind it."""
    return free_port()
