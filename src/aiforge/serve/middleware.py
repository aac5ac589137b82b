"""Pure ASGI middleware (no BaseHTTPMiddleware: it breaks streaming and disconnect detection).

* :class:`RequestContext`: request id (``x-request-id`` in and out), one JSON access-log line and
  the request metrics per request, the ``x-aiforge-model-version`` header, and a JSON 500 with the
  request id for any unexpected exception.
* :class:`BodyLimit`: 413 for bodies over ``max_body_bytes``, declared (Content-Length) or streamed.
"""

from __future__ import annotations

import itertools
import logging
import re
import time
import uuid
from typing import Any

from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.serve.logs import REQUEST_ID
from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.responses import error_response, internal_error_response

log = logging.getLogger("aiforge.serve")

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
# Request ids: a random per-process prefix + a counter (uuid4 costs an os.urandom call per request).
_ID_PREFIX = uuid.uuid4().hex[:12]
_ID_COUNTER = itertools.count(1)
QUIET_ROUTES = ("/healthz", "/readyz", "/metrics")  # probes and scrapes log at debug level


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key == name:
            return value.decode("latin-1")
    return None


def route_label(scope: Scope) -> str:
    """The route template (bounded label cardinality), "/demo" for the demo app, else "unmatched"."""
    path = getattr(scope.get("route"), "path", None)
    if scope.get("path", "").startswith("/demo"):
        return "/demo"
    return path or "unmatched"


async def read_body(receive: Receive, limit: int | None = None) -> bytes:
    """A request's whole body (the first ``limit`` bytes of it, when given); what arrived, when the
    client disconnects before the end."""
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunk = message.get("body", b"")
        if limit is None or size < limit:
            parts.append(chunk if limit is None else chunk[: limit - size])
        size += len(chunk)
        if not message.get("more_body"):
            break
    return b"".join(parts)


class RequestContext:
    def __init__(self, app: ASGIApp, metrics: ServeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = header(scope, b"x-request-id")
        request_id = (
            incoming if incoming and _REQUEST_ID.match(incoming) else f"{_ID_PREFIX}-{next(_ID_COUNTER):x}"
        )
        token = REQUEST_ID.set(request_id)
        state: dict[str, Any] = scope.setdefault("state", {})
        started = time.perf_counter()
        outcome = {"status": 500, "started": False}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                outcome.update(status=message["status"], started=True)
                headers = MutableHeaders(scope=message)
                headers["x-request-id"] = request_id
                if state.get("model_version"):
                    headers["x-aiforge-model-version"] = state["model_version"]
                if state.get("model_run_id"):
                    headers["x-aiforge-model-run"] = state["model_run_id"]
                if state.get("model_runtime"):
                    headers["x-aiforge-runtime"] = state["model_runtime"]
            await send(message)

        self.metrics.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if outcome["started"]:
                raise
            await internal_error_response()(scope, receive, send_with_headers)
        finally:
            self.metrics.in_flight.dec()
            self._record(scope, state, outcome["status"], time.perf_counter() - started)
            REQUEST_ID.reset(token)

    def _record(self, scope: Scope, state: dict[str, Any], status: int, seconds: float) -> None:
        route = route_label(scope)
        model = str(state.get("model", ""))
        self.metrics.requests.labels(route, model, str(status)).inc()
        self.metrics.request_duration.labels(route, model, str(status)).observe(seconds)
        level = logging.DEBUG if route in QUIET_ROUTES and status != 500 else logging.INFO
        log.log(
            level,
            "request",
            extra={
                "method": scope.get("method"),
                "path": scope.get("path"),
                "route": route,
                "status": status,
                "duration_ms": round(seconds * 1000, 2),
                "model": model or None,
                "model_version": state.get("model_version"),
                "client": (scope.get("client") or ("", 0))[0],
            },
        )


class BodyTooLarge(HTTPException):
    """Raised from ``receive`` mid-body; FastAPI re-raises HTTPExceptions from body parsing as they are."""


class BodyLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> BodyTooLarge:
        return BodyTooLarge(413, f"request body exceeds the server's limit of {self.max_bytes} bytes")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await self._reject(scope, receive, send)
            return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise self._too_large()
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if started:
                raise
            await self._reject(scope, receive, send)

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        exc = self._too_large()
        response = error_response(
            413,
            "AF-SERVE-007",
            exc.detail,
            "send a smaller body (split the inputs), or raise the server's max_body_bytes",
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)
