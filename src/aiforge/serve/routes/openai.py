"""OpenAI-compatible endpoints, so existing clients work unchanged::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY")
    client.embeddings.create(model="e5", input=["안녕하세요"])
    client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True)
    client.audio.transcriptions.create(model="whisper", file=open("a.wav", "rb"), response_format="srt")

``model`` is the served name (GET /v1/models). Embeddings and non-streamed chat go through the
model's dynamic batcher; streamed chat runs its own generation thread and holds one queue slot.
"""

from __future__ import annotations

import asyncio
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from aiforge.errors import AiforgeError
from aiforge.serve.deps import RuntimeDep, disconnected, mark_model
from aiforge.serve.jsonbody import StrictJsonRoute
from aiforge.serve.openai_spec import (
    TRANSCRIPT_MEDIA_TYPES,
    ChatCompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    chat_chunk,
    chat_completion,
    completion_id,
    encode_embedding,
)
from aiforge.serve.runtime import Deployment, ServedModel
from aiforge.serve.streaming import TokenStream
from aiforge.tasks.audio.transcripts import TranscriptFormat, format_transcript
from aiforge.tasks.base import Pipeline
from aiforge.tasks.generation import ChatUsage, StopScanner, cut_at_stop

router = APIRouter(prefix="/v1", tags=["openai"], route_class=StrictJsonRoute)


# ---- models ---------------------------------------------------------------------------------------
def model_card(model: ServedModel) -> dict[str, Any]:
    info = model.describe()
    created = info["loaded_at"] or int(time.time())
    return {"id": model.name, "object": "model", "created": created, "owned_by": "aiforge", **info}


@router.get("/models", summary="List the served models (OpenAI format, plus task, version and state)")
async def list_models(runtime: RuntimeDep) -> dict[str, Any]:
    return {"object": "list", "data": [model_card(m) for m in runtime.models.values()]}


@router.get("/models/{name}", summary="One served model")
async def get_model(name: str, runtime: RuntimeDep) -> dict[str, Any]:
    return model_card(runtime.get(name))


# ---- embeddings -------------------------------------------------------------------------------------
@router.post(
    "/embeddings", response_model=EmbeddingResponse, summary="Embed texts (sentence-embeddings models)"
)
async def embeddings(body: EmbeddingRequest, request: Request, runtime: RuntimeDep) -> JSONResponse:
    model = runtime.for_route(body.model, "embeddings", "/v1/embeddings")
    mark_model(request.scope, model)
    dim = getattr(model.require_ready().pipe, "dim", None)
    if body.dimensions is not None and body.dimensions != dim:
        raise AiforgeError(
            "AF-SERVE-002",
            f"model '{model.name}' returns {dim}-dimensional vectors; "
            f"dimensions={body.dimensions} cannot be served",
            "omit 'dimensions'",
            status=422,
        )
    texts = body.texts()
    params = {"kind": body.input_type} if body.input_type else None
    outputs, deployment = await model.predict(texts, params, lambda: disconnected(request.receive))
    mark_model(request.scope, model, deployment)
    tokens = count_tokens(deployment.pipe, texts)
    return JSONResponse(
        {
            "object": "list",
            "data": [
                {
                    "object": "embedding",
                    "index": i,
                    "embedding": encode_embedding(o["embedding"], body.encoding_format),
                }
                for i, o in enumerate(outputs)
            ],
            "model": model.name,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        }
    )


def count_tokens(pipe: Pipeline, texts: list[str]) -> int:
    """Tokens by the model's tokenizer; characters where the runtime exposes none (the packaged e5)."""
    tokenizer = getattr(pipe, "tokenizer", None) or getattr(getattr(pipe, "st", None), "tokenizer", None)
    if tokenizer is None:
        return sum(len(t) for t in texts)
    return sum(len(ids) for ids in tokenizer(texts, add_special_tokens=True)["input_ids"])


# ---- chat completions ---------------------------------------------------------------------------------
@router.post("/chat/completions", summary="Chat with a text-generation model (SSE when stream=true)")
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep) -> Response:
    model = runtime.for_route(body.model, "chat", "/v1/chat/completions")
    mark_model(request.scope, model)
    deployment = model.require_ready()
    params = body.generation_params()
    # Either runtime (transformers: tasks/generation.py, llama.cpp: tasks/llm.py) has the chat methods.
    runner: Any = model.variant(deployment, params)
    messages = body.messages_as_dicts()
    if body.stream:
        return stream_chat(model, deployment, runner, messages, body)
    record = runner.chat_record(messages)
    outputs, deployment = await model.predict([record], params, lambda: disconnected(request.receive))
    mark_model(request.scope, model, deployment)
    out = outputs[0]
    text, stopped = cut_at_stop(out["generated_text"], body.stop_sequences())
    return JSONResponse(
        chat_completion(
            completion_id(),
            model.name,
            deployment.version,
            text,
            "stop" if stopped else out["finish_reason"],
            out["prompt_tokens"],
            out["completion_tokens"],
        )
    )


def stream_chat(
    model: ServedModel,
    deployment: Deployment,
    runner: Any,
    messages: list[dict[str, str]],
    body: ChatCompletionRequest,
) -> StreamingResponse:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    Capacity is reserved before the response starts, so a full queue is still a plain 429, and so is a
    prompt that cannot fit a 400, where the runtime can tell before it runs (transformers).
    """
    runner.chat_prompt_tokens(messages)
    deployment.batcher.reserve_stream()
    release = Once(deployment.batcher.release_stream)
    events = _chat_events(model, deployment, runner, messages, body, release)
    weakref.finalize(events, release)  # a stream never started (client gone at once) still frees its slot
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


class Once:
    """Calls ``fn`` the first time it is called, never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


async def _chat_events(
    model: ServedModel,
    deployment: Deployment,
    runner: Any,
    messages: list[dict[str, str]],
    body: ChatCompletionRequest,
    release: Once,
) -> AsyncIterator[str]:
    chunk_id, name, version = completion_id(), model.name, deployment.version
    scanner = StopScanner(body.stop_sequences())
    usage = ChatUsage()  # the runtime keeps it up to date while it streams
    stream = TokenStream(lambda: runner.stream_chat(messages, usage=usage))
    deadline = asyncio.get_running_loop().time() + model.settings.timeout_s
    try:
        yield sse(chat_chunk(chunk_id, name, version, {"role": "assistant", "content": ""}))
        while not scanner.stopped:
            try:
                kind, value = await stream.next(deadline - asyncio.get_running_loop().time())
            except asyncio.TimeoutError:
                yield sse(
                    error_event(
                        AiforgeError(
                            "AF-SERVE-004",
                            f"generation exceeded {model.settings.timeout_s:g}s",
                            "ask for fewer tokens (max_tokens)",
                            status=504,
                        )
                    )
                )
                return
            if kind == "end":
                break
            if kind == "error":
                yield sse(error_event(value))
                return
            text = scanner.feed(value)
            if text:
                yield sse(chat_chunk(chunk_id, name, version, {"content": text}))
        tail = scanner.flush() if not scanner.stopped else ""
        if tail:
            yield sse(chat_chunk(chunk_id, name, version, {"content": tail}))
        if scanner.stopped:  # the generation stops at its next piece: count what it has made
            stream.close()
            await stream.finished()
        finish = "stop" if scanner.stopped else usage.finish_reason
        yield sse(chat_chunk(chunk_id, name, version, {}, finish))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield sse(
                chat_chunk(
                    chunk_id,
                    name,
                    version,
                    {},
                    usage={
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                    },
                )
            )
        yield "data: [DONE]\n\n"
    finally:
        stream.close()
        release()


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def error_event(exc: BaseException) -> dict[str, Any]:
    if isinstance(exc, AiforgeError):
        return {
            "error": {
                "message": exc.message,
                "type": "server_error" if exc.status >= 500 else "invalid_request_error",
                "param": None,
                "code": exc.code,
                "fix": exc.fix,
            }
        }
    return {
        "error": {
            "message": f"generation failed: {type(exc).__name__}: {exc}",
            "type": "server_error",
            "param": None,
            "code": "AF-SERVE-009",
            "fix": "the server log has details",
        }
    }


# ---- audio transcriptions -------------------------------------------------------------------------------
@router.post("/audio/transcriptions", summary="Transcribe an uploaded audio file (speech-recognition models)")
async def transcriptions(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="audio file: wav, flac, mp3, ogg, m4a, webm...")],
    model: Annotated[str, Form()],
    language: Annotated[str | None, Form(description="ISO code, e.g. 'ko'; default: detect")] = None,
    prompt: Annotated[str | None, Form()] = None,
    response_format: Annotated[TranscriptFormat, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    timestamp_granularities: Annotated[
        list[Literal["segment", "word"]] | None, Form(alias="timestamp_granularities[]")
    ] = None,
) -> Response:
    served = runtime.for_route(model, "transcriptions", "/v1/audio/transcriptions")
    mark_model(request.scope, served)
    if prompt:
        raise AiforgeError(
            "AF-SERVE-002", "'prompt' is not supported by aiforge transcription", "omit 'prompt'", status=422
        )
    if temperature:
        raise AiforgeError(
            "AF-SERVE-002",
            "only temperature=0 is supported (deterministic decoding)",
            "omit 'temperature'",
            status=422,
        )
    record: dict[str, Any] = {"audio": await file.read()}
    if language:
        record["language"] = language
    params = (
        {"word_timestamps": True} if timestamp_granularities and "word" in timestamp_granularities else None
    )
    outputs, deployment = await served.predict([record], params, lambda: disconnected(request.receive))
    mark_model(request.scope, served, deployment)
    rendered = format_transcript(outputs[0], response_format)
    if isinstance(rendered, str):
        return PlainTextResponse(
            rendered, media_type=TRANSCRIPT_MEDIA_TYPES.get(response_format, "text/plain")
        )
    return JSONResponse(rendered)
