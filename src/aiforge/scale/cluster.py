"""Connecting to Ray: an existing cluster (``--ray-address`` / ``RAY_ADDRESS``) or a local one.

``connect()`` is what every Ray backend calls first. With no address it starts Ray inside this
process (``ray.init()``), sized by ``num_cpus``; with one it joins that cluster. Either way the
workers receive this process's aiforge code (``py_modules``) and the environment that decides
where models and runs live (Hugging Face cache and offline mode, ``MLFLOW_TRACKING_URI``,
``AIFORGE_*``), so a worker resolves ``registry:NAME@ALIAS`` exactly as the driver would.

Ray is imported here and only here, lazily: ``aiforge --help`` never loads it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from aiforge.errors import AiforgeError

log = logging.getLogger("aiforge.scale")

# Environment variables the workers must see as the driver does.
FORWARDED_ENV = (
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "TOKENIZERS_PARALLELISM",
    "MLFLOW_TRACKING_URI",
    "GRADIO_ANALYTICS_ENABLED",
)
FORWARDED_PREFIXES = ("AIFORGE_",)


def require_ray() -> Any:
    """``import ray``, or AF-RAY-001 with the install command."""
    try:
        import ray
    except ImportError:
        raise AiforgeError(
            "AF-RAY-001",
            "--backend ray needs the 'ray' package, which is not installed",
            'pip install "aiforge[ray]"  (or drop --backend ray to run locally)',
        ) from None
    return ray


def worker_env() -> dict[str, str]:
    """The driver's variables that decide caches, offline mode and tracking, for every worker."""
    env = {k: v for k, v in os.environ.items() if k in FORWARDED_ENV or k.startswith(FORWARDED_PREFIXES)}
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    return env


def runtime_env() -> dict[str, Any]:
    """Ship this aiforge (the driver's code, not whatever a worker has installed) and its environment."""
    import aiforge

    return {"py_modules": [str(Path(aiforge.__file__).parent)], "env_vars": worker_env()}


def connect(address: str | None = None, num_cpus: int | None = None) -> Any:
    """Join the cluster at ``address`` (default ``$RAY_ADDRESS``), else start a local Ray.

    Returns the ``ray`` module. Calling it again in the same process is a no-op.
    """
    ray = require_ray()
    if ray.is_initialized():
        return ray
    address = address or os.environ.get("RAY_ADDRESS") or None
    options: dict[str, Any] = {
        "runtime_env": runtime_env(),
        "include_dashboard": False,
        "logging_level": logging.WARNING,
        "configure_logging": True,
    }
    if address is None:
        options["num_cpus"] = num_cpus or os.cpu_count() or 1
    from ray.exceptions import AuthenticationError

    try:
        ray.init(address=address, **options)
    except AuthenticationError as exc:
        # Ray 2.60's local ray.init() turns token auth on and saves ~/.ray/auth_token; from then on
        # `ray start` and every driver that finds the file turn it on too, unless told otherwise
        raise AiforgeError(
            "AF-RAY-002",
            f"Ray refused the connection to {address or 'a local Ray'}: {exc}",
            "give the cluster and aiforge the same auth mode: RAY_AUTH_MODE=disabled for both (a "
            "~/.ray/auth_token left by a local run turns token auth on), or RAY_AUTH_MODE=token with "
            "the cluster's token in ~/.ray/auth_token or RAY_AUTH_TOKEN",
        ) from None
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = address or "a local Ray"
        raise AiforgeError(
            "AF-RAY-002",
            f"could not connect to {where}: {type(exc).__name__}: {exc}",
            "start a cluster with `ray start --head`, pass its address with --ray-address HOST:PORT "
            "(or set RAY_ADDRESS), or omit both to start Ray locally",
        ) from None
    log.info("connected to Ray at %s", address or "a local instance")
    return ray


def calm_threads() -> None:
    """Call first thing in an actor, before torch loads: idle OpenMP threads sleep instead of spinning.

    A Ray node runs the proxy, the gateway and other actors next to each model; OpenMP's default
    busy-wait between parallel regions takes their CPU (measured: a replica's CPU per request
    fell by a third on 2 cores). An explicit ``OMP_WAIT_POLICY`` in the environment wins.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
