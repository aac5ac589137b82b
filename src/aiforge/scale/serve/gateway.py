"""The gateway: HTTP in through Ray's Python proxy, forwarded to a replica, ASGI messages back."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from aiforge.errors import AiforgeError
from aiforge.scale.serve.replica import acknowledge_lifespan

log = logging.getLogger("aiforge.scale")

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
