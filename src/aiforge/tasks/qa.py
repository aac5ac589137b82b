"""Extractive question answering: the answer is a span of the context, with character offsets.

transformers 5 ships no question-answering pipeline, so this module does the whole job on top of
``AutoModelForQuestionAnswering`` and a fast tokenizer (it needs the offset mapping):

1. ``preprocess`` tokenises ``(question, context)`` with ``truncation="only_second"``: a context
   longer than ``max_length`` becomes several overlapping windows (``stride`` tokens of overlap), so
   no part of the context is ever cut off. A question longer than ``max_question_len`` tokens is cut
   (and the output says ``truncated: true``): it must leave room for the context in every window.
2. ``forward`` runs all windows of all items of a batch through the model at once, then splits the
   start/end logits back per item.
3. ``postprocess`` scores every valid span of every window (``start_logit + end_logit``, start <= end,
   at most ``max_answer_len`` tokens, both ends inside the context), maps token spans to character
   spans of the original context, keeps the best logit of each distinct character span (windows
   overlap, and one character can be several tokens), and turns logits into probabilities with a
   softmax over those distinct candidate spans (plus the null answer when ``handle_impossible_answer``
   is set). Because the answer is always cut from the context by its offsets,
   ``context[start:end] == answer`` holds for every answer.

Example::

    pipe = load_pipeline("question-answering", "./my-korquad-model")
    pipe({"question": "수도는?", "context": "대한민국의 수도는 서울이다."})
    # {"answer": "서울", "score": 0.93, "start": 10, "end": 12, "windows": 1, "truncated": False, ...}
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field, field_validator, model_validator

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.base import Pipeline, RuntimeParams, TaskInput, cut_to_window
from aiforge.tasks.card import WARMUP_TEXT, DemoView, Trainer, register_task

if TYPE_CHECKING:
    import torch
    import transformers
else:
    torch = lazy_module("torch")
    transformers = lazy_module("transformers")

# An item whose context needs very many windows is run in slices of this many windows, so one huge
# document cannot exhaust memory; ordinary batches still go through the model in one call.
MAX_WINDOWS_PER_FORWARD = 64
# Tokenizers report "no limit" as a huge number; anything above this is treated as no limit.
_NO_LIMIT = 1_000_000


class QAInput(TaskInput):
    question: str = Field(min_length=1, description="the question to answer")
    context: str = Field(min_length=1, description="the text that contains the answer")

    @field_validator("question", "context")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must contain text, not only whitespace")
        return value


class QAParams(RuntimeParams):
    top_k: int = Field(1, ge=1, le=100, description="how many answers to return, best first")
    max_length: int = Field(384, ge=32, description="tokens per window (question + context + specials)")
    stride: int = Field(128, ge=0, description="tokens of overlap between consecutive context windows")
    max_answer_len: int = Field(30, ge=1, description="longest answer, in tokens")
    max_question_len: int = Field(64, ge=1, description="longer questions are cut (truncated: true)")
    max_windows: int = Field(
        32, ge=1, description="most context windows per item; a longer context is cut (truncated: true)"
    )
    handle_impossible_answer: bool = Field(
        False, description="allow the empty answer when the model's null ([CLS]) score wins (SQuAD 2.0)"
    )
    trim_particles: bool = Field(
        True,
        description="end an answer before a Korean particle glued to its last token (하석주의 -> 하석주)",
    )

    @model_validator(mode="after")
    def _stride_below_length(self) -> QAParams:
        if self.stride >= self.max_length:
            raise ValueError(f"stride ({self.stride}) must be smaller than max_length ({self.max_length})")
        return self


class QASpan(BaseModel):
    answer: str
    score: float = Field(description="probability: softmax over the distinct candidate spans of all windows")
    start: int = Field(description="character offset in the context; context[start:end] == answer")
    end: int


class QAOutput(QASpan):
    windows: int = Field(description="how many overlapping windows the context needed")
    truncated: bool = Field(
        description="the question was longer than max_question_len tokens, or the context longer than "
        "max_windows windows, and was cut"
    )
    answers: list[QASpan] = Field(description="the top_k answers, best first (the first is the answer above)")
    # With handle_impossible_answer, "no answer" is answer "" with start == end == 0.


@dataclass
class QAFeatures:
    """One item, tokenised: ``windows`` rows of model inputs, plus what maps tokens back to characters."""

    inputs: dict[str, np.ndarray]  # name -> (windows, seq) int64
    offsets: np.ndarray  # (windows, seq, 2) character offsets into the context
    context_mask: np.ndarray  # (windows, seq) bool: token belongs to the context and covers text
    truncated: bool

    @property
    def windows(self) -> int:
        return int(self.context_mask.shape[0])


@dataclass
class QARaw:
    features: QAFeatures
    start_logits: np.ndarray  # (windows, seq)
    end_logits: np.ndarray


@dataclass(frozen=True)
class ScoredSpan:
    start: int  # character offsets; start == end == 0 is the null answer
    end: int
    logit: float
    score: float


# ---- span selection: pure numpy, unit-tested on hand-made logits ----------------------------------
def span_candidates(
    start_logits: np.ndarray, end_logits: np.ndarray, context_mask: np.ndarray, max_answer_len: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All valid token spans of one window: (start indices, end indices, start_logit + end_logit).

    Valid means start <= end, end - start < max_answer_len, and both tokens inside the context.
    """
    length = len(start_logits)
    index = np.arange(length)
    offset = index[None, :] - index[:, None]  # end - start
    valid = (offset >= 0) & (offset < max_answer_len) & context_mask[:, None] & context_mask[None, :]
    starts, ends = np.nonzero(valid)
    return starts, ends, (start_logits[starts] + end_logits[ends]).astype(np.float64)


def rank_spans(
    start_logits: np.ndarray,
    end_logits: np.ndarray,
    offsets: np.ndarray,
    context_mask: np.ndarray,
    max_answer_len: int = 30,
    top_k: int = 1,
    handle_impossible_answer: bool = False,
    context: str | None = None,
) -> list[ScoredSpan]:
    """The ``top_k`` best character spans over all windows of one item, best first.

    Arrays are ``(windows, seq)`` (``offsets`` has a trailing 2). With ``context``, a span ends before
    a Korean particle glued to its last token (:func:`particle_free_ends`). Each distinct character
    span keeps its best logit over windows and tokens; ``score`` is the softmax of that logit over all
    distinct spans. With ``handle_impossible_answer``, the null answer competes with logit
    ``min over windows of start_logits[w, 0] + end_logits[w, 0]`` (the [CLS] position; the minimum, as
    in the original BERT SQuAD 2.0 code: the window most sure that an answer exists decides).
    """
    token_ends = offsets[..., 1] if context is None else particle_free_ends(context, offsets, context_mask)
    char_starts, char_ends, logits = [], [], []
    for w in range(start_logits.shape[0]):
        s, e, span_logits = span_candidates(start_logits[w], end_logits[w], context_mask[w], max_answer_len)
        char_starts.append(offsets[w, s, 0])
        char_ends.append(token_ends[w, e])
        logits.append(span_logits)
    starts, ends, scores = np.concatenate(char_starts), np.concatenate(char_ends), np.concatenate(logits)
    keep = ends > starts  # never an empty or inverted span
    starts, ends, scores = _best_per_char_span(starts[keep], ends[keep], scores[keep])
    if handle_impossible_answer:
        null_logit = float(np.min(start_logits[:, 0] + end_logits[:, 0]))
        starts, ends = np.append(starts, 0), np.append(ends, 0)
        scores = np.append(scores, null_logit)
    if scores.size == 0:
        return []
    probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    order = np.argsort(-scores, kind="stable")[:top_k]
    return [ScoredSpan(int(starts[i]), int(ends[i]), float(scores[i]), float(probs[i])) for i in order]


# Korean particles (josa) that follow a noun, longest first. XLM-R's vocabulary (the packaged e5)
# often glues one to the word's last piece ("▁하", "석", "주의"), so a token-level model cannot end an
# answer before it: the span of 11 % of KorQuAD 1.0's gold answers (3,316 in the bundled part) is
# wider than the answer at the best token boundaries. Ending spans before a glued particle at a
# word's end makes 99.6 % reachable; picked on those training questions (도 and 인 cut more answers than
# they fixed and are left out). On 79 held-out questions: EM 0.30 -> 0.38 (README, question answering).
GLUED_PARTICLES = (
    "에서",
    "으로",
    "에게",
    "부터",
    "까지",
    "은",
    "는",
    "이",
    "가",
    "을",
    "를",
    "의",
    "에",
    "와",
    "과",
    "로",
)


def particle_free_ends(context: str, offsets: np.ndarray, context_mask: np.ndarray) -> np.ndarray:
    """Each token's end offset, moved before a particle of ``GLUED_PARTICLES`` that the token ends with
    when the token holds more than the particle and a word ends there (the next character is not a
    letter or digit): "하석주의 " ends a span at "하석주"; a token that is only the particle, or
    "민주주의자", is left alone."""
    ends = offsets[..., 1].copy()
    for w, t in zip(*np.nonzero(context_mask), strict=True):
        start, end = int(offsets[w, t, 0]), int(offsets[w, t, 1])
        if end < len(context) and context[end].isalnum():
            continue
        for particle in GLUED_PARTICLES:
            if end - len(particle) > start and context.startswith(particle, end - len(particle)):
                ends[w, t] = end - len(particle)
                break
    return ends


def _best_per_char_span(
    starts: np.ndarray, ends: np.ndarray, logits: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Collapse duplicate (start, end) character spans to one entry with the highest logit."""
    if starts.size == 0:
        return starts.astype(np.int64), ends.astype(np.int64), logits
    order = np.lexsort((-logits, ends, starts))  # by span, best logit first within a span
    starts, ends, logits = starts[order], ends[order], logits[order]
    first = np.ones(starts.size, dtype=bool)
    first[1:] = (starts[1:] != starts[:-1]) | (ends[1:] != ends[:-1])
    return starts[first].astype(np.int64), ends[first].astype(np.int64), logits[first]


# ---- windows: shared by inference (the pipeline) and training (aiforge.train.qa) ---------------------
@dataclass(frozen=True)
class WindowSpec:
    """How a (question, context) pair becomes model windows."""

    max_length: int  # tokens per window (question + context + specials)
    stride: int = 128  # tokens of overlap between consecutive context windows
    max_question_len: int = 64  # longer questions are cut
    max_windows: int = 32  # a longer context is cut


def encode_windows(
    tokenizer: Any, question: str, context: str, spec: WindowSpec, input_names: list[str]
) -> QAFeatures:
    """Tokenise ``(question, context)`` into overlapping context windows with character offsets.

    Training encodes its examples with this same function, so the windows a model learns on are the
    windows it answers from.
    """
    specials = tokenizer.num_special_tokens_to_add(pair=True)
    question, truncated = _fit_question(tokenizer, question, spec, specials)
    question_tokens = len(tokenizer(question, add_special_tokens=False)["input_ids"])
    room = spec.max_length - question_tokens - specials  # context tokens per window
    # Half the room at most, so consecutive windows always advance (the tokenizer refuses stride >= room).
    stride = min(spec.stride, room // 2)
    # A 200,000-character context made 1,044 windows (15 s on a tiny model): cut the characters
    # before tokenising, then keep max_windows windows.
    context_in, context_cut = cut_to_window(context, spec.max_windows * (room - stride))
    enc = tokenizer(
        question,
        context_in,
        truncation="only_second",
        max_length=spec.max_length,
        stride=stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="longest",
        return_attention_mask=True,
        return_tensors="np",
    )
    windows = min(len(enc["input_ids"]), spec.max_windows)
    truncated = truncated or context_cut or len(enc["input_ids"]) > windows
    in_context = np.array([[sid == 1 for sid in enc.sequence_ids(w)] for w in range(windows)], dtype=bool)
    raw_offsets = np.asarray(enc["offset_mapping"][:windows], dtype=np.int64)
    offsets = _trim_whitespace(raw_offsets, in_context, context)
    context_mask = in_context & (offsets[..., 1] > offsets[..., 0])
    inputs = {name: np.asarray(enc[name][:windows], dtype=np.int64) for name in input_names if name in enc}
    return QAFeatures(inputs=inputs, offsets=offsets, context_mask=context_mask, truncated=truncated)


def _fit_question(tokenizer: Any, question: str, spec: WindowSpec, specials: int) -> tuple[str, bool]:
    """Cut the question after ``max_question_len`` tokens (at most half a window) at a token boundary."""
    cap = min(spec.max_question_len, (spec.max_length - specials) // 2)
    question, cut = cut_to_window(question, cap + 1)  # a huge question is never tokenised whole
    enc = tokenizer(
        question,
        add_special_tokens=False,
        truncation=True,
        max_length=cap + 1,  # one over the cap says "too long" without tokenising a huge question
        return_offsets_mapping=True,
    )
    if len(enc["input_ids"]) <= cap:
        return question, cut
    return question[: enc["offset_mapping"][cap - 1][1]], True


def answer_tokens(features: QAFeatures, window: int, start: int, end: int) -> tuple[int, int]:
    """The token span of characters ``[start, end)`` in one window; ``(0, 0)`` (the [CLS] position,
    "no answer here") when the window does not hold the whole answer. The training label."""
    mask = features.context_mask[window]
    tokens = np.nonzero(mask)[0]
    if tokens.size == 0:
        return 0, 0
    offsets = features.offsets[window]
    if offsets[tokens[0], 0] > start or offsets[tokens[-1], 1] < end:
        return 0, 0
    first = tokens[offsets[tokens, 1] > start]
    last = tokens[offsets[tokens, 0] < end]
    if first.size == 0 or last.size == 0 or first[0] > last[-1]:
        return 0, 0
    return int(first[0]), int(last[-1])


# ---- answer scores: KorQuAD 1.0's official evaluation (training reports and rag eval) -------------------
def normalize_answer(text: str) -> str:
    """KorQuAD's normalisation: drop quotes and brackets, punctuation, case, extra whitespace."""
    text = re.sub(r"['\"《》<>〈〉()‘’]", " ", text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCTUATION)
    return " ".join(text.split())


_PUNCTUATION = frozenset(string.punctuation)


def exact_match(prediction: str, truth: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(truth))


def f1_score(prediction: str, truth: str) -> float:
    """Character-level F1 over the normalised, whitespace-free strings (KorQuAD's definition)."""
    pred = list(normalize_answer(prediction).replace(" ", ""))
    gold = list(normalize_answer(truth).replace(" ", ""))
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def best_over_truths(metric: Callable[[str, str], float], prediction: str, truths: list[str]) -> float:
    return max((metric(prediction, t) for t in truths), default=0.0)


# What `aiforge train` starts from (model: auto): online a Korean RoBERTa, offline the packaged e5.
QA_BACKBONES = ("klue/roberta-small", "packaged:multilingual-e5-small-hf")


# ---- the pipeline -----------------------------------------------------------------------------------
def _qa_warmup(params: dict[str, Any]) -> dict[str, str]:
    return {"question": "무엇을 준비하나요?", "context": WARMUP_TEXT}


@register_task(
    "question-answering",
    summary="extractive QA: the answer span of a context, with character offsets",
    hub_default="monologg/koelectra-small-v3-finetuned-korquad",
    offline_default="registry:korquad-qa@production",
    offline_build="aiforge train examples/korquad-qa.yaml",
    aliases=("qa",),
    request_params=(
        "top_k",
        "max_answer_len",
        "max_question_len",
        "handle_impossible_answer",
        "trim_particles",
    ),
    warmup=_qa_warmup,
    demo=DemoView("question-context", "answer"),
    architectures=("ForQuestionAnswering",),
    trainer=Trainer("aiforge.train.qa:QuestionAnsweringTask", "qa", QA_BACKBONES),
)
class QuestionAnswering(Pipeline):
    """Extractive QA over any ``AutoModelForQuestionAnswering`` checkpoint (BERT, ELECTRA, RoBERTa...).

    ``pipe.predict([{"question": q, "context": c}, ...])`` -> one ``QAOutput`` dict per record.
    """

    Input = QAInput
    Output = QAOutput
    Params = QAParams
    backend: ClassVar[str] = "transformers"
    primary_field: ClassVar[str | None] = None
    default_batch_size: ClassVar[int] = 8

    params: QAParams

    def setup(self) -> None:
        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        if not getattr(self.tokenizer, "is_fast", False):
            raise AiforgeError(
                "AF-MODEL-003",
                f"question answering needs a fast tokenizer (character offsets); '{location}' has a slow one",
                "save a tokenizer.json beside the model (AutoTokenizer.from_pretrained(..., use_fast=True))",
            )
        model, info = transformers.AutoModelForQuestionAnswering.from_pretrained(
            location, output_loading_info=True
        )
        if info["missing_keys"]:
            missing = ", ".join(sorted(info["missing_keys"])[:4])
            raise AiforgeError(
                "AF-MODEL-003",
                f"model '{self.model_ref.describe()}' has no trained question-answering head "
                f"(missing weights: {missing}); its answers would be random",
                "use a model fine-tuned for extractive QA (monologg/koelectra-small-v3-finetuned-korquad)",
            )
        self.model = model.to(self.device).eval()
        self.call_model: Any = self.model  # what forward calls (ONNX Runtime swaps itself in: onnxrt.py)
        self.runtime, self.precision = "torch", "fp32"
        self.max_length = min(self.params.max_length, *self._model_limits())
        # attention_mask always: windows are padded to one width, and padding must not be attended.
        uses_types = "token_type_ids" in self.tokenizer.model_input_names
        self.input_names = ["input_ids", "attention_mask", *(["token_type_ids"] if uses_types else [])]
        self.choose_forward()

    def _model_limits(self) -> list[int]:
        """The longest sequence the tokenizer and the position embeddings allow."""
        limits = [self.tokenizer.model_max_length]
        limits.append(getattr(self.model.config, "max_position_embeddings", None) or _NO_LIMIT)
        return [limit for limit in limits if limit < _NO_LIMIT] or [_NO_LIMIT]

    # ---- preprocess ---------------------------------------------------------------------------------
    def preprocess(self, item: QAInput) -> QAFeatures:  # type: ignore[override]
        return encode_windows(
            self.tokenizer,
            item.question,
            item.context,
            WindowSpec(
                self.max_length, self.params.stride, self.params.max_question_len, self.params.max_windows
            ),
            self.input_names,
        )

    def length(self, features: QAFeatures) -> int:
        """Tokens over all windows (padding excluded): what the item costs the model."""
        return int(features.inputs["attention_mask"].sum())

    # ---- forward ------------------------------------------------------------------------------------
    def forward(self, batch: list[QAFeatures]) -> list[QARaw]:
        """All windows of all items in one model call (sliced only past MAX_WINDOWS_PER_FORWARD)."""
        width = max(f.context_mask.shape[1] for f in batch)
        stacked = {
            name: np.concatenate([_pad_right(f.inputs[name], width, self._pad_value(name)) for f in batch])
            for name in batch[0].inputs
        }
        total = next(iter(stacked.values())).shape[0]
        starts, ends = [], []
        with torch.inference_mode():
            for lo in range(0, total, MAX_WINDOWS_PER_FORWARD):
                tensors = {
                    k: torch.from_numpy(v[lo : lo + MAX_WINDOWS_PER_FORWARD]).to(self.device)
                    for k, v in stacked.items()
                }
                out = self.call_model(**tensors)
                starts.append(out.start_logits.float().cpu().numpy())
                ends.append(out.end_logits.float().cpu().numpy())
        start_logits, end_logits = np.concatenate(starts), np.concatenate(ends)
        raws, row = [], 0
        for f in batch:
            rows, cols = slice(row, row + f.windows), slice(0, f.context_mask.shape[1])
            raws.append(QARaw(f, start_logits[rows, cols], end_logits[rows, cols]))
            row += f.windows
        return raws

    def _pad_value(self, name: str) -> int:
        return (self.tokenizer.pad_token_id or 0) if name == "input_ids" else 0

    # ---- postprocess --------------------------------------------------------------------------------
    def postprocess(self, raw: QARaw, item: QAInput) -> dict[str, Any]:  # type: ignore[override]
        f = raw.features
        spans = rank_spans(
            raw.start_logits,
            raw.end_logits,
            f.offsets,
            f.context_mask,
            max_answer_len=self.params.max_answer_len,
            top_k=self.params.top_k,
            handle_impossible_answer=self.params.handle_impossible_answer,
            context=item.context if self.params.trim_particles else None,
        )
        answers = [_cut_answer(item.context, span) for span in spans]
        best = answers[0] if answers else QASpan(answer="", score=0.0, start=0, end=0)
        return QAOutput(
            **best.model_dump(), windows=f.windows, truncated=f.truncated, answers=answers
        ).model_dump()


def _trim_whitespace(offsets: np.ndarray, in_context: np.ndarray, context: str) -> np.ndarray:
    """Shrink context-token offsets to exclude whitespace, so no answer starts or ends with a space.

    SentencePiece tokenizers (XLM-R, mDeBERTa) may give a word's token the space before it; BERT's do
    not. A token that covers only whitespace ends up empty and is never part of an answer.
    """
    offsets = offsets.copy()
    for w, t in zip(*np.nonzero(in_context), strict=True):
        start, end = offsets[w, t]
        while start < end and context[start].isspace():
            start += 1
        while end > start and context[end - 1].isspace():
            end -= 1
        offsets[w, t] = (start, end)
    return offsets


def _cut_answer(context: str, span: ScoredSpan) -> QASpan:
    """The answer is always the context sliced at the span's offsets, so ``context[start:end] == answer``."""
    return QASpan(answer=context[span.start : span.end], score=span.score, start=span.start, end=span.end)


def _pad_right(array: np.ndarray, width: int, value: int) -> np.ndarray:
    """Pad ``(rows, seq)`` on the right to ``width`` columns (models attend only where the mask is 1)."""
    missing = width - array.shape[1]
    return np.pad(array, ((0, 0), (0, missing)), constant_values=value) if missing else array
