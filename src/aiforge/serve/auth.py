"""API keys: ``Authorization: Bearer KEY`` on every route but /healthz, when keys are configured.

Enforced as ASGI middleware rather than per-router dependencies so that nothing can be left open by
accident: the JSON API, /readyz, /metrics, /docs, /openapi.json, the Gradio app under /demo (and its
websocket/SSE calls) and unknown paths all go through the same check. Browsers cannot send a Bearer
header when opening a page, so ``GET /demo/?api_key=KEY`` (or /docs) with a valid key also sets an
HttpOnly, SameSite=Strict cookie that later same-site requests present instead.

Keys live in a file (one per line, ``#`` comments); only their SHA-256 digests are kept in memory and
compared in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
from http.cookies import SimpleCookie
from pathlib import Path
from urllib.parse import parse_qs

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from aiforge.errors import AiforgeError
from aiforge.serve.middleware import header
from aiforge.serve.responses import error_response

OPEN_PATHS = frozenset({"/healthz"})
COOKIE = "aiforge_api_key"


def load_api_keys(path: Path) -> frozenset[str]:
    """The keys in ``path``; an empty file is an error (it would silently lock everyone out)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"cannot read api_key_file '{path}': {exc.strerror}",
            "check the path and its permissions",
        ) from None
    keys = frozenset(line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#"))
    if not keys:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"api_key_file '{path}' holds no keys",
            "write one key per line, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


class ApiKeyAuth:
    """401 (OpenAI error object, ``WWW-Authenticate: Bearer``) for requests without a valid key."""

    def __init__(self, app: ASGIApp, keys: frozenset[str]) -> None:
        self.app = app
        self.digests = tuple(_digest(k) for k in keys)

    def valid(self, key: str | None) -> bool:
        if not key:
            return False
        digest = _digest(key)
        return any([hmac.compare_digest(digest, d) for d in self.digests])  # no short-circuit: constant time

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        if self.valid(_bearer(scope)) or self.valid(_cookie(scope)):
            await self.app(scope, receive, send)
            return
        query_key = _query_key(scope)
        if scope["type"] == "http" and scope.get("method") == "GET" and self.valid(query_key):
            await self.app(scope, receive, _setting_cookie(send, query_key))  # type: ignore[arg-type]
            return
        await self._deny(scope, receive, send)

    async def _deny(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        given = _bearer(scope) is not None
        message = "invalid API key" if given else "missing API key"
        response = error_response(
            401,
            "AF-SERVE-006",
            message,
            "send 'Authorization: Bearer KEY' with a key from the server's api_key_file",
            headers={"WWW-Authenticate": "Bearer"},
        )
        await response(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    value = header(scope, b"authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def _cookie(scope: Scope) -> str | None:
    raw = header(scope, b"cookie")
    if not raw:
        return None
    morsel = SimpleCookie(raw).get(COOKIE)
    return morsel.value if morsel else None


def _query_key(scope: Scope) -> str | None:
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("api_key")
    return values[0] if values else None


def _setting_cookie(send: Send, key: str) -> Send:
    async def wrapped(message: Message) -> None:
        if message["type"] == "http.response.start":
            MutableHeaders(scope=message).append(
                "set-cookie", f"{COOKIE}={key}; HttpOnly; SameSite=Strict; Path=/"
            )
        await send(message)

    return wrapped
