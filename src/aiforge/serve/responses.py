"""Every error the server answers, in one shape: OpenAI's error object plus aiforge's fix.

::

    {"error": {"message": "inputs[1]: invalid input ...", "type": "invalid_request_error",
               "param": "inputs", "code": "AF-INPUT-002", "fix": "fields: text: str",
               "request_id": "3f2a9c1e07b4-1a"}}

The official ``openai`` client reads ``message``/``type``/``code``; people read ``fix``. Bad input is
always a 4xx (malformed JSON 400, wrong fields 422, too large 413, wrong media type 415); a 500 means
a server-side failure. ``request_id`` (also the ``x-request-id`` header) finds the request's log lines.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from aiforge.errors import AiforgeError
from aiforge.serve.batcher import ClientGone, QueueFull
from aiforge.serve.jsonbody import RejectedJson
from aiforge.serve.logs import REQUEST_ID

log = logging.getLogger("aiforge.serve")

CLIENT_CLOSED = 499  # nginx's "client closed request": logged and counted, never seen by a client


class ErrorDetail(BaseModel):
    message: str
    type: str = Field(description="OpenAI's error type, e.g. invalid_request_error, rate_limit_error")
    param: str | None = Field(None, description="the request field at fault, when there is one")
    code: str = Field(description="aiforge's stable error code, e.g. AF-SERVE-002 (`aiforge errors`)")
    fix: str = Field("", description="what to do about it")
    request_id: str | None = Field(None, description="the x-request-id of the request, as logged")


class ErrorBody(BaseModel):
    error: ErrorDetail


# Every status the routes answer besides their success, documented on every route of the OpenAPI
# schema (the routers are included with these) so clients and fuzzers see no undocumented status.
_STATUS_MEANINGS = {
    400: "malformed request: body is not valid JSON, or an unsupported option",
    401: "API key missing or invalid (when the server has keys)",
    403: "the API key's scope does not cover this route",
    404: "no such served model, RAG index or route",
    409: "conflict: the resource is busy (an index being written) or the action is not possible now",
    413: "request body over the server's max_body_bytes",
    415: "unsupported media type (a file that cannot be decoded)",
    422: "the request does not match the schema, or an input is invalid",
    429: "queue full or the key over its rate: retry after the Retry-After header's seconds",
    499: "client closed the request before the answer (logged and counted; no client receives it)",
    500: "server-side failure: request_id finds the traceback in the log",
    503: "model not ready: loading, warming, failed or shutting down (see /readyz)",
    504: "the request waited longer than the model's timeout_s",
    507: "the server's disk is full: nothing was written, the previous state is kept",
}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": meaning} for status, meaning in _STATUS_MEANINGS.items()
}


def error_type(status: int) -> str:
    """OpenAI's ``type`` for an HTTP status."""
    if status == 401:
        return "authentication_error"
    if status == 429:
        return "rate_limit_error"
    if status == 503:
        return "service_unavailable"
    if status == 504:
        return "timeout"
    return "server_error" if status >= 500 else "invalid_request_error"


def error_response(
    status: int,
    code: str,
    message: str,
    fix: str = "",
    param: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    return JSONResponse(error_body(status, code, message, fix, param), status_code=status, headers=headers)


def error_body(
    status: int,
    code: str,
    message: str,
    fix: str = "",
    param: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """``{"error": {...}}`` with the request's id: a JSON error answer's body and a stream's error
    event alike (a stream passes the id it captured when the request came in)."""
    error = {"message": message, "type": error_type(status), "param": param, "code": code, "fix": fix}
    request_id = request_id or REQUEST_ID.get()
    if request_id:  # the same id as the x-request-id header and the server's log lines
        error["request_id"] = request_id
    return {"error": error}


def aiforge_error_response(exc: AiforgeError) -> JSONResponse:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, QueueFull) else None
    status = exc.status if exc.status >= 400 else 400
    param = "inputs" if exc.message.startswith("inputs[") else None
    return error_response(status, exc.code, exc.message, exc.fix, param, headers)


def _validation_response(exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    bad_json = next((e for e in errors if e.get("type") == "json_invalid"), None)
    if bad_json is not None:
        reason = (bad_json.get("ctx") or {}).get("error", "invalid JSON")
        position = bad_json["loc"][-1] if bad_json.get("loc") else "?"
        return error_response(
            400,
            "AF-SERVE-002",
            f"request body is not valid JSON: {reason} (at character {position})",
            'send a JSON object, e.g. {"inputs": ["some text"]}',
        )
    parts = []
    for e in errors[:5]:
        where = ".".join(str(p) for p in e.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {str(e.get('msg')).removeprefix('Value error, ')}")
    first = ".".join(str(p) for p in errors[0].get("loc", ()) if p != "body") if errors else None
    return error_response(
        422,
        "AF-SERVE-002",
        "invalid request: " + "; ".join(parts),
        "see the request schema at /docs",
        param=first or None,
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the shape above."""

    @app.exception_handler(AiforgeError)
    async def _aiforge(request: Request, exc: AiforgeError) -> Response:
        return aiforge_error_response(exc)

    @app.exception_handler(RejectedJson)
    async def _rejected_json(request: Request, exc: RejectedJson) -> Response:
        return aiforge_error_response(exc.error)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> Response:
        return _validation_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> Response:
        code = {401: "AF-SERVE-006", 404: "AF-SERVE-001", 413: "AF-SERVE-007"}.get(
            exc.status_code, "AF-SERVE-002"
        )
        message = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        if exc.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}"
        return error_response(exc.status_code, code, message, "see the API at /docs", headers=exc.headers)

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> Response:
        return Response(status_code=CLIENT_CLOSED)

    # Unexpected exceptions are answered by RequestContext (middleware.py), which adds the request id.


def internal_error_response() -> JSONResponse:
    return error_response(
        500,
        "AF-SERVE-009",
        f"internal server error (request id {REQUEST_ID.get()})",
        "the server log has the traceback under this request id",
    )


def json_content(data: Any) -> Any:
    """Plain JSON types for a response: numpy scalars/arrays and pydantic models converted."""
    if isinstance(data, dict):
        return {k: json_content(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [json_content(v) for v in data]
    if hasattr(data, "tolist"):
        return data.tolist()
    if hasattr(data, "model_dump"):
        return data.model_dump()
    return data
