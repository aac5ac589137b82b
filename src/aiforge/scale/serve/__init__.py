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

Modules: :mod:`.replica` (the app inside a replica), :mod:`.gateway` (the forwarding ingress) and
:mod:`.deployment` (scaling, ingress choice, deploy/run; ``app_builder``, the ``import_path`` of
Ray Serve config files: ``aiforge.scale.serve:app_builder``).
"""

from aiforge.scale.serve.deployment import (
    APP_NAME,
    Scaling,
    app_builder,
    application,
    deploy,
    haproxy_available,
    haproxy_env,
    run,
    serve_uses_haproxy,
    shutdown_serve,
    start_serve,
    undeploy,
    wait_routed,
    wait_running,
)
from aiforge.scale.serve.gateway import Gateway, wants_stream
from aiforge.scale.serve.replica import AppReplica, DirectReplica

__all__ = [
    "APP_NAME",
    "AppReplica",
    "DirectReplica",
    "Gateway",
    "Scaling",
    "app_builder",
    "application",
    "deploy",
    "haproxy_available",
    "haproxy_env",
    "run",
    "serve_uses_haproxy",
    "shutdown_serve",
    "start_serve",
    "undeploy",
    "wait_routed",
    "wait_running",
    "wants_stream",
]
