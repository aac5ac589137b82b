"""The OpenAI wire format: flat request/response models and the mapping to the Pipeline contract.

Only this module knows OpenAI's field names; routes/openai.py only wires endpoints to it. Fields a
client may send but aiforge cannot honour (``n > 1``, logprobs, penalties) are refused with a 400
that says so (``unsupported()``), rather than silently ignored; unknown fields are refused too.
"""

from __future__ import annotations

import base64
import time
import uuid
from typing import Annotated, Any, Literal

import numpy as np
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

GREEDY_BELOW = 1e-2  # temperatures under this decode greedily
MAX_NEW_TOKENS = 8192  # the text-generation task's max_new_tokens limit

# The schema states what the validators enforce, so a client generated from /openapi.json (or a
# fuzzer) never builds a request the server then rejects.
NonEmptyText = Annotated[str, Field(min_length=1)]
# Integers as JSON Schema defines them: 1.0 is one, false and "1" are not (pydantic's strict mode
# alone refuses 1.0, its lax mode takes false and "1").
INTEGRAL = BeforeValidator(lambda v: int(v) if isinstance(v, float) and v.is_integer() else v)
# (constraints go inside the Annotated, before the validator, or the schema shows no minimum/maximum)
PositiveInt = Annotated[int, Field(ge=1), INTEGRAL]
TokenCount = Annotated[int, Field(ge=1, le=MAX_NEW_TOKENS), INTEGRAL]
JsonInt = Annotated[int, INTEGRAL]


def only(value: Any, why: str) -> Any:
    """A field whose other values aiforge cannot honour: the schema documents the one it can, and
    the value is not validated, so the handler's unsupported() answers the clear 400 OpenAI gives."""
    if isinstance(value, bool) or value in (0, 1):
        bound: dict[str, Any] = (
            {"enum": [value, None]} if isinstance(value, bool) else {"minimum": value, "maximum": value}
        )
    else:
        bound = {"maxLength": 0} if value == "" else {"maxProperties": 0}
    return Field(None if value in ("", {}) else value, description=why, json_schema_extra=bound)


Seed = Annotated[int, Field(ge=0, le=2**53), INTEGRAL]  # exact in a JSON double; torch.manual_seed takes it


class _Strict(BaseModel):
    # strict: no silent coercion (false is not 0, "1" is not 1), as the JSON schema says
    model_config = ConfigDict(extra="forbid", strict=True)


# ---- embeddings ---------------------------------------------------------------------------------------
class EmbeddingRequest(_Strict):
    model: str
    input: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1, max_length=2048)] = Field(
        description="one text or a list of 1 to 2048 texts, none empty (token-id arrays are not accepted)"
    )
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: PositiveInt | None = None
    user: str | None = None
    input_type: Literal["query", "passage"] | None = Field(
        None, description="aiforge extension: e5-style models embed queries and passages differently"
    )

    @field_validator("input")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        texts = [value] if isinstance(value, str) else value
        if not texts or len(texts) > 2048:
            raise ValueError("input must hold 1 to 2048 texts")
        if any(not t for t in texts):
            raise ValueError("input texts must not be empty")
        return value

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class Usage(BaseModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int | None = None


class EmbeddingResponse(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: Usage


def encode_embedding(vector: list[float], encoding_format: str) -> list[float] | str:
    """float: the list; base64: little-endian float32 bytes, what the openai client decodes."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, dtype="<f4").tobytes()).decode("ascii")
    return vector


# ---- chat completions --------------------------------------------------------------------------------
class TextPart(_Strict):
    type: Literal["text"]
    text: str


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")  # clients echo assistant fields (refusal, annotations)

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[dict[str, Any]] | None = None  # an assistant turn that called tools
    tool_call_id: str | None = None  # a tool turn: the call whose result it is

    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(part.text for part in self.content)
        return self.content or ""


class StreamOptions(_Strict):
    include_usage: bool = False


class JsonSchemaFormat(_Strict):
    name: str = "response"
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None


class TextFormat(_Strict):
    type: Literal["text"]

    def constraint(self) -> dict[str, Any] | None:
        return None  # free text


class JsonObjectFormat(_Strict):
    type: Literal["json_object"]

    def constraint(self) -> dict[str, Any] | None:
        return {}  # any JSON object


class JsonSchemaResponseFormat(_Strict):
    type: Literal["json_schema"]
    json_schema: JsonSchemaFormat

    def constraint(self) -> dict[str, Any] | None:
        return self.json_schema.schema_  # the JSON schema the output must validate against


# A union told apart by ``type`` (not one model with an optional json_schema): the schema then says
# that json_schema comes with, and only with, type "json_schema".
ResponseFormat = Annotated[
    TextFormat | JsonObjectFormat | JsonSchemaResponseFormat, Field(discriminator="type")
]


class GenerationRequest(_Strict):
    """The fields /v1/chat/completions and /v1/completions share.

    Fields that cannot change the result at the values clients send by default (LangChain's ChatOpenAI
    sends ``n``, ``stream_options``, sometimes ``store``, ``metadata``, ``parallel_tool_calls``...) are
    accepted; values that would change it and are not implemented are refused with a 400
    (``unsupported()``), never silently ignored.
    """

    model: str
    max_tokens: TokenCount | None = None
    temperature: float | None = Field(None, ge=0, le=2, description="0 or unset: greedy decoding")
    top_p: float | None = Field(None, gt=0, le=1)
    seed: Seed | None = None
    stop: str | Annotated[list[str], Field(max_length=4)] | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    # Values aiforge cannot honour are outside the schema (and answered 400 by unsupported()).
    n: JsonInt | None = only(1, "only 1: send n requests for n completions")
    user: str | None = None
    presence_penalty: float | None = only(0, "only 0 (not supported)")
    frequency_penalty: float | None = only(0, "only 0 (not supported)")
    logit_bias: dict[str, float] | None = only({}, "only {} (not supported)")
    metadata: dict[str, str] | None = None
    store: bool | None = None
    service_tier: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: str | list[str] | None) -> str | list[str] | None:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("stop holds at most 4 sequences")
        return value

    def unsupported(self) -> str | None:
        """Why this request cannot be served as asked (a 400), or None."""
        if self.n not in (None, 1):
            return "n must be 1: aiforge returns one completion per request (send n requests instead)"
        if self.presence_penalty or self.frequency_penalty:
            return "presence_penalty and frequency_penalty are not supported (omit them or send 0)"
        if self.logit_bias:
            return "logit_bias is not supported (omit it or send {})"
        return None

    def stop_sequences(self) -> list[str]:
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        return [s for s in stops if s]

    def token_limit(self) -> int | None:
        return self.max_tokens

    def generation_params(self) -> dict[str, Any]:
        """OpenAI sampling fields -> the text-generation task's parameters."""
        params: dict[str, Any] = {}
        limit = self.token_limit()
        if limit is not None:
            params["max_new_tokens"] = limit
        # Below GREEDY_BELOW, sampling is greedy decoding in the limit, and dividing logits by a
        # temperature like 1e-300 overflows to inf (the fuzzer's 500): decode greedily instead.
        greedy = self.temperature is not None and self.temperature < GREEDY_BELOW
        sample = (bool(self.temperature) and not greedy) or (
            self.top_p is not None and self.top_p < 1 and self.temperature is None
        )
        if sample:
            params["do_sample"] = True
            if self.temperature:
                params["temperature"] = self.temperature
            if self.top_p is not None:
                params["top_p"] = self.top_p
        if self.seed is not None:
            params["seed"] = self.seed
        return params


class ChatCompletionRequest(GenerationRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: TokenCount | None = None
    response_format: ResponseFormat | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = only(False, "only false (not supported)")
    top_logprobs: JsonInt | None = only(0, "only 0 (not supported)")
    modalities: list[Literal["text"]] | None = None

    def unsupported(self) -> str | None:
        if self.logprobs or self.top_logprobs:
            return "logprobs are not supported (omit logprobs or send false)"
        if isinstance(self.tool_choice, dict):
            named = (self.tool_choice.get("function") or {}).get("name")
            offered = [(t.get("function") or {}).get("name") for t in self.tools or ()]
            if named not in offered:
                return f"tool_choice names '{named}', which is not among the tools offered ({offered})"
        return super().unsupported()

    def wants_tools(self) -> bool:
        """Tools offered, or a tool call forced: the model would have to answer with tool calls."""
        forced = self.tool_choice not in (None, "none", "auto")
        return (bool(self.tools) and self.tool_choice != "none") or forced

    def token_limit(self) -> int | None:
        return self.max_completion_tokens or self.max_tokens

    def messages_as_dicts(self) -> list[dict[str, Any]]:
        """The messages as the runtimes read them; tool calls and results only where there are some."""
        return [
            {"role": m.role, "content": m.text()}
            | ({"tool_calls": m.tool_calls} if m.tool_calls else {})
            | ({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})
            for m in self.messages
        ]

    def tool_request(self) -> dict[str, Any]:
        """The runtime's tool arguments: empty unless the model has to consider calling tools."""
        return {"tools": self.tools, "tool_choice": self.tool_choice} if self.wants_tools() else {}

    def constraint(self) -> dict[str, Any] | None:
        return self.response_format.constraint() if self.response_format else None


class CompletionRequest(GenerationRequest):
    """/v1/completions (OpenAI's legacy text completions): the prompt is continued as written."""

    model_config = ConfigDict(  # the schema states unsupported()'s rule for streams
        json_schema_extra={
            "if": {"properties": {"stream": {"const": True}}, "required": ["stream"]},
            "then": {"properties": {"prompt": {"anyOf": [{"type": "string"}, {"maxItems": 1}]}}},
        }
    )

    prompt: NonEmptyText | Annotated[list[NonEmptyText], Field(min_length=1)] = Field(
        description="one prompt or a list, none empty (token-id arrays are not accepted)"
    )
    max_tokens: TokenCount | None = 16  # OpenAI's default for this endpoint
    echo: bool = False
    suffix: str | None = only("", "not supported: omit it")
    logprobs: JsonInt | None = only(0, "not supported: omit it")
    best_of: JsonInt | None = only(1, "only 1")

    @field_validator("prompt")
    @classmethod
    def _non_empty(cls, value: str | list[str]) -> str | list[str]:
        prompts = [value] if isinstance(value, str) else value
        if not prompts or any(not p for p in prompts):
            raise ValueError("prompt must be a non-empty string or a list of non-empty strings")
        return value

    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    def unsupported(self) -> str | None:
        if self.logprobs:
            return "logprobs are not supported (omit them)"
        if self.suffix:
            return "suffix (insertion) is not supported (omit it)"
        if self.best_of not in (None, 1):
            return "best_of must be 1"
        if self.stream and len(self.prompts()) > 1:
            return "a streamed completion takes one prompt (send one request per prompt)"
        return super().unsupported()


def completion_id(prefix: str = "chatcmpl") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def chat_completion(
    request_id: str,
    model: str,
    version: str,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_calls: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text}
    if tool_calls:
        message = {"role": "assistant", "content": text or None, "tool_calls": tool_calls}
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": version,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def chat_chunk(
    request_id: str,
    model: str,
    version: str,
    delta: dict[str, Any],
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": request_id,
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": version,
        "choices": []
        if usage is not None
        else [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}],
    }
    if usage is not None:
        chunk["usage"] = usage
    return chunk


def text_completion(
    request_id: str,
    model: str,
    version: str,
    choices: list[tuple[str, str]],
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    """A /v1/completions response; ``choices`` are (text, finish_reason), one per prompt."""
    return {
        "id": request_id,
        "object": "text_completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": version,
        "choices": [
            {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
            for i, (text, finish) in enumerate(choices)
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def text_completion_chunk(
    request_id: str,
    model: str,
    version: str,
    text: str,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    chunk = text_completion(request_id, model, version, [] if usage else [(text, "")], 0, 0)
    if usage is None:
        chunk["choices"][0]["finish_reason"] = finish_reason
        del chunk["usage"]
    else:
        chunk["usage"] = usage
    return chunk


# ---- audio transcriptions -----------------------------------------------------------------------------
TRANSCRIPT_MEDIA_TYPES = {"text": "text/plain", "srt": "text/plain", "vtt": "text/vtt"}


# ---- speech ------------------------------------------------------------------------------------------
SpeechFormat = Literal["wav", "flac", "pcm"]
SPEECH_MEDIA_TYPES: dict[str, str] = {"wav": "audio/wav", "flac": "audio/flac", "pcm": "audio/pcm"}


class SpeechRequest(_Strict):
    model: str
    input: str = Field(min_length=1, max_length=4096, description="the text to speak, 1 to 4096 characters")
    voice: str = Field(
        "alloy",
        description="OpenAI's voice names (alloy, echo...) mean the model's default voice; espeak-ng "
        "models also take language voices (ko, en-us...), multi-speaker Piper voices their speakers",
    )
    response_format: SpeechFormat = Field(
        "wav", description="wav or flac (16-bit mono), or pcm (raw 16-bit little-endian samples)"
    )
    speed: float = Field(1.0, ge=0.25, le=4.0, description="> 1 speaks faster")
