"""The replica: aiforge's own app (``create_app``) inside a Ray Serve replica, its lifespan entered.

:class:`AppReplica` serves requests forwarded by the gateway; :class:`DirectReplica` is the replica
as the ingress deployment itself, behind HAProxy (see :mod:`aiforge.scale.serve`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import Any

from aiforge.serve.settings import ServeSettings


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

            async def send_direct(message: MutableMapping[str, Any]) -> None:
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
