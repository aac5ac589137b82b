"""The OpenAPI schema of one server: the routers' schema plus what only this server knows.

Where a request names a model, the schema lists the served models that fit as an ``enum``: the
``{name}`` of ``/v1/models/{name}/...`` (every model) and the ``model`` field of each
OpenAI-compatible body (the models whose task backs that route). ``dimensions`` on /v1/embeddings
lists the vector sizes the served embedders return, ``language`` on /v1/audio/transcriptions the
languages the served recognisers know, and arrays of inputs are capped at the smallest queue. So
/docs offers real choices in drop-downs, generated clients validate them, and a schema-driven fuzzer
reaches the models instead of stopping at 404s.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from aiforge.serve.runtime import Runtime
from aiforge.tasks.audio.synthesis import accepted_voices
from aiforge.tasks.card import OpenAIRoute, tasks_for_route

ROUTE_BODIES: dict[str, OpenAIRoute] = {
    "EmbeddingRequest": "embeddings",
    "ChatCompletionRequest": "chat",
    "CompletionRequest": "completions",
    "Body_transcriptions_v1_audio_transcriptions_post": "transcriptions",
    "SpeechRequest": "speech",
}
TRANSCRIPTION_BODY = "Body_transcriptions_v1_audio_transcriptions_post"


def served_schema(app: FastAPI, runtime: Runtime) -> Callable[[], dict[str, Any]]:
    """A replacement for ``app.openapi``; cached (as FastAPI does) once every model is loaded,
    since the embedders' sizes are known only then."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is not None:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes
        )
        name_models(schema, runtime)
        if all(model.state == "ready" for model in runtime.models.values()):
            app.openapi_schema = schema
        return schema

    return openapi


def name_models(schema: dict[str, Any], runtime: Runtime) -> None:
    names = list(runtime.models)
    for path, operations in schema.get("paths", {}).items():
        if path.startswith("/v1/models/{name}"):
            for operation in operations.values():
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter.get("name") == "name":
                        parameter["schema"] = {**parameter.get("schema", {}), "enum": names}
    components = schema.get("components", {}).get("schemas", {})
    for body, route in ROUTE_BODIES.items():
        properties = components.get(body, {}).get("properties", {})
        fitting = [m.name for m in runtime.models.values() if m.task in tasks_for_route(route)]
        if "model" in properties and fitting:
            properties["model"]["enum"] = fitting
    embedders = [
        m.active.pipe for m in runtime.models.values() if m.task in tasks_for_route("embeddings") and m.active
    ]
    sizes = sorted({int(getattr(pipe, "dim", 0)) for pipe in embedders} - {0})
    dimensions = components.get("EmbeddingRequest", {}).get("properties", {}).get("dimensions")
    if dimensions is not None and sizes:
        dimensions["anyOf"] = [{"type": "integer", "enum": sizes}, {"type": "null"}]
    languages = sorted(
        {
            code
            for m in runtime.models.values()
            if m.task in tasks_for_route("transcriptions") and m.active
            for code in getattr(getattr(m.active.pipe, "engine", None), "languages", ())
        }
    )
    language = components.get(TRANSCRIPTION_BODY, {}).get("properties", {}).get("language")
    if language is not None and languages:
        language.pop("anyOf", None)  # omitted means "detect"; a form cannot send null
        language.update(type="string", enum=languages)
    # the voices every served speech model takes (each takes OpenAI's names), so any listed voice works
    speakers = [
        m.active.pipe for m in runtime.models.values() if m.task in tasks_for_route("speech") and m.active
    ]
    voice = components.get("SpeechRequest", {}).get("properties", {}).get("voice")
    if voice is not None and speakers:
        shared = set.intersection(*(set(accepted_voices(pipe)) for pipe in speakers))
        voice["enum"] = [name for name in accepted_voices(speakers[0]) if name in shared]
    # a completion may ask for at most the context of the smallest served model, less one prompt token
    writers = [
        m.active.pipe for m in runtime.models.values() if m.task in tasks_for_route("chat") and m.active
    ]
    contexts = [int(getattr(pipe, "context_limit", 0)) for pipe in writers]
    if contexts and all(contexts):
        for body, field in (
            ("ChatCompletionRequest", "max_tokens"),
            ("ChatCompletionRequest", "max_completion_tokens"),
            ("CompletionRequest", "max_tokens"),
        ):
            for branch in components.get(body, {}).get("properties", {}).get(field, {}).get("anyOf", []):
                if branch.get("type") == "integer":
                    branch["maximum"] = min(branch.get("maximum", min(contexts) - 1), min(contexts) - 1)
    # tools only where a served chat model can call them (tasks/llm.py's tools_limitation() is None)
    chat = components.get("ChatCompletionRequest", {}).get("properties", {})
    if writers and "tools" in chat and not any(_calls_tools(pipe) for pipe in writers):
        chat["tools"] = {
            "anyOf": [{"type": "array", "maxItems": 0}, {"type": "null"}],
            "description": "no served model calls tools",
        }
        chat["tool_choice"] = {"anyOf": [{"enum": ["none", "auto"]}, {"type": "null"}]}
    # JSON-constrained output only where a served chat model can constrain its sampling (GGUF)
    if (
        writers
        and "response_format" in chat
        and not any(getattr(p, "constrains_json", False) for p in writers)
    ):
        chat["response_format"] = {
            "anyOf": [{"$ref": "#/components/schemas/TextFormat"}, {"type": "null"}],
            "description": "text only: no served model constrains its output to JSON",
        }
    # a request may hold at most what the smallest queue of the models it can name admits
    smallest_queue = min(m.settings.max_queue for m in runtime.models.values())
    embedding_input = components.get("EmbeddingRequest", {}).get("properties", {}).get("input", {})
    predict_body = (
        schema.get("paths", {}).get("/v1/models/{name}/predict", {}).get("post", {}).get("requestBody", {})
    )
    predict_json = predict_body.get("content", {}).get("application/json", {}).get("schema", {})
    for field in (embedding_input, predict_json.get("properties", {}).get("inputs", {})):
        for branch in field.get("anyOf", []):
            if branch.get("type") == "array":
                branch["maxItems"] = min(branch.get("maxItems", smallest_queue), smallest_queue)


def _calls_tools(pipe: Any) -> bool:
    limitation = getattr(pipe, "tools_limitation", None)
    return limitation is not None and limitation() is None
