"""The model and sample inputs the task contract test (``tests/tasks/test_contract.py``) runs each task on.

One entry per registered task (``aiforge.tasks.task_cards()``). A task added without an entry here fails
the contract test, which names the missing entry. An entry is:

* ``build``: directory -> the ``--model`` reference to load; a tiny random model from ``tests/tiny_models``
  (never downloaded), or a packaged offline model where the task has no tiny one (OCR);
* ``inputs``: two or more inputs of different sizes, as ``pipe.predict`` takes them (media as bytes);
* ``params``: load-time parameters (kept small: few generated tokens);
* ``demo``: the values the task's demo widgets hold for ``inputs[0]`` (a text, a question and a
  context, a file path is written from the bytes by the test);
* ``malformed``: a JSON input the HTTP predict route must refuse with a 4xx (default: a record without
  the task's required field);
* ``batch_dependent``: why an input's output may change with the inputs batched beside it (a known
  exception to the contract, stated; empty for every deterministic task).

Example for a new task ``my-task``::

    "my-task": ContractModel(
        build=lambda d: make_tiny_bert(d, head="seq-cls"),
        inputs=["short", "a longer text"],
    ),
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from tests.tiny_clip import make_tiny_clip
from tests.tiny_models import (
    make_tiny_ast,
    make_tiny_bert,
    make_tiny_detr,
    make_tiny_gpt2,
    make_tiny_musicgen,
    make_tiny_sam,
    make_tiny_segformer,
    make_tiny_t5,
    make_tiny_vilt,
    make_tiny_vit_classifier,
    make_tiny_vit_gpt2,
    make_tiny_vits,
    make_tiny_whisper,
)

SAMPLING_RATE = 16000
SENTENCES = ["이 영화 정말 재미있어요", "the quick brown fox jumps over the lazy dog, twice over"]
CONTEXT = "aiforge는 2026년에 서울에서 만들어졌다. It serves models over HTTP with dynamic batching."
NOT_MEDIA = "bm90IGFuIGltYWdlIG9yIGEgY2xpcA=="  # base64 of "not an image or a clip"


def png(width: int, height: int, seed: int) -> bytes:
    """A random RGB image as PNG upload bytes."""
    pixels = np.random.default_rng(seed).integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def wav(seconds: float, seed: int) -> bytes:
    """Quiet noise at 16 kHz as WAV upload bytes."""
    import soundfile

    samples = np.random.default_rng(seed).standard_normal(int(seconds * SAMPLING_RATE)) * 0.1
    buffer = io.BytesIO()
    soundfile.write(buffer, samples.astype(np.float32), SAMPLING_RATE, format="WAV")
    return buffer.getvalue()


@dataclass(frozen=True)
class ContractModel:
    build: Callable[[Path], Path | str]
    inputs: list[Any]
    params: dict[str, Any] = field(default_factory=dict)
    # None: the text of inputs[0], or its media as a file; a media task: the widgets after the upload
    demo: tuple[Any, ...] | None = None
    malformed: Any = field(default_factory=lambda: {"unexpected_field": 1})
    slow: bool = False  # marked @pytest.mark.slow (still run in CI)
    # Why an input's output may depend on the inputs batched with it; empty: it must not.
    batch_dependent: str = ""


# records, not bare bytes: the vision pipelines take bare strings (paths, base64) but not bare bytes, which
# OCR and the audio tasks take (the contract test's report to issue 15 notes it)
IMAGES = [{"image": png(64, 48, seed=0)}, {"image": png(40, 90, seed=1)}]
CLIPS = [wav(1.0, seed=0), wav(0.5, seed=1)]
LABELS = {0: "부정", 1: "긍정"}
NLI_LABELS = {0: "entailment", 1: "neutral", 2: "contradiction"}
GENERATE = {"max_new_tokens": 4}

CONTRACT_MODELS: dict[str, ContractModel] = {
    "text-classification": ContractModel(
        build=lambda d: make_tiny_bert(d, head="seq-cls", id2label=LABELS), inputs=SENTENCES
    ),
    "token-classification": ContractModel(
        build=lambda d: make_tiny_bert(d, head="token-cls", id2label={0: "O", 1: "B-PER", 2: "I-PER"}),
        inputs=SENTENCES,
    ),
    "fill-mask": ContractModel(
        build=lambda d: make_tiny_bert(d, head="mlm"),
        inputs=["the capital of france is [MASK].", "a [MASK] day"],
    ),
    "zero-shot-classification": ContractModel(
        build=lambda d: make_tiny_bert(d, head="seq-cls", id2label=NLI_LABELS),
        inputs=[*SENTENCES, {"text": "per-item labels", "candidate_labels": ["a", "b", "c"]}],
        params={"candidate_labels": ["영화", "동물"]},
        demo=(SENTENCES[0], "영화, 동물"),
    ),
    "sentence-embeddings": ContractModel(build=lambda d: "packaged:all-minilm-l6-v2", inputs=SENTENCES),
    "text-generation": ContractModel(build=make_tiny_gpt2, inputs=SENTENCES, params=GENERATE),
    "text2text-generation": ContractModel(build=make_tiny_t5, inputs=SENTENCES, params=GENERATE),
    "summarization": ContractModel(build=make_tiny_t5, inputs=SENTENCES, params=GENERATE),
    "translation": ContractModel(
        build=make_tiny_t5, inputs=SENTENCES, params={**GENERATE, "src_lang": "en", "tgt_lang": "de"}
    ),
    "question-answering": ContractModel(
        build=lambda d: make_tiny_bert(d, head="qa"),
        inputs=[
            {"question": "어디서 만들어졌나?", "context": CONTEXT},
            {"question": "what does it serve?", "context": CONTEXT * 3},
        ],
        demo=("어디서 만들어졌나?", CONTEXT),
    ),
    "image-classification": ContractModel(
        build=lambda d: make_tiny_vit_classifier(d, ["cat", "dog", "bird"]),
        inputs=IMAGES,
        malformed=NOT_MEDIA,
    ),
    "object-detection": ContractModel(
        build=make_tiny_detr, inputs=IMAGES, params={"threshold": 0.0}, malformed=NOT_MEDIA
    ),
    "image-segmentation": ContractModel(build=make_tiny_segformer, inputs=IMAGES, malformed=NOT_MEDIA),
    "mask-generation": ContractModel(
        build=make_tiny_sam,
        inputs=[IMAGES[0], {**IMAGES[1], "points": [[5, 5], [30, 60]]}],
        # no filtering: a random tiny SAM's candidates score near 0 (a trained one: tests/tasks/test_sam.py)
        params={"points_per_side": 2, "pred_iou_thresh": 0.0, "stability_score_thresh": 0.0},
        malformed=NOT_MEDIA,
    ),
    "image-to-text": ContractModel(
        build=make_tiny_vit_gpt2, inputs=IMAGES, params=GENERATE, malformed=NOT_MEDIA
    ),
    # no tiny OCR model exists: the packaged PP-OCRv4 (ONNX, ~15 MB) reads a small image quickly
    "ocr": ContractModel(build=lambda d: "packaged:rapidocr", inputs=IMAGES, malformed=NOT_MEDIA, slow=True),
    # a forced language and 12 tokens a window: per-clip language detection and 48 random tokens took
    # 35 s a predict; now ~7 s (generate's timestamp logits processor over the 51,865-token vocabulary)
    "automatic-speech-recognition": ContractModel(
        build=lambda d: make_tiny_whisper(d, max_length=12),
        inputs=CLIPS,
        params={"language": "en"},
        malformed=NOT_MEDIA,
        slow=True,
    ),
    "audio-classification": ContractModel(
        build=lambda d: make_tiny_ast(d, ["speech", "music", "silence"]), inputs=CLIPS, malformed=NOT_MEDIA
    ),
    "text-to-audio": ContractModel(
        build=make_tiny_vits,
        inputs=["hello world", "a longer sentence to say"],
    ),
    "text-to-music": ContractModel(
        build=make_tiny_musicgen,
        inputs=["soft piano", "a fast drum and bass loop with a deep synth"],
        params={"duration": 0.05},
    ),
    "zero-shot-image-classification": ContractModel(
        build=make_tiny_clip,
        inputs=[IMAGES[0], {**IMAGES[1], "candidate_labels": ["a cat", "a dog", "a bird"]}],
        params={"candidate_labels": ["red", "blue"]},
        demo=("red, blue",),  # the labels box beside the uploaded image
        malformed=NOT_MEDIA,
    ),
    "visual-question-answering": ContractModel(
        build=lambda d: make_tiny_vilt(d, ["yes", "no", "two", "red"]),
        inputs=[
            {**IMAGES[0], "question": "is it red?"},
            {**IMAGES[1], "question": "how many shapes are there?"},
        ],
        params={"top_k": 2},
        demo=("is it red?",),  # the question box beside the uploaded image
        malformed=NOT_MEDIA,
    ),
    "image-text-embeddings": ContractModel(
        build=make_tiny_clip, inputs=[IMAGES[0], {"text": "a red circle"}, IMAGES[1]], malformed=NOT_MEDIA
    ),
}
