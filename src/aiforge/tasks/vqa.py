"""Visual question answering: a question about an image, answered from the image.

Two kinds of model answer it, and the folder's model class says which:

* **classifiers** over a fixed answer vocabulary (ViLT fine-tuned on VQAv2, the hub default): every
  label of the model is a possible answer, scored by its own sigmoid (ViLT was trained with binary
  cross-entropy against VQA's soft scores, so the scores do not sum to 1); the best ``top_k`` return;
* **generators** (BLIP's VQA model, BLIP-2): the answer is generated text, ``score`` is null.

transformers 5 dropped its ``visual-question-answering`` pipeline; this task drives the models the
``AutoModelForVisualQuestionAnswering`` mapping names (ViLT, BLIP, BLIP-2) with their own processor.
No VQA weights ship as a package, so the task has a hub default and no offline one.

Example::

    from aiforge.tasks import load_pipeline
    pipe = load_pipeline("visual-question-answering")
    pipe({"image": "kitchen.jpg", "question": "how many cups are there?"})
    # aiforge run vqa kitchen.jpg -p question='how many cups are there?'
    # {"answer": "2", "score": 0.91, "answers": [{"answer": "2", "score": 0.91}, ...]}
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.tasks.base import TaskParams
from aiforge.tasks.card import DemoView, register_task
from aiforge.tasks.images import ImageInput, warm_image
from aiforge.tasks.vision import _Features, _hf_features, _hf_load, _run_grouped, _VisionPipeline

__all__ = ["VisualQuestionAnswering"]

VQA_HUB_DEFAULT = "dandelin/vilt-b32-finetuned-vqa"


class VQAInput(ImageInput):
    question: str | None = Field(
        None, min_length=1, description="a question about the image (else the question parameter)"
    )


class VQAParams(TaskParams):
    question: str | None = Field(
        None, min_length=1, description="the question asked of every image given without one"
    )
    top_k: int = Field(
        3, ge=1, le=100, description="classifier models: how many answers to return, best first"
    )
    max_new_tokens: int = Field(
        10, ge=1, le=128, description="generator models: upper bound on answer tokens"
    )


class ScoredAnswer(BaseModel):
    answer: str
    score: float | None = Field(description="the answer's sigmoid (classifier models); null when generated")


class VQAOutput(BaseModel):
    answer: str = Field(description="the best answer")
    score: float | None = Field(description="its score (classifier models); null for generated answers")
    answers: list[ScoredAnswer] = Field(description="top_k answers, best first (one when generated)")


def _vqa_warmup(params: dict[str, Any]) -> dict[str, Any]:
    return {**warm_image(params), "question": "what is in the picture?"}


@register_task(
    "visual-question-answering",
    summary="answer a question about an image (ViLT, BLIP)",
    hub_default=VQA_HUB_DEFAULT,
    aliases=("vqa",),
    request_params=("question", "top_k", "max_new_tokens"),
    warmup=_vqa_warmup,
    demo=DemoView("image-question", "label"),
    architectures=("ViltForQuestionAnswering", "BlipForQuestionAnswering"),
)
class VisualQuestionAnswering(_VisionPipeline):
    """Answer a question about an image::

    pipe = load_pipeline("visual-question-answering", model="dandelin/vilt-b32-finetuned-vqa")
    pipe({"image": "photo.jpg", "question": "what colour is the car?"})["answer"]   # "red"
    """

    Input = VQAInput
    Output = VQAOutput
    Params = VQAParams
    params: VQAParams
    default_batch_size = 8

    def setup(self) -> None:
        from transformers import AutoModelForVisualQuestionAnswering, AutoProcessor

        self._processor = AutoProcessor.from_pretrained(self.model_ref.location)
        self._model = _hf_load(AutoModelForVisualQuestionAnswering, self.model_ref, self.device)
        self._generates = bool(self._model.can_generate())
        config = self._model.config
        text_config = getattr(config, "text_config", None) or config
        # the processor's own default window is not the model's (ViltProcessor cut at 128 tokens)
        self._max_tokens = getattr(text_config, "max_position_embeddings", None)

    def preprocess(self, item: VQAInput) -> _Features:  # type: ignore[override]
        question = item.question or self.params.question
        if not question:
            raise AiforgeError(
                "AF-INPUT-002",
                "visual-question-answering needs a question about the image",
                "add a \"question\" field to the record, or pass -p question='what colour is the car?'",
            )
        # a question longer than the text window is cut to it (ViLT: 40 tokens), not an index error
        image = self._image(item)
        return _hf_features(
            self._processor, image, text=question, truncation=True, max_length=self._max_tokens
        )

    def forward(self, batch: list[_Features]) -> list[list[tuple[str, float | None]]]:
        # Questions of different token lengths form separate groups (no padding across requests):
        # on CPU a batch costs about the same per item as single runs (see vision._run_grouped).
        return _run_grouped(batch, self._generate if self._generates else self._classify, self.device)

    def _classify(self, tensors: dict[str, Any], _: list[_Features]) -> list[list[tuple[str, float | None]]]:
        scores = self._model(**tensors).logits.float().sigmoid()
        k = min(self.params.top_k, scores.shape[-1])
        top = scores.topk(k, dim=-1)
        labels = self._model.config.id2label
        return [
            [(str(labels[int(i)]), float(s)) for s, i in zip(values, indices, strict=True)]
            for values, indices in zip(top.values, top.indices, strict=True)
        ]

    def _generate(self, tensors: dict[str, Any], _: list[_Features]) -> list[list[tuple[str, float | None]]]:
        sequences = self._model.generate(**tensors, max_new_tokens=self.params.max_new_tokens)
        texts = self._processor.batch_decode(sequences, skip_special_tokens=True)
        return [[(text.strip(), None)] for text in texts]

    def postprocess(self, raw: list[tuple[str, float | None]], item: VQAInput) -> dict[str, Any]:  # type: ignore[override]
        answers = [{"answer": answer, "score": score} for answer, score in raw]
        return {"answer": answers[0]["answer"], "score": answers[0]["score"], "answers": answers}
