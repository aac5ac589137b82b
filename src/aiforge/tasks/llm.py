"""Text generation and chat for GGUF models on llama.cpp (through ``xllamacpp``).

``text-generation`` with a ``.gguf`` model (the packaged ``smollm2-135m-instruct``, a local file) runs
here instead of on transformers; the task card, its defaults and its output record stay the same::

    pipe = load_pipeline("text-generation")          # the packaged SmolLM2 when offline
    pipe("What is the capital of France?")["generated_text"]      # 'The capital of France is Paris.'
    pipe.chat([{"role": "user", "content": "Hi"}], max_new_tokens=16)
    for piece in pipe.stream_chat(messages): print(piece, end="")

Why llama.cpp through xllamacpp: its prebuilt wheel carries llama.cpp's own server loop, so the model's
chat template (read from the GGUF), stop sequences, sampling, usage counts and finish reasons are
llama.cpp's, and concurrent requests share one decode batch across ``slots`` (continuous batching).
Measured on 2 cores: SmolLM2 decodes at 124 tokens/s on llama.cpp against about 14 with transformers
on the same weights (issue 16; 63 tokens/s with 6 agents sharing the cores, bench/bench_llm.py, where
aiforge's overhead is within noise: 0.997x the binding called directly). llama-cpp-python, the other
binding, ships no wheel here and builds from source for 15-20 min.

A text input is sent as one user message through the model's chat template (``chat=true``, right for
instruction-tuned models: SmolLM2 continues a bare question with its end-of-sequence token);
``chat=false`` continues the text as-is, as the transformers runtime does.

A base model whose GGUF has no chat template (the packaged ``gemma-3-270m``) continues text inputs
as written, and a conversation is refused with the reason: llama.cpp would fall back to a ChatML
template the model never saw, and Gemma 270M then echoes the question and invents ``<|im_start|>``
turns ("What is the capital of France?<|im_end|>\n<|im_start|>admin", 20 tokens, greedy).
"""

from __future__ import annotations

import json
import os
import queue
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, cast

from pydantic import BaseModel, Field, model_validator

from aiforge.errors import AiforgeError
from aiforge.tasks.base import Pipeline, TaskInput
from aiforge.tasks.card import register_runtime
from aiforge.tasks.generation import ChatUsage, GenerationOutput, TextGenerationParams

# SmolLM2's GGUF template puts its own system message first when a chat has none ("You are a helpful
# AI assistant named SmolLM, trained by Hugging Face"); with it, greedy decoding answers "What is the
# capital of France?" with "L'Étoile, la Marseillaise, ..."; with this one, "The capital of France is
# Paris." The user's own system message always wins; system="" keeps the template's default.
DEFAULT_SYSTEM = "You are a helpful assistant."


class ChatMessage(BaseModel):
    role: str = Field(description="system | user | assistant | tool")
    content: str
    tool_calls: list[dict[str, Any]] | None = Field(None, description="an assistant turn's tool calls")
    tool_call_id: str | None = Field(None, description="a tool turn: the call it answers")


class LlmInput(TaskInput):
    text: str | None = Field(None, min_length=1, description="a prompt (sent as one user message)")
    messages: list[ChatMessage] | None = Field(None, min_length=1, description="a conversation")
    chat: bool | None = Field(None, description="override the 'chat' parameter for this input")
    json_schema: dict[str, Any] | None = Field(
        None, description="constrain the output to JSON matching this schema ({}: any JSON object)"
    )
    tools: list[dict[str, Any]] | None = Field(None, description="OpenAI function tools the model may call")
    tool_choice: str | dict[str, Any] | None = Field(
        None, description="auto (the model decides) | required | {'type': 'function', 'function': {'name'}}"
    )

    @model_validator(mode="after")
    def _one_of(self) -> LlmInput:
        if (self.text is None) == (self.messages is None):
            raise ValueError("give exactly one of 'text' and 'messages'")
        return self


class LlmOutput(GenerationOutput):
    finish_reason: Literal["length", "stop", "tool_calls"]  # type: ignore[assignment]
    tool_calls: list[dict[str, Any]] | None = Field(None, description="OpenAI tool calls, when it made some")


# aiforge's templates (src/aiforge/data/chat_templates/NAME.jinja), for --param chat_template=NAME
TEMPLATES_DIR = Path(__file__).resolve().parent.parent / "data" / "chat_templates"


class LlamaCppParams(TextGenerationParams):
    chat: bool = Field(True, description="send a text input through the model's chat template")
    system: str = Field(DEFAULT_SYSTEM, description="system message when a chat has none ('' = model's)")
    # read when the model loads:
    slots: int = Field(4, ge=1, le=64, description="requests decoded together (continuous batching)")
    context_size: int = Field(0, ge=0, description="context tokens shared by the slots; 0 = the model's")
    chat_template: str = Field(
        "",
        description="'' = the GGUF's own; chatml-tools = ChatML with tool calls (for ChatML models such "
        "as SmolLM2); or a .jinja file",
    )


@dataclass(frozen=True)
class LlamaRequest:
    """One request to llama.cpp's server: a chat (template applied there) or a raw completion."""

    endpoint: Literal["chat", "completions"]
    body: dict[str, Any]


def available_cores() -> int:
    """The cores this process may run on (a container's or taskset's share, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def _load_xllamacpp() -> Any:
    # llama.cpp's CPU backend runs on OpenMP, whose threads spin while they wait by default. On a
    # shared CPU the spinning threads starve each other: SmolLM2 decoded at 1.3 tokens/s instead of
    # 48 (2 cores, 6 busy processes). libgomp reads the policy once, when it loads: if torch loaded
    # it first, its setting stays (load_pipeline does not import torch for this runtime).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        import xllamacpp
    except ImportError as exc:
        raise AiforgeError(
            "AF-DEP-001",
            "GGUF models run on llama.cpp through xllamacpp, which is not installed",
            'pip install "aiforge[llm]"  (or: pip install xllamacpp)',
        ) from exc
    return xllamacpp


class GenerationObserver(Protocol):
    """What the server's metrics hear from the runtime (serve/metrics.py implements it)."""

    def requests_active(self, active: int, slots: int) -> None:
        """Requests now inside llama.cpp (decoding in a slot or waiting for one)."""

    def generation_done(self, first_token_s: float | None, tokens: int, decode_s: float) -> None:
        """One request ended: seconds to its first token (None: it made none), tokens generated,
        seconds spent generating them."""


class LlamaCppServer:
    """llama.cpp's server loop in this process: requests from any thread, decoded together in slots."""

    observer: GenerationObserver | None = None

    def __init__(
        self, path: str, slots: int, context_size: int, threads: int, chat_template: str = ""
    ) -> None:
        xllamacpp = _load_xllamacpp()
        config = xllamacpp.CommonParams()
        config.model.path = path
        config.n_parallel = slots
        # One KV cache for all slots: any request may use the whole context, not 1/slots of it.
        config.kv_unified = True
        config.n_ctx = context_size
        config.cpuparams.n_threads = threads
        config.cpuparams_batch.n_threads = threads
        config.verbosity = -1  # llama.cpp's per-request log lines would drown aiforge's output
        if chat_template:
            config.chat_template = chat_template  # jinja; llama.cpp reads its tool-call layout from it
        self.server = xllamacpp.Server(config)
        self.slots = slots
        self.active = 0  # requests inside llama.cpp now
        self._active_lock = threading.Lock()

    def _count(self, change: int) -> None:
        with self._active_lock:
            self.active += change
            active = self.active
        if self.observer is not None:
            self.observer.requests_active(active, self.slots)

    def complete(self, request: LlamaRequest) -> dict[str, Any]:
        """One request, answered whole (blocks this thread; other threads' requests run alongside)."""
        started = time.monotonic()
        self._count(+1)
        try:
            response = self._handler(request)(request.body)
        finally:
            self._count(-1)
        _raise_for_error(response)
        if self.observer is not None:
            # Not streamed, so no token is seen arriving: the first one came when decoding began,
            # i.e. the request's time less llama.cpp's decode time (waiting for a slot + the prompt).
            decode_s = response.get("timings", {}).get("predicted_ms", 0.0) / 1000
            tokens = response.get("usage", {}).get("completion_tokens", 0)
            first = max(0.0, time.monotonic() - started - decode_s) if tokens else None
            self.observer.generation_done(first, tokens, decode_s)
        return cast(dict[str, Any], response)

    def stream(self, request: LlamaRequest) -> Iterator[dict[str, Any]]:
        """The response chunks as llama.cpp produces them. Closing the iterator early stops the
        generation at its next token (the callback answers "stop")."""
        chunks: queue.Queue[dict[str, Any] | BaseException | None] = queue.Queue()
        cancel = threading.Event()

        def on_chunk(chunk: dict[str, Any]) -> bool:
            chunks.put(chunk)
            return cancel.is_set()

        def run() -> None:
            try:
                self._handler(request)({**request.body, "stream": True}, on_chunk)
            except BaseException as exc:  # re-raised in the reader's thread
                chunks.put(exc)
            finally:
                chunks.put(None)

        started, first_token_s = time.monotonic(), None
        timings: dict[str, Any] = {}
        self._count(+1)
        thread = threading.Thread(target=run, name="aiforge-llama-stream", daemon=True)
        thread.start()
        try:
            while (chunk := chunks.get()) is not None:
                if isinstance(chunk, BaseException):
                    raise chunk
                _raise_for_error(chunk)
                if first_token_s is None and _has_text(chunk):
                    first_token_s = time.monotonic() - started
                timings = chunk.get("timings") or timings
                yield chunk
        finally:
            cancel.set()
            thread.join()
            self._count(-1)
            if self.observer is not None and timings:
                self.observer.generation_done(
                    first_token_s, timings.get("predicted_n", 0), timings.get("predicted_ms", 0.0) / 1000
                )

    def _handler(self, request: LlamaRequest) -> Callable[..., Any]:
        if request.endpoint == "chat":
            return cast(Callable[..., Any], self.server.handle_chat_completions)
        return cast(Callable[..., Any], self.server.handle_completions)


def _has_text(chunk: dict[str, Any]) -> bool:
    return any((c.get("delta") or {}).get("content") or c.get("text") for c in chunk.get("choices", ()))


def _raise_for_error(response: dict[str, Any]) -> None:
    """llama.cpp answers errors as ``{"error": {...}}`` (or a bare ``{"code", "message"}``)."""
    error = response.get("error") if "error" in response else response if "code" in response else None
    if not error:
        return
    if error.get("type") == "exceed_context_size_error":
        raise AiforgeError(
            "AF-INPUT-002",
            f"the prompt ({error.get('n_prompt_tokens')} tokens) does not fit the model's context "
            f"of {error.get('n_ctx')} tokens",
            "shorten the prompt or the conversation, or load the model with a larger context_size",
        )
    raise AiforgeError(
        "AF-INPUT-002" if error.get("code") == 400 else "AF-TASK-002",
        f"llama.cpp refused the request: {error.get('message')}",
        "check the request's parameters",
    )


@register_runtime("text-generation", formats=("gguf",))
class LlamaCppTextGeneration(Pipeline):
    """Text generation and chat with a GGUF model on llama.cpp: see the module docstring."""

    Input = LlmInput
    Output = LlmOutput
    Params = LlamaCppParams
    backend: ClassVar[str] = "llama.cpp"
    primary_field: ClassVar[str | None] = "text"
    # llama.cpp batches requests itself (slots) and pads nothing: keep arrival order.
    packs = True
    sort_window_batches = 1
    # Forwards may overlap: the server runs one per slot, so a request that arrives while others
    # decode joins them at llama.cpp's next step instead of waiting for their batch to end.
    concurrent_forward = True
    # llama.cpp turns a JSON schema into a grammar that constrains sampling (LlmInput.json_schema).
    constrains_json: ClassVar[bool] = True

    params: LlamaCppParams

    @classmethod
    def resolve_device(cls, device: str) -> str:
        if device not in ("auto", "cpu"):
            raise AiforgeError(
                "AF-DEVICE-001",
                f"device '{device}' requested, but GGUF models run on the CPU in this build",
                "use --device cpu (or auto)",
            )
        return "cpu"

    def setup(self) -> None:
        own_template = gguf_string(self.model_ref.location, "tokenizer.chat_template")
        self.chat_template = self.template_override() or own_template
        self.server = LlamaCppServer(
            self.model_ref.location,
            self.params.slots,
            self.params.context_size,
            available_cores(),
            self.template_override(),
        )
        self.default_batch_size = self.params.slots  # type: ignore[misc]  # one batch fills the slots
        self.requests = ThreadPoolExecutor(self.params.slots, "aiforge-llama")

    def side_by_side(self) -> int:
        return self.params.slots

    def chat_limitation(self) -> str | None:
        """Why this model cannot hold a conversation (None: it can); the chat route's 400 says it."""
        self.ensure_setup()
        if self.chat_template:
            return None
        name = os.path.basename(self.model_ref.location)
        return (
            f"{name} has no chat template (a base model, not instruction-tuned): it continues text, "
            "it does not answer messages"
        )

    def template_override(self) -> str:
        """The chat template the ``chat_template`` parameter names ('' = the GGUF's own)."""
        name = self.params.chat_template
        if not name:
            return ""
        path = Path(name) if name.endswith(".jinja") else TEMPLATES_DIR / f"{name}.jinja"
        if not path.is_file():
            known = sorted(p.stem for p in TEMPLATES_DIR.glob("*.jinja"))
            raise AiforgeError(
                "AF-CONFIG-001",
                f"chat_template '{name}' is neither a .jinja file nor one of aiforge's templates",
                f"pass a path to a .jinja file, or one of: {', '.join(known)}",
            )
        return path.read_text(encoding="utf-8")

    def tools_limitation(self) -> str | None:
        """Why this model cannot answer a request with ``tools`` (the route's 400 says it); None: it can."""
        self.ensure_setup()
        if "tools" in (self.chat_template or ""):
            return None
        name = os.path.basename(self.model_ref.location)
        return (
            f"the chat template in {name} has no tool support (it never mentions tools); a ChatML model "
            "(SmolLM2) can load aiforge's: --param chat_template=chatml-tools"
        )

    def observe_generation(self, observer: GenerationObserver) -> None:
        """Report requests in flight, time to first token and tokens generated to ``observer``."""
        self.ensure_setup()
        self.server.observer = observer

    # ---- the pipeline contract ------------------------------------------------------------------------
    def preprocess(self, item: LlmInput) -> LlamaRequest:  # type: ignore[override]
        return self.request(item, self.params)

    def length(self, features: LlamaRequest) -> int:
        return 1

    def forward(self, batch: list[LlamaRequest]) -> list[dict[str, Any]]:
        # One thread per request: llama.cpp decodes the requests of all waiting threads in one batch.
        return list(self.requests.map(self.server.complete, batch))

    def postprocess(self, raw: dict[str, Any], item: LlmInput) -> dict[str, Any]:  # type: ignore[override]
        choice, usage = raw["choices"][0], raw["usage"]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
        if item.text is not None and self.params.return_full_text:
            text = item.text + text
        finish = "length" if choice["finish_reason"] == "length" else "stop"
        calls = choice.get("message", {}).get("tool_calls") or None
        if forced_tool(item):
            calls, text = [forced_call(text or "")], ""
        return LlmOutput(
            generated_text=text or "",
            prompt_tokens=usage["prompt_tokens"],
            completion_tokens=usage["completion_tokens"],
            finish_reason="tool_calls" if calls and finish == "stop" else finish,
            truncated=False,  # llama.cpp refuses a prompt that does not fit (AF-INPUT-002), never cuts it
            tool_calls=calls,
        ).model_dump(exclude_none=True)

    # ---- chat and streaming (the same methods as TextGeneration on transformers) -------------------------
    def chat_record(
        self,
        messages: list[dict[str, Any]],
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """The input record ``predict`` answers a conversation with (its output constrained to JSON
        matching ``json_schema`` when one is given; ``{}``: any JSON object; ``tools`` the model may
        call, see :func:`forced_tool`)."""
        return {"messages": messages, "json_schema": json_schema, "tools": tools, "tool_choice": tool_choice}

    def completion_record(self, prompt: str) -> dict[str, Any]:
        """The input record ``predict`` continues ``prompt`` with, as written (no chat template)."""
        return {"text": prompt, "chat": False}

    def chat_prompt_tokens(self, messages: list[dict[str, str]], **params: Any) -> int | None:
        """None: llama.cpp counts the prompt when it runs it (a prompt too long fails then)."""
        return None

    def chat(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """One assistant turn for a conversation (the model's chat template applied by llama.cpp)."""
        self.ensure_setup()
        item = LlmInput(messages=[ChatMessage(**m) for m in messages])
        merged = self._merged(params)
        return self.postprocess(self.server.complete(self.request(item, merged)), item)

    def stream_chat(
        self,
        messages: list[dict[str, Any]],
        usage: ChatUsage | None = None,
        json_schema: dict[str, Any] | None = None,
        tools: list[dict[str, Any]] | None = None,
        tool_choice: str | dict[str, Any] | None = None,
        **params: Any,
    ) -> Iterator[str]:
        """The assistant's answer to a conversation, piece by piece; ``usage`` follows each token and
        holds the tool calls once the answer ends with some."""
        self.ensure_setup()
        record = self.chat_record(messages, json_schema, tools, tool_choice)
        item = LlmInput(**record)
        pieces = self._pieces(self.request(item, self._merged(params)), usage)
        if not forced_tool(item):
            yield from pieces
        else:  # the whole JSON is the call's arguments: nothing to show piece by piece
            call = forced_call("".join(pieces))
            if usage is not None:
                usage.tool_calls, usage.finish_reason = [call], "tool_calls"

    def stream_completion(self, prompt: str, usage: ChatUsage | None = None, **params: Any) -> Iterator[str]:
        """The continuation of ``prompt`` as written (no chat template), piece by piece."""
        self.ensure_setup()
        yield from self._pieces(self.request(LlmInput(text=prompt, chat=False), self._merged(params)), usage)

    def stream_tokens(self, prompt: str, **params: Any) -> Iterator[str]:
        """The completion of ``prompt`` piece by piece; joined, the ``generated_text`` of a plain call."""
        self.ensure_setup()
        yield from self._pieces(self.request(LlmInput(text=prompt), self._merged(params)))

    def _pieces(self, request: LlamaRequest, usage: ChatUsage | None = None) -> Iterator[str]:
        body = {**request.body, "timings_per_token": True}  # usage and the server's metrics read them
        for chunk in self.server.stream(LlamaRequest(request.endpoint, body)):
            timings = chunk.get("timings")
            if usage is not None and timings:
                usage.prompt_tokens = timings["prompt_n"] + timings["cache_n"]
                usage.completion_tokens = timings["predicted_n"]
            for choice in chunk.get("choices", ()):
                if usage is not None:
                    _gather_tool_calls(usage, (choice.get("delta") or {}).get("tool_calls") or ())
                if usage is not None and choice.get("finish_reason"):
                    usage.finish_reason = "length" if choice["finish_reason"] == "length" else "stop"
                    if usage.tool_calls and usage.finish_reason == "stop":
                        usage.finish_reason = "tool_calls"
                piece = choice.get("delta", {}).get("content") if "delta" in choice else choice.get("text")
                if piece:
                    yield piece

    def _merged(self, params: dict[str, Any]) -> LlamaCppParams:
        return cast(LlamaCppParams, self.parse_params({**self.params.model_dump(), **params}))

    # ---- requests ------------------------------------------------------------------------------------
    def request(self, item: LlmInput, params: LlamaCppParams) -> LlamaRequest:
        """The llama.cpp request for one input under ``params``."""
        options = _sampling(params)
        chat = params.chat if item.chat is None else item.chat
        if item.messages is not None and (limitation := self.chat_limitation()):
            raise AiforgeError(
                "AF-INPUT-002",
                limitation,
                "send the text to continue instead (`aiforge run text-generation`, /v1/completions), "
                "or use a chat model such as packaged:smollm2-135m-instruct",
            )
        if item.text is not None and (not chat or self.chat_limitation()):
            if item.json_schema is not None:
                options["json_schema"] = item.json_schema or {"type": "object"}
            return LlamaRequest("completions", {"prompt": item.text, **options})
        messages = item.messages or [ChatMessage(role="user", content=cast(str, item.text))]
        if params.system and not any(m.role == "system" for m in messages):
            messages = [ChatMessage(role="system", content=params.system), *messages]
        if item.json_schema is not None:
            options["response_format"] = _response_format(item.json_schema)
        if item.tools and item.tool_choice != "none":
            options["tools"] = item.tools
            if forced := forced_tool(item):
                # llama.cpp's own tool grammar lets text come before a call (SmolLM2 then never calls):
                # a forced call is one JSON object matching the tools' schemas, parsed here instead.
                # The tools stay in the request so the template still shows them to the model.
                options["response_format"] = _response_format(_call_schema(item.tools, forced))
                options["tool_choice"] = "none"
            elif item.tool_choice is not None:
                options["tool_choice"] = item.tool_choice
        dumped = [m.model_dump(exclude_none=True) for m in messages]
        return LlamaRequest("chat", {"messages": dumped, **options})


def forced_tool(item: LlmInput) -> str | None:
    """The tool a request forces a call to: its name, "*" for any (``required``), None when not forced."""
    if not item.tools or item.tool_choice in (None, "auto", "none"):
        return None
    if item.tool_choice == "required":
        return "*"
    if isinstance(item.tool_choice, dict):
        return cast(str, (item.tool_choice.get("function") or {}).get("name") or "*")
    return None


def _call_schema(tools: list[dict[str, Any]], name: str) -> dict[str, Any]:
    """A JSON schema for one call of ``name`` ("*": any of ``tools``): ``{"name", "arguments"}``."""
    functions = [t.get("function", t) for t in tools]
    chosen = [f for f in functions if name in ("*", f.get("name"))]
    if not chosen:
        raise AiforgeError(
            "AF-INPUT-002",
            f"tool_choice names '{name}', which is not among the tools offered",
            f"name one of: {', '.join(str(f.get('name')) for f in functions)}",
        )
    return {
        "anyOf": [
            {
                "type": "object",
                "properties": {
                    "name": {"const": f["name"]},
                    "arguments": f.get("parameters") or {"type": "object"},
                },
                "required": ["name", "arguments"],
            }
            for f in chosen
        ]
    }


def forced_call(text: str) -> dict[str, Any]:
    """The OpenAI tool call in a forced call's JSON output (shape fixed by :func:`_call_schema`)."""
    try:
        call = json.loads(text)
        name, arguments = call["name"], call["arguments"]
    except (ValueError, KeyError, TypeError) as exc:  # cut short by max_tokens
        raise AiforgeError(
            "AF-INPUT-002",
            f"the tool call was cut before it was complete ({len(text)} characters of JSON)",
            "raise max_tokens",
        ) from exc
    return {
        "id": f"call_{uuid.uuid4().hex[:24]}",
        "type": "function",
        "function": {"name": name, "arguments": json.dumps(arguments, ensure_ascii=False)},
    }


def _gather_tool_calls(usage: ChatUsage, deltas: Any) -> None:
    """Add llama.cpp's streamed tool-call pieces to ``usage.tool_calls`` (joined by index)."""
    for delta in deltas:
        index = delta.get("index", 0)
        while len(usage.tool_calls) <= index:
            usage.tool_calls.append({"id": "", "type": "function", "function": {"name": "", "arguments": ""}})
        call = usage.tool_calls[index]
        call["id"] = delta.get("id") or call["id"]
        function = delta.get("function") or {}
        call["function"]["name"] += function.get("name") or ""
        call["function"]["arguments"] += function.get("arguments") or ""


def _response_format(json_schema: dict[str, Any]) -> dict[str, Any]:
    """llama.cpp's chat field for a JSON constraint: any object, or one matching the schema."""
    if not json_schema:
        return {"type": "json_object"}
    return {"type": "json_schema", "json_schema": {"name": "response", "schema": json_schema}}


def _sampling(params: LlamaCppParams) -> dict[str, Any]:
    """aiforge's generation parameters in llama.cpp's request fields. Greedy unless ``do_sample``,
    as with transformers: temperature 0 is llama.cpp's greedy decoding."""
    options: dict[str, Any] = {"max_tokens": params.max_new_tokens, "temperature": 0.0}
    if params.do_sample:
        options.pop("temperature")  # llama.cpp's default (0.8) unless given
        for name, value in (("temperature", params.temperature), ("top_p", params.top_p)):
            if value is not None:
                options[name] = value
    if params.seed is not None:
        options["seed"] = params.seed
    if params.repetition_penalty is not None:
        options["repeat_penalty"] = params.repetition_penalty
    if params.stop:
        options["stop"] = params.stop
    return options


# GGUF metadata value types (ggml's gguf.h): fixed-size ones by struct format; 8 = string, 9 = array.
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}


def gguf_string(path: str, key: str) -> str | None:
    """One string from a GGUF file's metadata (``tokenizer.chat_template``...), None when absent.

    Reads the header only, skipping the other values (the token list among them: about 0.1 s for
    SmolLM2's 49k tokens); llama.cpp's binding exposes no metadata.
    """
    with open(path, "rb") as f:

        def unpack(fmt: str) -> Any:
            return struct.unpack("<" + fmt, f.read(struct.calcsize(fmt)))[0]

        def text() -> str:
            return f.read(unpack("Q")).decode("utf-8", "replace")

        def skip(kind: int) -> None:
            if kind == 8:
                f.seek(unpack("Q"), 1)
            elif kind == 9:
                item, count = unpack("I"), unpack("Q")
                if item in _GGUF_SCALARS:
                    f.seek(count * struct.calcsize(_GGUF_SCALARS[item]), 1)
                else:
                    for _ in range(count):
                        skip(item)
            else:
                f.seek(struct.calcsize(_GGUF_SCALARS[kind]), 1)

        if f.read(4) != b"GGUF":
            return None
        unpack("I"), unpack("Q")  # version, tensor count
        for _ in range(unpack("Q")):
            name, kind = text(), unpack("I")
            if name == key and kind == 8:
                return text()
            skip(kind)
    return None
