"""The app factory: ``create_app(settings) -> FastAPI``. Nothing loads at import time.

Request path, outermost first: RequestContext (request id, access log, metrics) -> CORS (when origins
are set: preflights are answered before auth, as browsers send them without credentials) ->
ApiKeyAuth (when keys are set: scopes, per-key rates) -> BodyLimit -> JsonPredict (JSON predict
requests, answered without FastAPI's routing) -> routers. Models load in the lifespan, in a
background task, so the server answers /healthz (alive) and /readyz (503, "loading") while weights
load and warm up.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator

from fastapi import FastAPI

from aiforge import __version__
from aiforge.serve.auth import ApiKeyAuth, load_api_keys
from aiforge.serve.metrics import ServeMetrics
from aiforge.serve.middleware import BodyLimit, RequestContext
from aiforge.serve.responses import ERROR_RESPONSES, install_error_handlers
from aiforge.serve.routes import openai, ops, predict, rag
from aiforge.serve.runtime import Runtime
from aiforge.serve.schema import served_schema
from aiforge.serve.settings import ServeSettings

DESCRIPTION = """Models served by `aiforge serve`, with dynamic batching.

* `POST /v1/models/{name}/predict`: the same inputs and outputs as `aiforge run`
* OpenAI-compatible: `/v1/embeddings`, `/v1/chat/completions` (SSE), `/v1/audio/transcriptions`, `/v1/models`
* RAG over your documents: `POST /v1/rag/{index}/query` (answer with checked citations), `GET /v1/rag`
* operations: `/healthz`, `/readyz`, `/metrics`, `/admin/reload`, `/admin/rollback`; demo page at `/demo/`

Errors are OpenAI error objects with an aiforge code and a `fix`. Every model response carries the
`x-aiforge-model-version` header.
"""


def create_app(settings: ServeSettings) -> FastAPI:
    """Build the app for ``settings``; the models load when the app starts (its lifespan)."""
    metrics = ServeMetrics()
    runtime = Runtime(settings, metrics)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        metrics.gc.start()
        loader = asyncio.get_running_loop().create_task(runtime.start(), name="aiforge-load-models")
        try:
            yield
        finally:
            metrics.gc.stop()
            runtime.draining = True
            if not loader.done():
                loader.cancel()
            await runtime.stop()
            if "aiforge.rag" in sys.modules:  # only when a RAG route or the demo used it
                sys.modules["aiforge.rag"].close_indexes()

    app = FastAPI(title="aiforge serve", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.settings = settings
    app.state.runtime = runtime
    app.state.metrics = metrics
    install_error_handlers(app)
    for router in (ops.health_router, predict.router, openai.router, rag.router, ops.admin_router):
        app.include_router(router, responses=ERROR_RESPONSES)
    # add_middleware puts each new middleware outermost: the last added runs first.
    app.openapi = served_schema(app, runtime)  # type: ignore[method-assign]
    app.add_middleware(predict.JsonPredict, runtime=runtime)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    if settings.api_key_file is not None:
        app.add_middleware(ApiKeyAuth, keys=load_api_keys(settings.api_key_file))
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type", "X-Request-ID"],
            expose_headers=["X-Request-ID", "X-Aiforge-Model-Version", "Retry-After"],
        )
    app.add_middleware(RequestContext, metrics=metrics)
    if settings.demo:
        from aiforge.serve.demo import mount_demo

        mount_demo(app, runtime, settings.max_body_bytes)
    return app
