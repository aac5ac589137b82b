"""API keys: ``Authorization: Bearer KEY`` on every route but /healthz, when keys are configured.

Enforced as ASGI middleware rather than per-router dependencies so that nothing can be left open by
accident: the JSON API, /readyz, /metrics, /docs, /openapi.json, the Gradio app under /demo (and its
websocket/SSE calls) and unknown paths all go through the same check. Browsers cannot send a Bearer
header when opening a page, so ``GET /demo/?api_key=KEY`` (or /docs) with a valid key also sets an
HttpOnly, SameSite=Strict cookie that later same-site requests present instead.

Keys live in a file, one per line (``#`` comments); options after the key, separated by spaces::

    s3cr3t-inference-key                     # inference: every route but /admin/*
    s3cr3t-ops-key        scope=admin         # admin: /admin/* and everything else
    s3cr3t-partner-key    rate=60/min         # at most 60 requests a minute (429 + Retry-After)

Only the keys' SHA-256 digests are kept in memory; a presented key is compared with every digest in
constant time, and keys are never logged (the access log has the path without its query string).
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, field
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
SCOPES = ("inference", "admin")
ADMIN_PREFIX = "/admin"
# Page loads fetch dozens of static assets; counting them against a key's rate would lock a browser
# out of the demo it opened. Only these GETs are free; every API call and every demo action counts.
UNCOUNTED_GET_PREFIXES = ("/demo", "/docs", "/redoc", "/openapi.json")
_RATE = re.compile(r"^(\d+(?:\.\d+)?)/(s|sec|second|m|min|minute|h|hour)$")
_PER_SECONDS = {"s": 1, "sec": 1, "second": 1, "m": 60, "min": 60, "minute": 60, "h": 3600, "hour": 3600}
KEY_FILE_FIX = "write one key per line, with optional 'scope=inference|admin' and 'rate=N/s|min|hour'"


@dataclass
class TokenBucket:
    """``capacity`` requests at once, refilled at ``per_second``; 429 with the wait when empty."""

    per_second: float
    capacity: float
    tokens: float = field(init=False)
    updated: float = field(default_factory=time.monotonic)

    def __post_init__(self) -> None:
        self.tokens = self.capacity

    def take(self, now: float | None = None) -> float:
        """0.0 when a request may go now (and count it), else the seconds until one may."""
        now = time.monotonic() if now is None else now
        self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.per_second)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.per_second


@dataclass
class ApiKey:
    digest: bytes
    scope: str = "inference"
    rate: TokenBucket | None = None

    def allows(self, path: str) -> bool:
        return self.scope == "admin" or not _is_admin(path)


def parse_rate(text: str) -> TokenBucket:
    """``60/min`` -> a bucket refilling one request a second that holds a burst of up to 60."""
    match = _RATE.match(text.strip())
    if not match or float(match.group(1)) <= 0:
        raise ValueError(f"rate '{text}' is not N/s, N/min or N/hour with N > 0")
    count, unit = float(match.group(1)), match.group(2)
    return TokenBucket(per_second=count / _PER_SECONDS[unit], capacity=max(1.0, count))


def parse_key_line(line: str, where: str) -> ApiKey:
    key, *options = line.split()
    api_key = ApiKey(_digest(key))
    for option in options:
        name, _, value = option.partition("=")
        try:
            if name == "scope" and value in SCOPES:
                api_key.scope = value
            elif name == "rate":
                api_key.rate = parse_rate(value)
            else:
                raise ValueError(f"unknown option '{option}' (scope={'|'.join(SCOPES)}, rate=N/min)")
        except ValueError as exc:
            raise AiforgeError("AF-CONFIG-001", f"{where}: {exc}", KEY_FILE_FIX) from None
    return api_key


def load_api_keys(path: Path) -> tuple[ApiKey, ...]:
    """The keys in ``path``; an empty file is an error (it would silently lock everyone out)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"cannot read api_key_file '{path}': {exc.strerror}",
            "check the path and its permissions",
        ) from None
    keys = tuple(
        parse_key_line(line.split(" #")[0], f"api_key_file '{path}' line {number}")
        for number, line in enumerate(lines, 1)
        if line.strip() and not line.lstrip().startswith("#")
    )
    if not keys:
        raise AiforgeError(
            "AF-CONFIG-001",
            f"api_key_file '{path}' holds no keys",
            "write one key per line, e.g. `python -c 'import secrets; print(secrets.token_urlsafe(32))'`",
        )
    return keys


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode("utf-8")).digest()


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def _counted(scope: Scope) -> bool:
    path = scope.get("path", "")
    return scope.get("method") != "GET" or not path.startswith(UNCOUNTED_GET_PREFIXES)


class ApiKeyAuth:
    """401 without a valid key, 403 for a key whose scope does not cover the route, 429 (with
    ``Retry-After``) for a key over its rate; OpenAI error objects, like every error."""

    def __init__(self, app: ASGIApp, keys: tuple[ApiKey, ...]) -> None:
        self.app = app
        self.keys = keys

    def find(self, key: str | None) -> ApiKey | None:
        if not key:
            return None
        digest = _digest(key)
        matches = [hmac.compare_digest(digest, k.digest) for k in self.keys]  # every one: constant time
        return next((k for k, match in zip(self.keys, matches, strict=True) if match), None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = self.find(_bearer(scope)) or self.find(_cookie(scope))
        wrapped_send = send
        if key is None and scope["type"] == "http" and scope.get("method") == "GET":
            query_key = _query_key(scope)
            key = self.find(query_key)
            if key is not None and query_key is not None:
                wrapped_send = _setting_cookie(send, query_key)
        if key is None:
            await self._deny(scope, receive, send)
            return
        if not key.allows(scope.get("path", "")):
            response = error_response(
                403,
                "AF-SERVE-010",
                f"this API key may not call {scope.get('path')} (scope '{key.scope}')",
                "use a key with 'scope=admin' in the api_key_file for /admin routes",
            )
            await response(scope, receive, send)
            return
        wait = key.rate.take() if key.rate is not None and _counted(scope) else 0.0
        if wait > 0:
            retry_after = max(1, math.ceil(wait))
            response = error_response(
                429,
                "AF-SERVE-011",
                f"this API key is over its rate limit; retry in {retry_after} s",
                "send fewer requests per second, or raise the key's 'rate=' in the api_key_file",
                headers={"Retry-After": str(retry_after)},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, wrapped_send)

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
