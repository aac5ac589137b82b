"""``POST /v1/models/{name}/predict``: the same inputs and outputs as `aiforge run`, over HTTP.

JSON::

    POST /v1/models/nsmc/predict
    {"inputs": ["재밌어요", {"text": "별로"}], "parameters": {"top_k": 1}}
    -> {"model": "nsmc", "version": "nsmc-sentiment/3", "outputs": [{"label": ...}, {...}]}

Multipart (images, audio): one or more ``file`` parts, each one input; other form fields
(``language``, ``prompt`` ...) are added to every input's record, ``parameters`` is a JSON object.
Media in JSON must be base64 or a ``data:`` URI; the server never reads a path a client names.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.datastructures import UploadFile
from starlette.types import ASGIApp, Receive, Scope, Send

from aiforge.config import describe_errors
from aiforge.errors import AiforgeError
from aiforge.serve.batcher import ClientGone
from aiforge.serve.deps import RuntimeDep, disconnected, mark_model
from aiforge.serve.jsonbody import load_request_json
from aiforge.serve.middleware import header, read_body
from aiforge.serve.responses import CLIENT_CLOSED, aiforge_error_response
from aiforge.serve.runtime import Runtime, ServedModel
from aiforge.serve.settings import ServeSettings

BaseModelT = TypeVar("BaseModelT", bound=BaseModel)

router = APIRouter(prefix="/v1/models", tags=["predict"])

MAX_FILES = 64


class PredictRequest(BaseModel):
    """A batch of inputs for one model, like the records of `aiforge run --input-file`."""

    model_config = ConfigDict(extra="forbid")

    inputs: (
        Annotated[list[Any], Field(min_length=1)]
        | Annotated[str, Field(min_length=1)]
        | Annotated[dict[str, Any], Field(min_length=1)]
    ) = Field(
        description='texts, records ({"text": ...}, {"question": ..., '
        '"context": ...}) or base64 media; one output per input, same order. A bare string or '
        "record (as the Hugging Face Inference API accepts) is one input: one output",
    )
    parameters: dict[str, Any] = Field(
        default_factory=dict,
        description="per-request task parameters (GET /v1/models lists each model's request_params)",
    )

    def input_list(self) -> list[Any]:
        return self.inputs if isinstance(self.inputs, list) else [self.inputs]


class PredictResponse(BaseModel):
    model: str
    version: str = Field(
        description="the model version that answered (also the x-aiforge-model-version header)"
    )
    outputs: list[dict[str, Any]]


_MULTIPART_SCHEMA = {
    "type": "object",
    "properties": {
        "file": {
            "type": "array",
            "items": {"type": "string", "format": "binary"},
            "minItems": 1,
            "maxItems": MAX_FILES,
        },
        "parameters": {"type": "string", "description": "JSON object of task parameters"},
    },
    "required": ["file"],
    # other fields of the model's input record (e.g. language for speech) are accepted too, but
    # which ones depends on the model: see GET /v1/models and the task's card
    "additionalProperties": False,
}
_REQUEST_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": PredictRequest.model_json_schema()},
            "multipart/form-data": {"schema": _MULTIPART_SCHEMA},
        },
    }
}


@router.post(
    "/{name}/predict",
    response_model=PredictResponse,
    openapi_extra=_REQUEST_BODY,
    summary="Run a served model on inputs (JSON or multipart upload)",
)
async def predict(name: str, request: Request, runtime: RuntimeDep) -> JSONResponse:
    content_type = request.headers.get("content-type", "")
    if is_json(content_type):  # in the app, JsonPredict answers these before routing
        return await predict_json(runtime, name, await request.body(), request.scope, request.receive)
    model = runtime.get(name)
    mark_model(request.scope, model)
    if not content_type.startswith("multipart/form-data"):
        raise AiforgeError(
            "AF-INPUT-005",
            f"unsupported content type '{content_type}'",
            "send application/json, or multipart/form-data with 'file' parts",
            status=415,
        )
    inputs, parameters = await read_multipart(request, model)
    return await answer(model, inputs, parameters, request.scope, request.receive)


def is_json(content_type: str) -> bool:
    return content_type.startswith("application/json") or not content_type


async def predict_json(
    runtime: Runtime, name: str, body: bytes, scope: Scope, receive: Receive
) -> JSONResponse:
    """A JSON predict request, from its raw body to its response (errors raise AiforgeError)."""
    model = runtime.get(name)
    mark_model(scope, model)
    request = parse_json(body, PredictRequest)
    inputs = [model.decode_json_input(raw) for raw in request.input_list()]
    return await answer(model, inputs, request.parameters, scope, receive)


async def answer(
    model: ServedModel, inputs: list[Any], parameters: dict[str, Any], scope: Scope, receive: Receive
) -> JSONResponse:
    outputs, deployment = await model.predict(inputs, parameters, lambda: disconnected(receive))
    mark_model(scope, model, deployment)
    return JSONResponse({"model": model.name, "version": deployment.version, "outputs": outputs})


class JsonPredict:
    """``POST /v1/models/{name}/predict`` with a JSON body, answered by :func:`predict_json` without
    FastAPI's routing and dependency solving: the request every client sends under load, and that
    machinery was over half of the event loop's CPU per request (measured with cProfile), CPU the
    inference threads need. Installed as the innermost middleware, so request ids, metrics, API keys
    and the body limit apply as on every route; anything else (multipart, other routes) goes on to
    the app. The route above stays for /docs, multipart, and apps that mount the router alone."""

    PATH = re.compile(r"^/v1/models/([^/]+)/predict$")

    def __init__(self, app: ASGIApp, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.route = next(r for r in router.routes if getattr(r, "endpoint", None) is predict)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        match = self.PATH.match(scope["path"]) if scope["type"] == "http" else None
        if match is None or scope["method"] != "POST" or not is_json(header(scope, b"content-type") or ""):
            await self.app(scope, receive, send)
            return
        name = match.group(1)  # ASGI paths arrive percent-decoded
        scope["route"], scope["path_params"] = self.route, {"name": name}  # the metrics' route label
        try:
            response: Response = await predict_json(
                self.runtime, name, await read_body(receive), scope, receive
            )
        except AiforgeError as exc:
            response = aiforge_error_response(exc)
        except ClientGone:
            response = Response(status_code=CLIENT_CLOSED)
        await response(scope, receive, send)


def parse_json(raw: bytes, schema: type[BaseModelT]) -> BaseModelT:
    """Parse and validate a JSON body: 400 for malformed or hostile JSON (see jsonbody.py), 422 naming
    each wrong field."""
    data = load_request_json(raw)
    try:
        return schema.model_validate(data)
    except ValidationError as exc:
        raise AiforgeError(
            "AF-SERVE-002",
            f"invalid request: {describe_errors(exc, schema)}",
            "see the request schema at /docs",
            status=422,
        ) from None


async def read_multipart(request: Request, model: ServedModel) -> tuple[list[Any], dict[str, Any]]:
    """Uploaded files -> one input record each (``{primary_field: bytes, **other form fields}``)."""
    media = model.cls.primary_field
    if media in (None, "text"):
        raise AiforgeError(
            "AF-INPUT-005",
            f"model '{model.name}' ({model.task}) takes text, not uploads",
            'send JSON: {"inputs": ["..."]}',
            status=415,
        )
    settings: ServeSettings = request.app.state.settings
    async with request.form(max_files=MAX_FILES, max_part_size=settings.max_body_bytes) as form:
        uploads = [v for k, v in form.multi_items() if k == "file" and isinstance(v, UploadFile)]
        fields = {
            k: v for k, v in form.multi_items() if k not in ("file", "parameters") and isinstance(v, str)
        }
        raw_params = form.get("parameters")
        if not uploads:
            raise AiforgeError(
                "AF-SERVE-002",
                "multipart request has no 'file' part",
                f"upload each {media} as a form field named 'file'",
                status=422,
            )
        inputs = [{media: await upload.read(), **fields} for upload in uploads]
    return inputs, parse_parameters(raw_params)


def parse_parameters(raw: Any) -> dict[str, Any]:
    if raw is None or raw == "":
        return {}
    try:
        parameters = json.loads(raw) if isinstance(raw, str) else None
    except json.JSONDecodeError:
        parameters = None
    if not isinstance(parameters, dict):
        raise AiforgeError(
            "AF-SERVE-002",
            "form field 'parameters' must be a JSON object",
            'e.g. parameters={"top_k": 3}',
            status=422,
        )
    return parameters
