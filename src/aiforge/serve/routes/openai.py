"""OpenAI-compatible endpoints, so existing clients work unchanged::

    from openai import OpenAI
    client = OpenAI(base_url="http://127.0.0.1:8000/v1", api_key="KEY")
    client.embeddings.create(model="e5", input=["안녕하세요"])
    client.chat.completions.create(model="gpt", messages=[{"role": "user", "content": "Hi"}], stream=True)
    client.completions.create(model="gpt", prompt="Once upon a time", max_tokens=16)
    client.audio.transcriptions.create(model="whisper", file=open("a.wav", "rb"), response_format="srt")
    client.audio.speech.create(model="tts", voice="alloy", input="안녕하세요", response_format="wav")

``model`` is the served name (GET /v1/models). Embeddings and non-streamed chat go through the
model's dynamic batcher; streamed chat runs its own generation thread and holds one queue slot.
``response_format`` (json_object / json_schema) constrains sampling by grammar on GGUF models; the
transformers runtime answers it with a 400, as it does ``tools``; GGUF models call tools where their chat
template has them (tasks/llm.py).
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
import weakref
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, UploadFile
from fastapi.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from aiforge.errors import AiforgeError
from aiforge.serve.deps import RuntimeDep, disconnected, mark_model
from aiforge.serve.jsonbody import StrictJsonRoute
from aiforge.serve.logs import REQUEST_ID
from aiforge.serve.openai_spec import (
    SPEECH_MEDIA_TYPES,
    TRANSCRIPT_MEDIA_TYPES,
    ChatCompletionRequest,
    CompletionRequest,
    EmbeddingRequest,
    EmbeddingResponse,
    GenerationRequest,
    SpeechRequest,
    chat_chunk,
    chat_completion,
    completion_id,
    encode_embedding,
    text_completion,
    text_completion_chunk,
)
from aiforge.serve.responses import error_body
from aiforge.serve.runtime import Deployment, ServedModel
from aiforge.serve.streaming import TokenStream
from aiforge.tasks.audio.synthesis import accepted_voices
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


# stream=true answers server-sent events; otherwise one JSON object
STREAMED_OR_JSON: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "the completion (JSON), or its chunks as server-sent events when stream=true",
        "content": {"application/json": {}, "text/event-stream": {}},
    }
}


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


# ---- chat completions and completions -------------------------------------------------------------------
# Either runtime (transformers: tasks/generation.py, llama.cpp: tasks/llm.py) has the methods used here:
# chat_record / completion_record (non-streamed, through the batcher), stream_chat / stream_completion.
@router.post(
    "/chat/completions",
    summary="Chat with a text-generation model (SSE when stream=true)",
    responses=STREAMED_OR_JSON,
)
async def chat_completions(body: ChatCompletionRequest, request: Request, runtime: RuntimeDep) -> Response:
    model = runtime.for_route(body.model, "chat", "/v1/chat/completions")
    mark_model(request.scope, model)
    deployment = model.require_ready()
    params = body.generation_params()
    runner: Any = model.variant(deployment, params)
    refuse_unsupported(body, model, runner)
    schema = body.constraint()
    constrained = check_constraint(runner, model, schema) | body.tool_request()
    messages = body.messages_as_dicts()
    if body.stream:
        return await stream_chat(model, deployment, runner, messages, body, constrained)
    record = runner.chat_record(messages, **constrained)
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
            out.get("tool_calls"),
        )
    )


@router.post(
    "/completions",
    summary="Continue a prompt as written (OpenAI's legacy completions; SSE when stream=true)",
    responses=STREAMED_OR_JSON,
)
async def completions(body: CompletionRequest, request: Request, runtime: RuntimeDep) -> Response:
    model = runtime.for_route(body.model, "completions", "/v1/completions")
    mark_model(request.scope, model)
    deployment = model.require_ready()
    params = body.generation_params()
    runner: Any = model.variant(deployment, params)
    refuse_unsupported(body, model, runner)
    prompts = body.prompts()
    request_id = completion_id("cmpl")
    if body.stream:
        prompt = prompts[0]
        return await stream_generation(
            model,
            deployment,
            lambda usage: runner.stream_completion(prompt, usage=usage),
            body,
            CompletionChunks(request_id, model.name, deployment.version, prompt if body.echo else ""),
        )
    records = [runner.completion_record(p) for p in prompts]
    outputs, deployment = await model.predict(records, params, lambda: disconnected(request.receive))
    mark_model(request.scope, model, deployment)
    choices = []
    for prompt, out in zip(prompts, outputs, strict=True):
        text, stopped = cut_at_stop(out["generated_text"], body.stop_sequences())
        choices.append(((prompt if body.echo else "") + text, "stop" if stopped else out["finish_reason"]))
    return JSONResponse(
        text_completion(
            request_id,
            model.name,
            deployment.version,
            choices,
            sum(o["prompt_tokens"] for o in outputs),
            sum(o["completion_tokens"] for o in outputs),
        )
    )


def refuse_unsupported(body: GenerationRequest, model: ServedModel, runner: Any) -> None:
    """A 400 naming what this request asks for that aiforge cannot do, rather than ignoring it."""
    reason = body.unsupported()
    chat_limitation = getattr(runner, "chat_limitation", lambda: None)
    if reason is None and isinstance(body, ChatCompletionRequest) and (why_not := chat_limitation()):
        reason = f"model '{model.name}' cannot chat: {why_not}; send the text to /v1/completions"
    if reason is None and isinstance(body, ChatCompletionRequest) and body.wants_tools():
        limitation = getattr(
            runner, "tools_limitation", lambda: "aiforge serves text answers only on this runtime"
        )
        if why := limitation():
            reason = f"model '{model.name}' cannot call tools: {why}"
    context = getattr(runner, "context_limit", None)
    for field in ("max_tokens", "max_completion_tokens"):  # both, as the schema caps both
        asked = getattr(body, field, None)
        if reason is None and context and asked is not None and asked >= context:
            reason = (
                f"{field}={asked} leaves no room for a prompt: model '{model.name}' reads {context} tokens"
            )
    if reason is not None:
        raise AiforgeError("AF-SERVE-002", reason, "change the request as the message says", status=400)


def check_constraint(runner: Any, model: ServedModel, schema: dict[str, Any] | None) -> dict[str, Any]:
    """The keyword arguments that constrain the output to JSON (empty when unconstrained); a 400 where
    the runtime cannot constrain its sampling (transformers)."""
    if schema is None:
        return {}
    if not getattr(runner, "constrains_json", False):
        raise AiforgeError(
            "AF-SERVE-002",
            f"model '{model.name}' runs on {getattr(runner, 'backend', 'transformers')}, which cannot "
            "constrain its output to JSON: response_format json_object / json_schema needs a GGUF model "
            "(llama.cpp grammars)",
            "serve a GGUF model (e.g. packaged:smollm2-135m-instruct), or omit response_format",
            status=400,
        )
    return {"json_schema": schema}


class ChatChunks:
    """chat.completion.chunk events: a role chunk first, then content deltas."""

    def __init__(self, request_id: str, model: str, version: str) -> None:
        self.ids = (request_id, model, version)

    def opening(self) -> dict[str, Any] | None:
        return chat_chunk(*self.ids, {"role": "assistant", "content": ""})

    def piece(self, text: str) -> dict[str, Any]:
        return chat_chunk(*self.ids, {"content": text})

    def finish(self, reason: str) -> dict[str, Any]:
        return chat_chunk(*self.ids, {}, reason)

    def tool_calls(self, calls: list[dict[str, Any]]) -> dict[str, Any]:
        """Every call whole in one delta (OpenAI streams them in pieces; clients join either)."""
        return chat_chunk(*self.ids, {"tool_calls": [{"index": i, **c} for i, c in enumerate(calls)]})

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return chat_chunk(*self.ids, {}, usage=usage)


class CompletionChunks(ChatChunks):
    """text_completion events: text pieces (the prompt first with echo=true)."""

    def __init__(self, request_id: str, model: str, version: str, echo: str) -> None:
        super().__init__(request_id, model, version)
        self.echo = echo

    def opening(self) -> dict[str, Any] | None:
        return self.piece(self.echo) if self.echo else None

    def piece(self, text: str) -> dict[str, Any]:
        return text_completion_chunk(*self.ids, text)

    def finish(self, reason: str) -> dict[str, Any]:
        return text_completion_chunk(*self.ids, "", reason)

    def usage(self, usage: dict[str, int]) -> dict[str, Any]:
        return text_completion_chunk(*self.ids, "", usage=usage)


async def stream_chat(
    model: ServedModel,
    deployment: Deployment,
    runner: Any,
    messages: list[dict[str, Any]],
    body: GenerationRequest,
    constrained: dict[str, Any] | None = None,
) -> Response:
    """A streamed chat answer as server-sent events: the route's and the demo's Chat tab's one way."""
    runner.chat_prompt_tokens(messages)  # transformers: a prompt that cannot fit is a 400 now
    return await stream_generation(
        model,
        deployment,
        lambda usage: runner.stream_chat(messages, usage=usage, **(constrained or {})),
        body,
        ChatChunks(completion_id(), model.name, deployment.version),
    )


async def stream_generation(
    model: ServedModel,
    deployment: Deployment,
    generate: Callable[[ChatUsage], Iterator[str]],
    body: GenerationRequest,
    chunks: ChatChunks,
) -> Response:
    """Server-sent events in OpenAI's chunk format, ending with ``data: [DONE]``.

    Capacity is reserved before the response starts, so a full queue is still a plain 429. The first
    piece is awaited before the response starts too, so a request the runtime refuses (a prompt longer
    than the context: llama.cpp counts its tokens before it runs it) is a plain 400, not an error event
    in a 200 stream.
    """
    deployment.batcher.reserve_stream()
    release = Once(deployment.batcher.release_stream)
    usage = ChatUsage()  # the runtime keeps it up to date while it streams
    stream = TokenStream(lambda: generate(usage))
    deadline = asyncio.get_running_loop().time() + model.settings.timeout_s
    try:
        first = await stream.next(deadline - asyncio.get_running_loop().time())
    except BaseException as exc:
        stream.close()
        release()
        if isinstance(exc, asyncio.TimeoutError):
            raise generation_timeout(model) from None
        raise
    if first[0] == "error" and isinstance(first[1], AiforgeError) and first[1].status < 500:
        stream.close()
        release()
        raise first[1]
    events = _generation_events(
        model, stream, first, deadline, usage, body, chunks, release, REQUEST_ID.get()
    )
    weakref.finalize(events, release)  # a stream never started (client gone at once) still frees its slot
    return StreamingResponse(
        events,
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def generation_timeout(model: ServedModel) -> AiforgeError:
    return AiforgeError(
        "AF-SERVE-004",
        f"generation exceeded {model.settings.timeout_s:g}s",
        "ask for fewer tokens (max_tokens)",
        status=504,
    )


class Once:
    """Calls ``fn`` the first time it is called, never again."""

    def __init__(self, fn: Callable[[], None]) -> None:
        self._fn: Callable[[], None] | None = fn

    def __call__(self) -> None:
        fn, self._fn = self._fn, None
        if fn is not None:
            fn()


async def _generation_events(
    model: ServedModel,
    stream: TokenStream,
    first: tuple[str, Any],
    deadline: float,
    usage: ChatUsage,
    body: GenerationRequest,
    chunks: ChatChunks,
    release: Once,
    request_id: str | None,
) -> AsyncIterator[str]:
    scanner = StopScanner(body.stop_sequences())
    pending: tuple[str, Any] | None = first
    try:
        opening = chunks.opening()
        if opening is not None:
            yield sse(opening)
        while not scanner.stopped:
            if pending is not None:
                (kind, value), pending = pending, None
            else:
                try:
                    kind, value = await stream.next(deadline - asyncio.get_running_loop().time())
                except asyncio.TimeoutError:
                    yield sse(error_event(generation_timeout(model), request_id))
                    return
            if kind == "end":
                break
            if kind == "error":
                yield sse(error_event(value, request_id))
                return
            text = scanner.feed(value)
            if text:
                yield sse(chunks.piece(text))
        tail = scanner.flush() if not scanner.stopped else ""
        if tail:
            yield sse(chunks.piece(tail))
        if scanner.stopped:  # the generation stops at its next piece: count what it has made
            stream.close()
            await stream.finished()
        if usage.tool_calls:
            yield sse(chunks.tool_calls(usage.tool_calls))
        yield sse(chunks.finish("stop" if scanner.stopped else usage.finish_reason))
        if body.stream_options is not None and body.stream_options.include_usage:
            yield sse(
                chunks.usage(
                    {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                    }
                )
            )
        yield "data: [DONE]\n\n"
    finally:
        stream.close()
        release()


def sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def error_event(exc: BaseException, request_id: str | None) -> dict[str, Any]:
    """An error that comes after the stream's 200 status line: the last event before the stream
    ends, in the same shape as an error answer (``request_id`` included: it finds the log lines)."""
    if isinstance(exc, AiforgeError):
        return error_body(exc.status, exc.code, exc.message, exc.fix, request_id=request_id)
    return error_body(
        500,
        "AF-SERVE-009",
        f"generation failed: {type(exc).__name__}: {exc}",
        "the server log has details",
        request_id=request_id,
    )


# ---- audio transcriptions -------------------------------------------------------------------------------
@router.post("/audio/transcriptions", summary="Transcribe an uploaded audio file (speech-recognition models)")
async def transcriptions(
    request: Request,
    runtime: RuntimeDep,
    file: Annotated[UploadFile, File(description="audio file: wav, flac, mp3, ogg, m4a, webm...")],
    model: Annotated[str, Form(min_length=1)],
    language: Annotated[str | None, Form(description="ISO code, e.g. 'ko'; default: detect")] = None,
    prompt: Annotated[str, Form(max_length=0, description="not supported: omit it")] = "",
    response_format: Annotated[TranscriptFormat, Form()] = "json",
    temperature: Annotated[
        float, Form(ge=0, le=0, description="only 0 (deterministic decoding) is supported")
    ] = 0.0,
    timestamp_granularities: Annotated[
        list[Literal["segment", "word"]], Form(alias="timestamp_granularities[]")
    ] = [],  # noqa: B006 - FastAPI copies parameter defaults per request
) -> Response:
    served = runtime.for_route(model, "transcriptions", "/v1/audio/transcriptions")
    mark_model(request.scope, served)
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


# ---- speech ---------------------------------------------------------------------------------------------
@router.post(
    "/audio/speech",
    summary="Speak a text (text-to-audio models): the audio file",
    response_class=Response,
    responses={
        200: {
            "description": "the audio (sampling rate in the x-sampling-rate header)",
            "content": {media: {} for media in SPEECH_MEDIA_TYPES.values()},
        }
    },
)
async def speech(body: SpeechRequest, request: Request, runtime: RuntimeDep) -> Response:
    served = runtime.for_route(body.model, "speech", "/v1/audio/speech")
    mark_model(request.scope, served)
    voices = accepted_voices(served.require_ready().pipe)
    if body.voice not in voices:
        raise AiforgeError(
            "AF-SERVE-002",
            f"model '{served.name}' has no voice '{body.voice}'",
            f"voices: {', '.join(voices)}",
            status=400,
        )
    params: dict[str, Any] = {"voice": body.voice}
    if body.speed != 1.0:
        params["speaking_rate"] = body.speed
    outputs, deployment = await served.predict(
        [{"text": body.input}], params, lambda: disconnected(request.receive)
    )
    mark_model(request.scope, served, deployment)
    wav = base64.b64decode(outputs[0]["audio_base64"])
    rate = str(outputs[0]["sampling_rate"])
    return Response(
        encode_speech(wav, body.response_format),
        media_type=SPEECH_MEDIA_TYPES[body.response_format],
        headers={"x-sampling-rate": rate},
    )


def encode_speech(wav: bytes, response_format: str) -> bytes:
    """The pipeline's 16-bit WAV as the format asked for."""
    if response_format == "wav":
        return wav
    import soundfile

    samples, rate = soundfile.read(io.BytesIO(wav), dtype="int16")
    if response_format == "pcm":
        return samples.astype("<i2").tobytes()
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, subtype="PCM_16", format="FLAC")
    return buffer.getvalue()
