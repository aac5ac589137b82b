"""Text generation: causal LMs (text-generation) and seq2seq models (text2text, summarization, translation).

transformers 5 keeps only the text-generation pipeline, so every task here is built directly on
``AutoModelForCausalLM`` / ``AutoModelForSeq2SeqLM`` and ``model.generate``. One base class,
:class:`_Generator`, owns everything the tasks share: tokenising with truncation (stated in the output
as ``truncated: true``), batched generation, cutting each row at its end-of-sequence token, token
counts and the finish reason. The subclasses only say which model class to load, which side to pad
and truncate, and what prompt to build from an input.

Every task returns the same record::

    {"generated_text": "...", "prompt_tokens": 12, "completion_tokens": 32,
     "finish_reason": "length" | "stop", "truncated": false}

``finish_reason`` is "stop" when the model emitted its end-of-sequence token and "length" when it
hit ``max_new_tokens``, the same meaning as in the OpenAI API (the server's chat endpoint maps it
through). :class:`TextGeneration` adds :meth:`~TextGeneration.stream_tokens` (text pieces as they are
generated) and :meth:`~TextGeneration.apply_chat_template` (messages -> prompt) for that endpoint.

Example::

    pipe = load_pipeline("summarization", "google/flan-t5-small", max_new_tokens=60)
    pipe("A long article ...")["generated_text"]
"""

from __future__ import annotations

import contextlib
import copy
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Literal, cast

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, Trainer, register_task, warm_text

if TYPE_CHECKING:
    import torch
    import transformers
else:
    torch = lazy_module("torch")
    transformers = lazy_module("transformers")

# The sampling controls every generate()-based task reads per call (a served request may set them).
GENERATION_REQUEST_PARAMS = (
    "max_new_tokens",
    "do_sample",
    "temperature",
    "top_p",
    "repetition_penalty",
    "seed",
)

# Tokenizers report "no limit" as a huge number; anything above this is treated as no limit.
_NO_LIMIT = 1_000_000
# model_type values that were trained with T5's text prefixes ("summarize: ", "translate X to Y: ").
T5_PREFIX_MODEL_TYPES = frozenset({"t5"})
# T5's translation prefixes name languages in English; users often pass ISO codes.
LANGUAGE_NAMES = {
    "en": "English",
    "de": "German",
    "fr": "French",
    "ro": "Romanian",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "ko": "Korean",
    "ja": "Japanese",
    "zh": "Chinese",
}


class TextInput(TaskInput):
    text: str = Field(min_length=1, description="the prompt (text-generation) or the source text")


class GenerationParams(TaskParams):
    max_new_tokens: int = Field(32, ge=1, le=8192, description="most tokens to generate")
    do_sample: bool = Field(False, description="sample instead of greedy decoding")
    temperature: float | None = Field(None, gt=0, description="sampling temperature (with do_sample)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling mass (with do_sample)")
    repetition_penalty: float | None = Field(None, gt=0, description=">1 discourages repeats")
    seed: int | None = Field(
        None, ge=0, le=2**53, description="sampling seed: same seed + same batch, same text"
    )


class TextGenerationParams(GenerationParams):
    return_full_text: bool = Field(False, description="prepend the prompt to generated_text")
    stop: list[str] | None = Field(None, description="end the text before any of these strings")


class TranslationParams(GenerationParams):
    src_lang: str | None = Field(None, description="source language: a name or code the model knows")
    tgt_lang: str | None = Field(None, description="target language: a name or code the model knows")


class GenerationOutput(BaseModel):
    generated_text: str
    prompt_tokens: int = Field(description="tokens the model read (after truncation)")
    completion_tokens: int = Field(description="tokens generated, the end-of-sequence token included")
    finish_reason: Literal["length", "stop"]
    truncated: bool = Field(description="the input was longer than the model accepts and was cut")


@dataclass
class ChatUsage:
    """What a streamed chat reports as it goes (``stream_chat(..., usage=ChatUsage())``): tokens so far,
    and the finish reason once the generation has ended."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: Literal["length", "stop", "tool_calls"] = "stop"
    # OpenAI tool calls the answer ended with (GGUF chat models whose template has tools)
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Prompt:
    ids: list[int]
    truncated: bool


@dataclass
class Completion:
    ids: list[int]  # generated tokens up to and including the first end-of-sequence token
    finish_reason: Literal["length", "stop"]
    prompt: Prompt


def _stop_when_set(event: threading.Event) -> Any:
    """A stopping criterion that ends a streaming generate() whose reader went away, so the thread
    does not run on. (Defined on use: transformers loads only when a model does.)"""

    class Cancelled(transformers.StoppingCriteria):
        def __call__(self, input_ids: torch.LongTensor, scores: Any, **kwargs: Any) -> torch.BoolTensor:
            stop = event.is_set()
            return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)

    return Cancelled()


class _Generator(Pipeline):
    """What every generation task shares. Subclasses set the class attributes and ``_prompt_text``."""

    Input = TextInput
    Output = GenerationOutput
    Params: ClassVar[type[TaskParams]] = GenerationParams
    backend: ClassVar[str] = "transformers"
    primary_field: ClassVar[str | None] = "text"
    default_batch_size: ClassVar[int] = 4

    model_class: ClassVar[str]  # the transformers Auto class
    # Causal LMs continue the end of the prompt, so they pad and truncate on the left.
    side: ClassVar[Literal["left", "right"]] = "right"

    params: GenerationParams

    # ---- setup --------------------------------------------------------------------------------------
    def setup(self) -> None:
        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        model_class = getattr(transformers, self.model_class)
        self.model = model_class.from_pretrained(location).to(self.device).eval()
        self.tokenizer.padding_side = self.side
        self.tokenizer.truncation_side = self.side
        if self.tokenizer.pad_token_id is None:  # GPT-2, Llama...: batching needs some pad token
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.eos_ids = _eos_ids(self.model.generation_config.eos_token_id, self.tokenizer.eos_token_id)
        self.context_limit = _context_limit(self.tokenizer, self.model.config)

    def input_limit(self, params: GenerationParams) -> int:
        """The most prompt tokens the model accepts."""
        return self.context_limit

    def _prompt_text(self, item: TextInput) -> str:
        return item.text

    def _generate_extra(self) -> dict[str, Any]:
        """Task-specific generate() arguments (the forced target-language token of translation)."""
        return {}

    # ---- preprocess ---------------------------------------------------------------------------------
    def preprocess(self, item: TextInput) -> Prompt:  # type: ignore[override]
        return self.encode(self._prompt_text(item), self.params)

    def encode(self, text: str, params: GenerationParams) -> Prompt:
        """Tokenise one prompt, truncated (on ``side``) to what the model accepts."""
        limit = self.input_limit(params)
        # A prompt rendered by a chat template already starts with the BOS text: do not add a second one.
        bos = self.tokenizer.bos_token
        special = not (bos and text.startswith(bos))
        # One token over the limit tells "too long" without tokenising a huge text untruncated.
        ids = self._tokenize(text, special, limit + 1)
        if len(ids) <= limit:
            return Prompt(ids=ids, truncated=False)
        return Prompt(ids=self._tokenize(text, special, limit), truncated=True)

    def _tokenize(self, text: str, special: bool, max_length: int) -> list[int]:
        enc = self.tokenizer(text, add_special_tokens=special, truncation=True, max_length=max_length)
        return list(enc["input_ids"])

    def length(self, features: Prompt) -> int:
        """Prompt tokens: similar lengths share a batch, so left/right padding stays small."""
        return len(features.ids)

    # ---- forward ------------------------------------------------------------------------------------
    def forward(self, batch: list[Prompt]) -> list[Completion]:  # type: ignore[override]
        inputs = self._pad([p.ids for p in batch])
        with torch.inference_mode():
            sequences = self._generate(inputs, self.params)
        new_tokens = self._new_tokens(sequences, inputs["input_ids"].shape[1])
        return [self._cut(row, prompt) for row, prompt in zip(new_tokens.tolist(), batch, strict=True)]

    def _pad(self, rows: list[list[int]]) -> dict[str, torch.Tensor]:
        padded = self.tokenizer.pad({"input_ids": rows}, padding_side=self.side, return_tensors="pt")
        return {
            "input_ids": padded["input_ids"].to(self.device),
            "attention_mask": padded["attention_mask"].to(self.device),
        }

    def _generate(
        self, inputs: dict[str, torch.Tensor], params: GenerationParams, **extra: Any
    ) -> torch.Tensor:
        kwargs: dict[str, Any] = {
            "max_new_tokens": params.max_new_tokens,
            "do_sample": params.do_sample,
            "pad_token_id": self.tokenizer.pad_token_id,
            **self._generate_extra(),
            **extra,
        }
        if params.do_sample:
            kwargs.update(
                {
                    k: v
                    for k, v in (("temperature", params.temperature), ("top_p", params.top_p))
                    if v is not None
                }
            )
        if params.repetition_penalty is not None:
            kwargs["repetition_penalty"] = params.repetition_penalty
        with _seeded(params.seed, self.device):
            out = self.model.generate(**inputs, **kwargs)
        return out if isinstance(out, torch.Tensor) else out.sequences

    def _new_tokens(self, sequences: torch.Tensor, input_width: int) -> torch.Tensor:
        """The generated part of ``sequences`` (causal LMs echo the prompt first)."""
        return sequences[:, input_width:]

    def _cut(self, row: list[int], prompt: Prompt) -> Completion:
        """Keep a row up to its first end-of-sequence token; what follows is padding."""
        for i, token in enumerate(row):
            if token in self.eos_ids:
                return Completion(ids=row[: i + 1], finish_reason="stop", prompt=prompt)
        return Completion(ids=row, finish_reason="length", prompt=prompt)

    # ---- postprocess --------------------------------------------------------------------------------
    def postprocess(self, raw: Completion, item: TextInput) -> dict[str, Any]:  # type: ignore[override]
        text = self.tokenizer.decode(raw.ids, skip_special_tokens=True)
        # Cut after decoding, not with generate(stop_strings=...): its token-level match stopped the
        # tiny WordPiece GPT-2 after one token on " c", a stop the decoded text did not contain.
        text, stopped = cut_at_stop(text, _stops(self.params))
        return GenerationOutput(
            generated_text=self._final_text(text, item),
            prompt_tokens=len(raw.prompt.ids),
            completion_tokens=len(raw.ids),
            finish_reason="stop" if stopped else raw.finish_reason,
            truncated=raw.prompt.truncated,
        ).model_dump()

    def _final_text(self, completion: str, item: TextInput) -> str:
        return completion


# ---- causal LM ----------------------------------------------------------------------------------------
@register_task(
    "text-generation",
    summary="continue a prompt or chat (causal LM; GGUF models on llama.cpp)",
    hub_default="google/gemma-3-270m",
    offline_default="packaged:smollm2-135m-instruct",
    request_params=(*GENERATION_REQUEST_PARAMS, "return_full_text", "stop"),
    warmup=warm_text,
    demo=DemoView("text", "text"),
    architectures=("ForCausalLM", "LMHeadModel"),
    formats=("gguf",),  # run by tasks/llm.py (register_runtime)
    openai=("chat", "completions"),
    # instruction / chat SFT (LoRA or full); a GGUF backbone is dequantised once to a trainable dir.
    # A model built from scratch learns language from a plain-text corpus first.
    trainer=Trainer(
        "aiforge.train.causal:CausalLMTask",
        "chat",
        ("google/gemma-3-270m", "packaged:smollm2-135m-instruct"),
        from_scratch=Trainer("aiforge.train.lm:CausalLMTask", "corpus"),
    ),
)
class TextGeneration(_Generator):
    """Continue a prompt with a causal LM (GPT-2, Llama, Gemma...); left-padded batches.

    ``pipe.predict(["Once upon a time", ...])``, ``pipe.stream_tokens(prompt)`` for text as it comes,
    ``pipe.apply_chat_template(messages)`` to turn chat messages into a prompt.
    """

    Params = TextGenerationParams
    model_class = "AutoModelForCausalLM"
    side = "left"

    params: TextGenerationParams

    def input_limit(self, params: GenerationParams) -> int:
        """The context minus room for the new tokens: prompt + completion must fit the positions."""
        room = self.context_limit - params.max_new_tokens
        if room < 1:
            raise AiforgeError(
                "AF-INPUT-002",
                f"max_new_tokens ({params.max_new_tokens}) leaves no room for a prompt: "
                f"the model reads at most {self.context_limit} tokens in all",
                f"lower max_new_tokens below {self.context_limit}",
            )
        return room

    def _final_text(self, completion: str, item: TextInput) -> str:
        return item.text + completion if self.params.return_full_text else completion

    def stream_tokens(self, prompt: str, **params: Any) -> Iterator[str]:
        """Yield the completion of ``prompt`` piece by piece as it is generated; joined, the pieces are the
        ``generated_text`` a non-streamed call returns (without the prompt).

        ``params`` override this pipeline's parameters for this call. generate() runs in a thread that
        feeds a ``TextIteratorStreamer``; closing the iterator early stops the generation.
        """
        self.ensure_setup()
        overrides = {**self.params.model_dump(exclude_none=True), **params}
        merged = cast(GenerationParams, self.parse_params(overrides))
        inputs = self._pad([self.encode(prompt, merged).ids])
        streamer = transformers.TextIteratorStreamer(
            self.tokenizer, skip_prompt=True, skip_special_tokens=True
        )
        cancel = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                with torch.inference_mode():
                    self._generate(
                        inputs,
                        merged,
                        streamer=streamer,
                        stopping_criteria=transformers.StoppingCriteriaList([_stop_when_set(cancel)]),
                    )
            except BaseException as exc:  # re-raised in the reader's thread below
                failure.append(exc)
                streamer.end()  # unblock the reader

        thread = threading.Thread(target=run, name="aiforge-generate", daemon=True)
        thread.start()
        try:
            yield from held_before_stops(streamer, _stops(merged))
        finally:
            cancel.set()
            thread.join()
        if failure:
            raise failure[0]

    # ---- chat: the same methods as the llama.cpp runtime (tasks/llm.py) ----------------------------------
    def chat_record(self, messages: list[dict[str, str]]) -> str:
        """The input record ``predict`` answers a conversation with: the templated prompt."""
        return self.apply_chat_template(messages)

    def chat_prompt_tokens(self, messages: list[dict[str, str]], **params: Any) -> int | None:
        """The prompt's size in tokens; raises AF-INPUT-002 when it cannot fit with the answer."""
        return len(self.encode(self.apply_chat_template(messages), self._merged(params)).ids)

    def chat(self, messages: list[dict[str, str]], **params: Any) -> dict[str, Any]:
        """One assistant turn for a conversation: the chat template, then one generation."""
        runner = copy.copy(self)  # shares the model; only the parameters differ
        runner.params = self._merged(params)
        return runner(self.chat_record(messages))

    def completion_record(self, prompt: str) -> str:
        """The input record ``predict`` continues ``prompt`` with, as written."""
        return prompt

    def stream_chat(
        self, messages: list[dict[str, str]], usage: ChatUsage | None = None, **params: Any
    ) -> Iterator[str]:
        """The assistant's answer to a conversation, piece by piece; ``usage`` is kept up to date
        (completion tokens are counted when the stream ends or is closed)."""
        return self.stream_completion(self.apply_chat_template(messages), usage, **params)

    def stream_completion(self, prompt: str, usage: ChatUsage | None = None, **params: Any) -> Iterator[str]:
        """``stream_tokens`` that also keeps ``usage`` up to date."""
        merged = self._merged(params)
        if usage is not None:
            usage.prompt_tokens = len(self.encode(prompt, merged).ids)
        pieces: list[str] = []
        try:
            for piece in self.stream_tokens(prompt, **params):
                pieces.append(piece)
                yield piece
        finally:
            if usage is not None:
                text = "".join(pieces)
                usage.completion_tokens = (
                    len(self.tokenizer(text, add_special_tokens=False)["input_ids"]) if text else 0
                )
                usage.finish_reason = "length" if usage.completion_tokens >= merged.max_new_tokens else "stop"

    def _merged(self, params: dict[str, Any]) -> TextGenerationParams:
        return cast(TextGenerationParams, self.parse_params({**self.params.model_dump(), **params}))

    def apply_chat_template(self, messages: list[dict[str, str]]) -> str:
        """Chat messages -> one prompt: the tokenizer's chat template, or a plain transcript without one.

        The transcript (``"role: content"`` lines, then ``"assistant:"``) lets base models without a
        template still answer a chat request, if less well than an instruction-tuned model.
        """
        self.ensure_setup()
        _check_messages(messages)
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        lines = [f"{m['role']}: {m['content']}" for m in messages]
        return "\n".join([*lines, "assistant:"])


# ---- seq2seq ------------------------------------------------------------------------------------------
class _Seq2SeqGenerator(_Generator):
    """Encoder-decoder generation (T5, BART, Marian, NLLB...): right padding, an optional task prefix."""

    model_class = "AutoModelForSeq2SeqLM"
    side = "right"
    default_prefix: ClassVar[str] = ""  # the prefix T5-family models expect for this task
    prefix_key: ClassVar[str] = ""  # the task's key in config.task_specific_params

    def setup(self) -> None:
        super().setup()
        self.prefix = self._task_prefix()

    def _task_prefix(self) -> str:
        """The checkpoint's own prefix (``task_specific_params``) wins; else T5's default, else none."""
        specific = getattr(self.model.config, "task_specific_params", None) or {}
        if self.prefix_key in specific and "prefix" in specific[self.prefix_key]:
            return specific[self.prefix_key]["prefix"]
        return self.default_prefix if self.model.config.model_type in T5_PREFIX_MODEL_TYPES else ""

    def _prompt_text(self, item: TextInput) -> str:
        return self.prefix + item.text

    def _new_tokens(self, sequences: torch.Tensor, input_width: int) -> torch.Tensor:
        """Drop the decoder start token that seq2seq generate() puts first."""
        return sequences[:, 1:]


@register_task(
    "text2text-generation",
    summary="sequence-to-sequence generation (AutoModelForSeq2SeqLM)",
    hub_default="google/flan-t5-small",
    request_params=GENERATION_REQUEST_PARAMS,
    warmup=warm_text,
    demo=DemoView("text", "text"),
    architectures=("ForConditionalGeneration",),
)
class Text2TextGeneration(_Seq2SeqGenerator):
    """Free seq2seq generation: the input is the whole prompt (e.g. flan-t5 instructions)."""


@register_task(
    "summarization",
    summary="summarise a text (seq2seq)",
    hub_default="facebook/bart-large-cnn",
    request_params=GENERATION_REQUEST_PARAMS,
    warmup=warm_text,
    demo=DemoView("text", "text"),
)
class Summarization(_Seq2SeqGenerator):
    """Summarise a text; T5-family models get the ``"summarize: "`` prefix they were trained with."""

    default_prefix = "summarize: "
    prefix_key = "summarization"


@register_task(
    "translation",
    summary="translate a text (seq2seq)",
    hub_default="Helsinki-NLP/opus-mt-ko-en",
    request_params=GENERATION_REQUEST_PARAMS,
    warmup=warm_text,
    demo=DemoView("text", "text"),
)
class Translation(_Seq2SeqGenerator):
    """Translate a text with ``src_lang`` / ``tgt_lang`` applied the way the model family expects.

    T5: the prefix ``"translate English to German: "`` (ISO codes become English names). NLLB, M2M100,
    mBART-50: the tokenizer's ``src_lang`` and the target language token forced first in the output.
    Multi-target Marian models: a ``">>tgt<<"`` token before the text. Single-pair models (e.g.
    Helsinki-NLP/opus-mt-ko-en) need neither.
    """

    Params = TranslationParams

    params: TranslationParams

    def _task_prefix(self) -> str:
        src, tgt = self.params.src_lang, self.params.tgt_lang
        if self.model.config.model_type in T5_PREFIX_MODEL_TYPES:
            if not (src and tgt):
                raise _needs_languages("a T5 model", "src_lang=en tgt_lang=de")
            return t5_translation_prefix(src, tgt)
        codes = getattr(self.tokenizer, "supported_language_codes", None)  # multi-target Marian
        if codes and tgt:
            return f">>{tgt}<< "
        if src and hasattr(self.tokenizer, "src_lang"):
            self.tokenizer.src_lang = src
        return ""

    def setup(self) -> None:
        super().setup()
        self.forced_bos = self._forced_bos()

    def _forced_bos(self) -> int | None:
        """Multilingual models (their tokenizer has ``src_lang``) start the output with a target-language
        token; without ``tgt_lang`` they would pick a language at random, unless the checkpoint fixes one."""
        if not hasattr(self.tokenizer, "src_lang"):
            return None
        if self.params.tgt_lang:
            return self._language_token_id(self.params.tgt_lang)
        if self.model.generation_config.forced_bos_token_id is None:
            raise _needs_languages(
                f"the multilingual model '{self.model_ref.describe()}'",
                "src_lang=kor_Hang tgt_lang=eng_Latn (NLLB), src_lang=ko tgt_lang=en (M2M100)",
            )
        return None

    def _generate_extra(self) -> dict[str, Any]:
        return {} if self.forced_bos is None else {"forced_bos_token_id": self.forced_bos}

    def _language_token_id(self, lang: str) -> int:
        """The id of the target-language token (NLLB "kor_Hang", M2M100 "ko", mBART "ko_KR")."""
        if hasattr(self.tokenizer, "get_lang_id"):  # M2M100 wraps codes as "__ko__"
            with contextlib.suppress(KeyError):
                return self.tokenizer.get_lang_id(lang)
        token_id = self.tokenizer.convert_tokens_to_ids(lang)
        if token_id is None or token_id == self.tokenizer.unk_token_id:
            raise AiforgeError(
                "AF-INPUT-002",
                f"tgt_lang '{lang}' is not a language code of model '{self.model_ref.describe()}'",
                "use the model's codes (NLLB: kor_Hang, eng_Latn; M2M100: ko, en; mBART-50: ko_KR, en_XX)",
            )
        return int(token_id)


# ---- helpers ------------------------------------------------------------------------------------------
def _stops(params: GenerationParams) -> list[str]:
    return getattr(params, "stop", None) or []


def cut_at_stop(text: str, stops: list[str]) -> tuple[str, bool]:
    """``text`` up to the earliest stop sequence, and whether one was found."""
    cuts = [i for i in (text.find(s) for s in stops) if i >= 0]
    return (text[: min(cuts)], True) if cuts else (text, False)


class StopScanner:
    """Streams text pieces while holding back any tail that could begin a stop sequence."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = stops
        self.hold = max((len(s) for s in stops), default=1) - 1
        self.pending = ""
        self.stopped = False

    def feed(self, piece: str) -> str:
        """The text safe to send now; sets ``stopped`` once a stop sequence appears."""
        self.pending += piece
        text, found = cut_at_stop(self.pending, self.stops)
        if found:
            self.stopped = True
            self.pending = ""
            return text
        split = max(len(self.pending) - self.hold, 0)
        ready, self.pending = self.pending[:split], self.pending[split:]
        return ready

    def flush(self) -> str:
        rest, self.pending = self.pending, ""
        return rest


def held_before_stops(pieces: Iterator[str], stops: list[str]) -> Iterator[str]:
    """``pieces`` up to the first stop sequence (not included), as soon as each is safe to show."""
    if not stops:
        yield from pieces
        return
    scanner = StopScanner(stops)
    for piece in pieces:
        text = scanner.feed(piece)
        if text:
            yield text
        if scanner.stopped:
            return
    tail = scanner.flush()
    if tail:
        yield tail


def t5_translation_prefix(src: str, tgt: str) -> str:
    """``"translate English to German: "``; ISO codes (``en``, ``de``) become the English names T5 saw."""
    return f"translate {LANGUAGE_NAMES.get(src.lower(), src)} to {LANGUAGE_NAMES.get(tgt.lower(), tgt)}: "


def _needs_languages(what: str, example: str) -> AiforgeError:
    message = f"translation with {what} needs src_lang and tgt_lang"
    return AiforgeError("AF-INPUT-002", message, f"pass e.g. {example}")


def _eos_ids(model_eos: int | list[int] | None, tokenizer_eos: int | None) -> frozenset[int]:
    """Every token that ends a sequence (generation configs may list several, e.g. Llama 3)."""
    ids = model_eos if isinstance(model_eos, list) else [model_eos]
    return frozenset(i for i in [*ids, tokenizer_eos] if i is not None)


def _context_limit(tokenizer: Any, config: Any) -> int:
    """The longest input the model accepts: the smallest of the tokenizer's and the positions' limits."""
    limits = [tokenizer.model_max_length]
    for name in ("max_position_embeddings", "n_positions", "max_source_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            limits.append(value)
    return min(limit for limit in [*limits, _NO_LIMIT] if limit)


@contextlib.contextmanager
def _seeded(seed: int | None, device: str) -> Iterator[None]:
    """Seed torch for one generate() call without disturbing the caller's random state."""
    if seed is None:
        yield
        return
    cuda = [torch.device(device).index or 0] if device.startswith("cuda") else []
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(seed)
        yield


def _check_messages(messages: Any) -> None:
    ok = (
        isinstance(messages, list)
        and messages
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages
        )
    )
    if not ok:
        raise AiforgeError(
            "AF-INPUT-002",
            "chat messages must be a non-empty list of {'role': str, 'content': str} objects",
            'send e.g. [{"role": "user", "content": "Hello"}]',
        )
