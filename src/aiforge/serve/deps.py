"""Typed dependencies the routers share: the runtime, the settings, the served model of a request."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, Request
from starlette.types import Receive, Scope

from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.runtime import Deployment, Runtime, ServedModel
from aiforge.serve.settings import ServeSettings


# async on purpose: FastAPI runs plain ``def`` dependencies in its thread pool, a thread hop per request.
async def get_runtime(request: Request) -> Runtime:
    return request.app.state.runtime


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_metrics(request: Request) -> ServeMetrics:
    return request.app.state.metrics


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]
SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
MetricsDep = Annotated[ServeMetrics, Depends(get_metrics)]


def mark_model(scope: Scope, model: ServedModel, served_by: Deployment | None = None) -> None:
    """Label this request's metrics with the model, and name the version in the response header.

    Writes the request's ``scope["state"]`` (what ``request.state`` wraps), which RequestContext
    reads when the response starts.
    """
    state = scope.setdefault("state", {})
    state["model"] = model.name
    deployment = served_by or model.active
    if deployment is not None:
        state["model_version"] = deployment.version
        state["model_run_id"] = deployment.run_id
        state["model_runtime"] = deployment.pipe.runtime_label()  # onnx/int8, torch/fp32 or None


async def disconnected(receive: Receive) -> Any:
    """Returns once the client has gone away; call only after the request body has been read."""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
