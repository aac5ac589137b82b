"""Running the app under uvicorn: JSON logs, graceful shutdown, the URLs to print.

On SIGTERM/SIGINT the server reports not-ready at once (/readyz 503, so a load balancer stops
sending), stops accepting connections, lets in-flight requests finish (up to ``drain_timeout_s``),
then drains each model's queue and stops its inference thread.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from aiforge.serve.settings import ServeSettings

log = logging.getLogger("aiforge.serve")


def preflight(settings: ServeSettings) -> None:
    """Resolve every model reference before binding the port: a typo fails at once, with its fix."""
    from aiforge.models import resolve
    from aiforge.tasks import default_model_ref, get_task

    for model in settings.models:
        card = get_task(model.task)
        card.load_class()  # a missing optional dependency is reported now, not at first request
        resolve(model.model or default_model_ref(card), card.name)


def build_server(settings: ServeSettings, process_wide_logging: bool = False) -> Any:
    """A ``uvicorn.Server`` for ``settings`` (call ``.run()``, or ``.serve()`` inside a loop).

    ``process_wide_logging`` formats every logger of the process (see :func:`~aiforge.serve.logs.log_config`).
    """
    import uvicorn

    from aiforge.serve.app import create_app
    from aiforge.serve.logs import log_config

    app = create_app(settings)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=log_config(settings.log_level, settings.log_json, process_wide_logging),
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.drain_timeout_s),
        lifespan="on",
    )

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.runtime.draining = True  # /readyz says 503 from the first signal on
            super().handle_exit(sig, frame)

    return DrainingServer(config)


def server_urls(settings: ServeSettings) -> dict[str, str]:
    """The URLs worth printing: API root, docs, demo page, metrics."""
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    urls = {"api": f"{base}/v1", "docs": f"{base}/docs", "metrics": f"{base}/metrics"}
    if settings.demo:
        urls["demo"] = f"{base}/demo/"
    return urls


def run_server(settings: ServeSettings) -> None:
    """Serve until interrupted. Raises AiforgeError (before binding) for an unresolvable model."""
    from aiforge.serve.memory import limit_malloc_arenas, trim_freed_memory

    limit_malloc_arenas()  # before any model or thread pool starts (see memory.py)
    if settings.malloc_trim_s:
        trim_freed_memory(settings.malloc_trim_s)
    preflight(settings)
    server = build_server(settings, process_wide_logging=True)
    log.info(
        "serving %s",
        ", ".join(f"{m.name} ({m.task})" for m in settings.models),
        extra={"urls": server_urls(settings)},
    )
    server.run()
