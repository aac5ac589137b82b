"""Request JSON, parsed strictly: hostile bodies get a 400 naming the problem, never a 500.

``json.loads`` alone accepts ``NaN`` / ``Infinity``, turns ``1e999`` into ``inf``, raises
``ValueError`` on integers over 4,300 digits, ``RecursionError`` on deep nesting and lets lone
surrogates (``"\\ud800"``) through to code that later fails to encode them. :func:`load_request_json`
refuses all of these with AF-SERVE-002 (status 400). The nesting check is a scan before parsing and
costs nothing for ordinary bodies: it only runs when the body holds more brackets than the limit.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from aiforge.errors import AiforgeError

MAX_DEPTH = 64  # nested arrays/objects; real requests (records, chat messages, tool arguments) use < 10
MAX_NUMBER_CHARS = 100  # longer number literals are refused (no model parameter needs them)
_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_SURROGATE = re.compile("[\ud800-\udfff]")
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def bad_json(message: str, fix: str) -> AiforgeError:
    return AiforgeError("AF-SERVE-002", f"request body rejected: {message}", fix, status=400)


def nesting_depth(raw: bytes) -> int:
    """The deepest nesting of arrays/objects in ``raw``, brackets inside strings not counted."""
    depth = deepest = 0
    for char in _STRING.sub(b"", raw).translate(None, _NOT_BRACKETS):
        depth += 1 if char in b"[{" else -1
        if depth > deepest:
            deepest = depth
            if deepest > MAX_DEPTH:  # deep enough to refuse: stop scanning
                break
    return deepest


def _refuse_constant(name: str) -> Any:
    raise bad_json(
        f"'{name}' is not a JSON number", "send finite numbers only (NaN and Infinity are not JSON)"
    )


def _number(text: str, convert: type) -> Any:
    if len(text) > MAX_NUMBER_CHARS:
        raise bad_json(
            f"a number literal is {len(text)} characters long (limit {MAX_NUMBER_CHARS})",
            "send numbers of ordinary size",
        )
    value = convert(text)
    if isinstance(value, float) and not math.isfinite(value):
        raise bad_json(f"number {text} overflows to infinity", "send finite numbers of ordinary size")
    return value


def _strings(value: Any) -> Any:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)


def load_request_json(raw: bytes) -> Any:
    """Parse a request body, or raise AiforgeError (400) naming why it is refused."""
    if raw.count(b"[") + raw.count(b"{") > MAX_DEPTH and nesting_depth(raw) > MAX_DEPTH:
        raise bad_json(
            f"JSON nested deeper than {MAX_DEPTH} levels", f"send at most {MAX_DEPTH} levels of nesting"
        )
    try:
        text = raw.decode("utf-8")  # strict: invalid bytes and encoded surrogates are refused
    except UnicodeDecodeError as exc:
        raise bad_json(
            f"not valid UTF-8 (byte {exc.start}: {exc.reason})", "send the body encoded as UTF-8"
        ) from None
    try:
        data = json.loads(
            text,
            parse_constant=_refuse_constant,
            parse_int=lambda s: _number(s, int),
            parse_float=lambda s: _number(s, float),
        )
    except json.JSONDecodeError as exc:
        raise bad_json(
            f"not valid JSON: {exc}", 'send a JSON object, e.g. {"inputs": ["some text"]}'
        ) from None
    except RecursionError:  # unreachable after the depth scan; kept so no body can ever make a 500
        raise bad_json("JSON nested too deeply", f"send at most {MAX_DEPTH} levels of nesting") from None
    if _SURROGATE_ESCAPE.search(raw) and any(_SURROGATE.search(s) for s in _strings(data)):
        raise bad_json(
            "a string holds an unpaired UTF-16 surrogate (\\ud800-\\udfff escape)",
            "send valid Unicode text: surrogate escapes must come in high-low pairs",
        )
    return data


class RejectedJson(HTTPException):
    """Raised from :meth:`StrictJsonRequest.json`: FastAPI passes HTTPExceptions from body parsing
    on as they are (any other exception becomes a generic 400), and the app's handler answers
    ``error`` in the usual error shape."""

    def __init__(self, error: AiforgeError) -> None:
        super().__init__(error.status, error.message)
        self.error = error


class StrictJsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = load_request_json(await self.body())
            except AiforgeError as exc:
                raise RejectedJson(exc) from None
        return self._json


class StrictJsonRoute(APIRoute):
    """A route whose JSON body is parsed by :func:`load_request_json` (``APIRouter(route_class=...)``)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def strict_handler(request: Request) -> Response:
            return await handler(StrictJsonRequest(request.scope, request.receive))

        return strict_handler
