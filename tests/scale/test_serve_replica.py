"""The replica's two ways of running a forwarded request (no Ray needed): ``handle_unary`` returns
the whole response at once, ``handle`` streams it; both feed the app the same receive/send."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import StreamingResponse

from aiforge.scale.serve import AppReplica, wants_stream


class Replica(AppReplica):
    """The replica's request handling around a given app (no models to load, none to drain)."""

    def __init__(self, app: FastAPI) -> None:  # type: ignore[override]
        self.web_app = app

    def __del__(self) -> None:  # type: ignore[override]
        pass


def replica() -> tuple[AppReplica, list[str]]:
    app = FastAPI()
    seen: list[str] = []

    @app.post("/echo")
    async def echo(body: dict) -> dict:
        return {"echo": body}

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    @app.get("/events")
    async def events() -> StreamingResponse:
        async def lines() -> Any:
            for i in range(3):
                yield f"data: {i}\n\n"
                await asyncio.sleep(0.01)

        return StreamingResponse(lines(), media_type="text/event-stream")

    @app.get("/wait")
    async def wait(request: Request) -> dict:
        await request.body()
        seen.append((await request.receive())["type"])  # blocks until the caller goes away
        return {}

    return Replica(app), seen


def scope(method: str, path: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"content-type", b"application/json")],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 2),
    }


def test_unary_returns_the_whole_response_and_streaming_the_same_in_chunks() -> None:
    app, _ = replica()

    async def both(method: str, path: str, body: bytes) -> tuple[list, list]:
        whole = await app.handle_unary(scope(method, path), body)
        chunks = [chunk async for chunk in app.handle(scope(method, path), body)]
        return whole, chunks

    whole, chunks = asyncio.run(both("POST", "/echo", b'{"a": 1}'))
    assert [m["type"] for m in whole] == ["http.response.start", "http.response.body"]
    assert whole[0]["status"] == 200 and whole[1]["body"] == b'{"echo":{"a":1}}'
    assert [m for chunk in chunks for m in chunk] == whole

    whole, chunks = asyncio.run(both("GET", "/events", b""))
    bodies = [m["body"] for m in whole if m["type"] == "http.response.body"]
    assert b"".join(bodies) == b"data: 0\n\ndata: 1\n\ndata: 2\n\n"
    assert [m for chunk in chunks for m in chunk] == whole and len(chunks) > 1  # streamed


def test_an_error_after_the_500_page_still_returns_the_page() -> None:
    app, _ = replica()
    messages = asyncio.run(app.handle_unary(scope("GET", "/boom"), b""))
    assert messages[0]["status"] == 500


def test_a_cancelled_call_tells_the_app_the_client_left() -> None:
    app, seen = replica()

    async def cancel_midway() -> None:
        call = asyncio.ensure_future(app.handle_unary(scope("GET", "/wait"), b""))
        await asyncio.sleep(0.05)
        call.cancel()  # what Ray does when the client disconnects
        with contextlib.suppress(asyncio.CancelledError):
            await call

    asyncio.run(cancel_midway())
    assert seen == ["http.disconnect"]


def test_only_a_json_body_asking_for_a_stream_takes_the_streaming_call() -> None:
    assert wants_stream(b'{"model": "gpt", "stream": true}')
    assert wants_stream(b'{"stream" : 1}')
    assert not wants_stream(b'{"model": "gpt", "stream": false}')
    assert not wants_stream(b'{"inputs": ["a stream of words"]}')
    assert not wants_stream(b'["stream"]')
    assert not wants_stream(b'\xff"stream"')  # not JSON: the app answers it, whole
    assert not wants_stream(b"")


def test_haproxy_settings_keep_what_the_environment_says(monkeypatch) -> None:
    from aiforge.scale.serve import haproxy_env

    monkeypatch.setenv("RAY_SERVE_HAPROXY_RETRY_ON", "conn-failure")
    monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", "18404")
    env = haproxy_env("127.0.0.1")
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == "1" and env["RAY_SERVE_HAPROXY_RETRY_ON"] == "conn-failure"
    assert env["RAY_SERVE_HAPROXY_STATS_PORT"] == "18404"
    ports = {env["RAY_SERVE_HAPROXY_METRICS_PORT"], env["RAY_SERVE_FALLBACK_PROXY_HTTP_PORT"]}
    assert len(ports) == 2 and all(p.isdigit() for p in ports)  # free ports instead of Ray's fixed ones
