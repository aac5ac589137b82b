"""`aiforge serve`: dynamic batching, OpenAI-compatible API, demo page, health, metrics, auth.

Python use (what the CLI does)::

    from aiforge.serve import load_settings, run_server
    settings = load_settings("serve.yaml")                       # or: models=["sentence-embeddings"]
    settings = load_settings(
        models=["nsmc=registry:nsmc@production"],
        overrides={"port": 8080, "models.max_batch_size": 32},  # typed flag values by dotted key
        sets=["models.nsmc.timeout_s=10"],                        # --set KEY=VALUE strings
    )
    run_server(settings)                                          # blocks; Ctrl-C drains and stops

``create_app(settings)`` returns the FastAPI app for embedding in another ASGI server. Importing this
package is light: FastAPI, uvicorn, torch and Gradio load when a server is built.
"""

from aiforge.serve.settings import (
    ModelSettings,
    ServeSettings,
    is_config_file,
    load_settings,
    parse_model_spec,
)

__all__ = [
    "ModelSettings",
    "ServeSettings",
    "build_server",
    "create_app",
    "is_config_file",
    "load_settings",
    "parse_model_spec",
    "run_server",
    "server_urls",
]


def create_app(settings: ServeSettings):  # noqa: ANN201 - FastAPI is imported lazily
    """The FastAPI app for ``settings`` (see :mod:`aiforge.serve.app`)."""
    from aiforge.serve.app import create_app as factory

    return factory(settings)


def build_server(settings: ServeSettings, process_wide_logging: bool = False):  # noqa: ANN201
    """A ``uvicorn.Server`` for ``settings`` (see :mod:`aiforge.serve.server`)."""
    from aiforge.serve.server import build_server as build

    return build(settings, process_wide_logging)


def run_server(settings: ServeSettings) -> None:
    """Serve ``settings`` until interrupted (see :mod:`aiforge.serve.server`)."""
    from aiforge.serve.server import run_server as run

    run(settings)


def server_urls(settings: ServeSettings) -> dict[str, str]:
    from aiforge.serve.server import server_urls as urls

    return urls(settings)
