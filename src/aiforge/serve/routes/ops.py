"""Operations: liveness, honest readiness, Prometheus metrics, hot reload and rollback.

* ``GET /healthz``  200 while the process serves HTTP (never needs an API key).
* ``GET /readyz``   200 only when every model is loaded, warmed and its inference worker healthy;
  otherwise 503 with ``{"ready": false, "reasons": {"model": "loading: ..."}}``.
* ``GET /metrics``  Prometheus text format (see metrics.py).
* ``POST /admin/reload``    re-resolve registry aliases; swap the models whose alias moved.
* ``POST /admin/rollback``  serve a model's previous version again.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from aiforge.serve.deps import MetricsDep, RuntimeDep
from aiforge.serve.jsonbody import StrictJsonRoute

health_router = APIRouter(tags=["operations"])
admin_router = APIRouter(prefix="/admin", tags=["admin"], route_class=StrictJsonRoute)


@health_router.get("/healthz", summary="Liveness: the process answers HTTP")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@health_router.get("/readyz", summary="Readiness: every model loaded, warmed and its worker alive")
async def readyz(runtime: RuntimeDep) -> JSONResponse:
    ready, body = runtime.readiness()
    return JSONResponse(body, status_code=200 if ready else 503)


@health_router.get(
    "/metrics",
    summary="Prometheus metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type=metrics.content_type)


class ModelSelection(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str | None = Field(
        None, description="a served name; default: every model served from the registry"
    )


@admin_router.post("/reload", summary="Re-resolve model references and hot-swap versions that moved")
async def reload(runtime: RuntimeDep, body: ModelSelection | None = None) -> dict[str, Any]:
    selected = body.model if body else None
    if selected is not None:
        targets = [runtime.get(selected)]
    else:
        targets = [m for m in runtime.models.values() if (m.settings.model or "").startswith("registry:")]
    return {"results": [await model.reload() for model in targets]}


class RollbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: str = Field(description="the served name to roll back")


@admin_router.post("/rollback", summary="Serve a model's previous version again (pins it)")
async def rollback(body: RollbackRequest, runtime: RuntimeDep) -> dict[str, Any]:
    return await runtime.get(body.model).rollback()
