"""Task registry: one task name resolves to one Pipeline class and one default model.

Classes are named by ``"module:Class"`` strings and imported on lookup, so listing tasks
never imports torch, transformers or any family module.
"""

from __future__ import annotations

import difflib
import importlib
import os
import socket
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from aiforge.errors import AiforgeError
from aiforge.models import PACKAGED, ModelRef, hub_cached, load_error, resolve

if TYPE_CHECKING:
    from aiforge.tasks.base import Pipeline


@dataclass(frozen=True)
class TaskSpec:
    name: str
    impl: str  # "aiforge.tasks.text:TextClassification"
    hub_default: str | None  # the model a user who is online gets
    offline_default: str | None  # packaged name (or registry ref) that works offline
    extra: str  # the aiforge extra the task needs
    summary: str

    def load_class(self) -> type[Pipeline]:
        module_name, class_name = self.impl.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise AiforgeError(
                "AF-DEP-001",
                f"task '{self.name}' needs a package that is not installed ({exc.name})",
                f'pip install "aiforge[{self.extra}]"',
            ) from exc
        return getattr(module, class_name)


TASKS: dict[str, TaskSpec] = {
    s.name: s
    for s in [
        TaskSpec(
            "text-classification",
            "aiforge.tasks.text:TextClassification",
            "sangrimlee/bert-base-multilingual-cased-nsmc",
            "registry:nsmc-sentiment@production",
            "ml",
            "label a text (sentiment, topic...)",
        ),
        TaskSpec(
            "token-classification",
            "aiforge.tasks.text:TokenClassification",
            "Davlan/bert-base-multilingual-cased-ner-hrl",
            None,
            "ml",
            "named entities, grouped into spans with character offsets",
        ),
        TaskSpec(
            "fill-mask",
            "aiforge.tasks.text:FillMask",
            "FacebookAI/xlm-roberta-base",
            None,
            "ml",
            "predict the masked token",
        ),
        TaskSpec(
            "zero-shot-classification",
            "aiforge.tasks.text:ZeroShotClassification",
            "MoritzLaurer/mDeBERTa-v3-base-mnli-xnli",
            "multilingual-e5-small",
            "ml",
            "label a text with labels chosen at call time (NLI model, or embedding similarity offline)",
        ),
        TaskSpec(
            "sentence-embeddings",
            "aiforge.tasks.embeddings:SentenceEmbeddings",
            "intfloat/multilingual-e5-small",
            "multilingual-e5-small",
            "ml",
            "L2-normalised sentence vectors (sentence-transformers, or the packaged e5 runtime)",
        ),
        TaskSpec(
            "text-generation",
            "aiforge.tasks.generation:TextGeneration",
            "google/gemma-3-270m",
            None,
            "ml",
            "continue a prompt (causal LM)",
        ),
        TaskSpec(
            "text2text-generation",
            "aiforge.tasks.generation:Text2TextGeneration",
            "google/flan-t5-small",
            None,
            "ml",
            "sequence-to-sequence generation (AutoModelForSeq2SeqLM)",
        ),
        TaskSpec(
            "summarization",
            "aiforge.tasks.generation:Summarization",
            "facebook/bart-large-cnn",
            None,
            "ml",
            "summarise a text (seq2seq)",
        ),
        TaskSpec(
            "translation",
            "aiforge.tasks.generation:Translation",
            "Helsinki-NLP/opus-mt-ko-en",
            None,
            "ml",
            "translate a text (seq2seq)",
        ),
        TaskSpec(
            "question-answering",
            "aiforge.tasks.qa:QuestionAnswering",
            "monologg/koelectra-small-v3-finetuned-korquad",
            None,
            "ml",
            "extractive QA: the answer span of a context, with character offsets",
        ),
        TaskSpec(
            "image-classification",
            "aiforge.tasks.vision:ImageClassification",
            "timm:efficientnet_lite0",
            "efficientnet-lite0",
            "ml",
            "ImageNet labels for an image (timm or transformers)",
        ),
        TaskSpec(
            "object-detection",
            "aiforge.tasks.vision:ObjectDetection",
            "facebook/detr-resnet-50",
            None,
            "ml",
            "boxes with labels and scores",
        ),
        TaskSpec(
            "image-segmentation",
            "aiforge.tasks.vision:ImageSegmentation",
            "nvidia/segformer-b0-finetuned-ade-512-512",
            None,
            "ml",
            "per-class masks",
        ),
        TaskSpec(
            "mask-generation",
            "aiforge.tasks.vision:MaskGeneration",
            "facebook/sam-vit-base",
            None,
            "ml",
            "SAM masks for point prompts",
        ),
        TaskSpec(
            "image-to-text",
            "aiforge.tasks.vision:ImageToText",
            "Salesforce/blip-image-captioning-base",
            None,
            "ml",
            "caption an image",
        ),
        TaskSpec(
            "ocr", "aiforge.tasks.ocr:OCR", "rapidocr", "rapidocr", "ocr", "text lines with boxes and scores"
        ),
        TaskSpec(
            "automatic-speech-recognition",
            "aiforge.tasks.audio:SpeechRecognition",
            "openai/whisper-base",
            "whisper-base",
            "audio",
            "transcribe speech with timestamps and language detection (faster-whisper or transformers)",
        ),
        TaskSpec(
            "audio-classification",
            "aiforge.tasks.audio:AudioClassification",
            "MIT/ast-finetuned-audioset-10-10-0.4593",
            None,
            "audio",
            "label a sound clip",
        ),
        TaskSpec(
            "text-to-audio",
            "aiforge.tasks.audio:TextToAudio",
            "facebook/mms-tts-kor",
            None,
            "audio",
            "synthesise speech (VITS / MMS-TTS) to a WAV file",
        ),
    ]
}

ALIASES = {
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
    "qa": "question-answering",
    "embeddings": "sentence-embeddings",
    "feature-extraction": "sentence-embeddings",
    "asr": "automatic-speech-recognition",
    "speech-recognition": "automatic-speech-recognition",
    "tts": "text-to-audio",
    "text-to-speech": "text-to-audio",
    "captioning": "image-to-text",
    "sam": "mask-generation",
}


def get_task(name: str) -> TaskSpec:
    name = ALIASES.get(name, name)
    if name in TASKS:
        return TASKS[name]
    close = difflib.get_close_matches(name, list(TASKS) + list(ALIASES), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(repr(c) for c in close)}? " if close else ""
    raise AiforgeError("AF-TASK-001", f"unknown task '{name}'", f"{hint}`aiforge tasks` lists the tasks")


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers; false fast when offline mode is set."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout):
            return True
    except OSError:
        return False


def _offline_default_available(spec: TaskSpec) -> bool:
    if spec.offline_default is None:
        return False
    if spec.offline_default.startswith("registry:"):
        try:
            resolve(spec.offline_default, spec.name)
            return True
        except AiforgeError:
            return False
    packaged = PACKAGED.get(spec.offline_default)
    return packaged is not None and packaged.available()


def default_model_ref(spec: TaskSpec) -> str:
    """The hub default when it is cached or the hub answers; else the offline default."""
    if spec.hub_default and (spec.hub_default.startswith("timm:") is False and hub_cached(spec.hub_default)):
        return spec.hub_default
    if _offline_default_available(spec):
        return spec.offline_default  # type: ignore[return-value]
    if spec.hub_default and hub_reachable():
        return spec.hub_default
    if spec.offline_default:
        return spec.offline_default  # resolve() will say how to install it
    if spec.hub_default:
        return spec.hub_default  # resolve()/load will say it is not available offline
    raise AiforgeError("AF-MODEL-001", f"task '{spec.name}' has no default model", "pass --model")


def default_status(spec: TaskSpec) -> dict[str, Any]:
    """For `aiforge models`: the defaults of a task and whether each works offline now."""
    return {
        "task": spec.name,
        "hub_default": spec.hub_default,
        "hub_cached": bool(
            spec.hub_default and not spec.hub_default.startswith("timm:") and hub_cached(spec.hub_default)
        ),
        "offline_default": spec.offline_default,
        "offline_available": _offline_default_available(spec),
    }


def quiet_libraries() -> None:
    """Library progress bars and load reports drown aiforge's own output; keep warnings and errors."""
    try:
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.utils.logging.disable_progress_bar()
    except ImportError:
        pass


def load_pipeline(task: str, model: str | None = None, device: str = "auto", **params: Any) -> Pipeline:
    """The one way to get a ready pipeline: used by the CLI, the server and the Python API."""
    from aiforge.tasks.base import resolve_device

    spec = get_task(task)
    cls = spec.load_class()
    quiet_libraries()
    ref: ModelRef = resolve(model or default_model_ref(spec), spec.name)
    pipe = cls(ref, device=resolve_device(device), **params)
    try:
        pipe.ensure_setup()
    except AiforgeError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        # hub unreachable, wrong architecture for the task, corrupt weights: say which and what to do
        raise load_error(ref, spec.name, exc) from exc
    return pipe
