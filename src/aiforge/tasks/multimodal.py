"""Image and text in one space: zero-shot image classification and image-text embeddings (CLIP, SigLIP).

A CLIP-style model has two towers, an image encoder and a text encoder, trained so that an image
and a caption of it land close together. Two tasks use them:

* ``zero-shot-image-classification``: labels chosen at call time. Each label is put into the
  ``hypothesis_template`` ("a photo of a {}."), embedded by the text tower, and scored against the
  image: softmax over the labels for CLIP, an independent sigmoid per label for SigLIP (each
  model's own training objective);
* ``image-text-embeddings``: one L2-normalised vector per image or per text, in the shared space,
  so a dot product ranks images for a text query (the image RAG index uses this, ``rag/embed.py``).

Any transformers model with ``get_image_features`` and ``get_text_features`` works (``CLIPModel``,
``SiglipModel``, ``Siglip2Model``...), with whatever tokenizer and image processor its folder holds.
No CLIP or SigLIP weights ship as a package, so these tasks have a hub default and no offline one.

Example::

    from aiforge.tasks import load_pipeline
    pipe = load_pipeline("zero-shot-image-classification", candidate_labels=["cat", "dog"])
    pipe("photo.jpg")   # {"labels": ["cat", "dog"], "scores": [0.93, 0.07], ...}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import BaseModel, Field, model_validator

from aiforge.errors import AiforgeError
from aiforge.lazy import lazy_module
from aiforge.media import load_image
from aiforge.models import ModelRef
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, register_task
from aiforge.tasks.images import ImageInput, warm_image

if TYPE_CHECKING:
    import torch
else:
    torch = lazy_module("torch")

__all__ = [
    "DualEncoder",
    "ImageTextEmbeddings",
    "ZeroShotImageClassification",
    "is_image_text_model",
    "load_dual_encoder",
]

CLIP_HUB_DEFAULT = "openai/clip-vit-base-patch32"
# SigLIP was trained on texts padded to 64 tokens; shorter padding changes its text embeddings.
SIGLIP_TEXT_TOKENS = 64


@dataclass
class DualEncoder:
    """A loaded CLIP-style model: both towers, their preprocessing, how similarity becomes logits."""

    model: Any
    tokenizer: Any
    image_processor: Any
    device: str
    sigmoid: bool  # SigLIP scores each label on its own; CLIP's scores are a softmax over the labels
    max_text_tokens: int

    def pixels(self, image: Any) -> torch.Tensor:
        """One PIL image -> its (1, 3, H, W) pixel tensor (every image is resized to the model's size)."""
        return self.image_processor(images=image, return_tensors="pt")["pixel_values"]

    def embed_pixels(self, pixels: list[torch.Tensor]) -> torch.Tensor:
        """Pixel tensors -> (n, dim) L2-normalised image embeddings, in one forward."""
        batch = torch.cat(pixels).to(self.device)
        return _normalised(_features(self.model.get_image_features(pixel_values=batch)))

    def embed_texts(self, texts: list[str]) -> torch.Tensor:
        """Texts -> (n, dim) L2-normalised text embeddings, in one forward (cut at the model's window)."""
        padding: Any = "max_length" if self.sigmoid else True
        encoded = self.tokenizer(
            texts, padding=padding, truncation=True, max_length=self.max_text_tokens, return_tensors="pt"
        )
        inputs = {k: v.to(self.device) for k, v in encoded.items() if k in ("input_ids", "attention_mask")}
        if self.sigmoid:  # SigLIP pools the last token and was trained without an attention mask
            inputs.pop("attention_mask", None)
        return _normalised(_features(self.model.get_text_features(**inputs)))

    def logits(self, images: torch.Tensor, texts: torch.Tensor) -> torch.Tensor:
        """(n_images, n_texts) logits from normalised embeddings, at the model's learnt scale (and bias)."""
        scale = self.model.logit_scale.exp()
        logits = images @ texts.T * scale
        bias = getattr(self.model, "logit_bias", None)
        return logits + bias if bias is not None else logits


def _features(output: Any) -> torch.Tensor:
    """The projected embedding: transformers 5 returns it as ``pooler_output`` of a model output."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalised(vectors: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(vectors.float(), dim=-1)


def load_dual_encoder(ref: ModelRef, device: str) -> DualEncoder:
    """The model, tokenizer and image processor of a CLIP-style folder or hub id."""
    from transformers import AutoImageProcessor, AutoModel, AutoTokenizer

    model = AutoModel.from_pretrained(ref.location).to(device).eval()
    if not (hasattr(model, "get_image_features") and hasattr(model, "get_text_features")):
        raise AiforgeError(
            "AF-MODEL-003",
            f"'{ref.raw}' is a {type(model).__name__}, not an image-text model (no image and text towers)",
            f"use a CLIP or SigLIP model, e.g. {CLIP_HUB_DEFAULT} or google/siglip-base-patch16-224",
        )
    tokenizer = AutoTokenizer.from_pretrained(ref.location)
    sigmoid = getattr(model, "logit_bias", None) is not None
    window = int(getattr(model.config.text_config, "max_position_embeddings", 77))
    return DualEncoder(
        model=model,
        tokenizer=tokenizer,
        image_processor=AutoImageProcessor.from_pretrained(ref.location),
        device=device,
        sigmoid=sigmoid,
        max_text_tokens=min(window, SIGLIP_TEXT_TOKENS) if sigmoid else window,
    )


def is_image_text_model(model: str) -> bool:
    """Whether a model reference names a CLIP-style model (its config.json architecture is one the
    zero-shot-image-classification card claims). Packaged and sentence-transformers models are text
    embedders; a hub id is judged by its config.json, fetched alone (a few kilobytes)."""
    import json

    from aiforge.models import hub_file, resolve
    from aiforge.tasks.card import task_for_architectures

    ref = resolve(model)
    if ref.packaged is not None or ref.format not in (None, "", "transformers"):
        return False
    if ref.path is not None:
        config = ref.path / "config.json"
    elif ref.kind == "hub":
        config = hub_file(ref.location, "config.json", "image-text-embeddings")
    else:
        return False
    if not config.is_file():
        return False
    architectures = json.loads(config.read_text(encoding="utf-8")).get("architectures") or []
    return task_for_architectures(architectures) == ZeroShotImageClassification.task


class _DualEncoderPipeline(Pipeline):
    """Shared by both tasks: the model loads once, images decode in preprocess."""

    default_batch_size = 16

    def setup(self) -> None:
        self.encoder = load_dual_encoder(self.model_ref, self.device)
        self._text_cache: dict[str, np.ndarray] = {}

    def text_vectors(self, texts: list[str]) -> np.ndarray:
        """Text embeddings, each computed once: labels repeat on every request."""
        missing = list(dict.fromkeys(t for t in texts if t not in self._text_cache))
        if missing:
            vectors = self.encoder.embed_texts(missing).cpu().numpy()
            self._text_cache.update(zip(missing, vectors, strict=True))
        return np.stack([self._text_cache[t] for t in texts])


# ---- zero-shot image classification --------------------------------------------------------------------


class ZeroShotImageInput(ImageInput):
    candidate_labels: list[str] | None = Field(
        None, description="labels to choose from for this image (else the candidate_labels parameter)"
    )


class ZeroShotImageParams(TaskParams):
    candidate_labels: list[str] | None = Field(None, description="labels to choose from, e.g. [cat, dog]")
    hypothesis_template: str = Field(
        "a photo of a {}.", description="the text each label is put into ({} = the label) before embedding"
    )

    @model_validator(mode="after")
    def _template_has_slot(self) -> ZeroShotImageParams:
        if "{}" not in self.hypothesis_template:
            raise ValueError("hypothesis_template must contain {} where the label goes")
        return self


class ZeroShotImageOutput(BaseModel):
    labels: list[str] = Field(description="the candidate labels, best first")
    scores: list[float] = Field(description="softmax over the labels (CLIP) or per-label sigmoid (SigLIP)")
    multi_label: bool = Field(description="scores are independent per label (SigLIP), not summing to 1")


def _zero_shot_image_warmup(params: dict[str, Any]) -> dict[str, bytes] | None:
    return warm_image(params) if params.get("candidate_labels") else None  # labels may come per request


@register_task(
    "zero-shot-image-classification",
    summary="label an image with labels chosen at call time (CLIP, SigLIP)",
    hub_default=CLIP_HUB_DEFAULT,
    request_params=("candidate_labels", "hypothesis_template"),
    warmup=_zero_shot_image_warmup,
    demo=DemoView("image-labels", "label"),
    architectures=("CLIPModel", "SiglipModel", "Siglip2Model"),
)
class ZeroShotImageClassification(_DualEncoderPipeline):
    """Score an image against labels given at call time::

    pipe = load_pipeline("zero-shot-image-classification", model="openai/clip-vit-base-patch32")
    pipe({"image": "cat.jpg", "candidate_labels": ["cat", "dog"]})["labels"][0]   # "cat"
    """

    Input = ZeroShotImageInput
    Output = ZeroShotImageOutput
    Params = ZeroShotImageParams
    params: ZeroShotImageParams
    primary_field = "image"

    def _labels(self, item: ZeroShotImageInput) -> list[str]:
        labels = item.candidate_labels or self.params.candidate_labels
        if not labels or not all(label.strip() for label in labels):
            raise AiforgeError(
                "AF-INPUT-002",
                "zero-shot-image-classification needs candidate labels (non-empty strings)",
                "pass -p candidate_labels='[cat, dog]' or a \"candidate_labels\" field in the record",
            )
        return labels

    def preprocess(self, item: ZeroShotImageInput) -> dict[str, Any]:  # type: ignore[override]
        labels = self._labels(item)
        prompts = [self.params.hypothesis_template.format(label) for label in labels]
        return {"pixels": self.encoder.pixels(load_image(item.image)), "prompts": prompts}

    def length(self, features: dict[str, Any]) -> int:
        return len(features["prompts"])

    def forward(self, batch: list[dict[str, Any]]) -> list[np.ndarray]:
        images = self.encoder.embed_pixels([f["pixels"] for f in batch])
        out = []
        for image, features in zip(images, batch, strict=True):
            texts = torch.from_numpy(self.text_vectors(features["prompts"])).to(self.encoder.device)
            out.append(self.encoder.logits(image[None], texts)[0].float().cpu().numpy())
        return out

    def postprocess(self, raw: np.ndarray, item: ZeroShotImageInput) -> dict[str, Any]:  # type: ignore[override]
        labels = self._labels(item)
        if self.encoder.sigmoid:
            scores = 1.0 / (1.0 + np.exp(-raw))
        else:
            shifted = np.exp(raw - raw.max())
            scores = shifted / shifted.sum()
        order = np.argsort(-scores, kind="stable")
        return {
            "labels": [labels[i] for i in order],
            "scores": [float(scores[i]) for i in order],
            "multi_label": self.encoder.sigmoid,
        }


# ---- image-text embeddings -----------------------------------------------------------------------------


class ImageTextInput(TaskInput):
    """An image or a text (exactly one): both embed into the same space."""

    image: str | bytes | None = Field(
        None, description="file path, data: URI or base64 string of an image (upload bytes are accepted too)"
    )
    text: str | None = Field(None, min_length=1, description="a text (a query, a caption)")

    @model_validator(mode="after")
    def _exactly_one(self) -> ImageTextInput:
        if (self.image is None) == (self.text is None):
            raise ValueError("give exactly one of 'image' and 'text'")
        return self


class ImageTextOutput(BaseModel):
    embedding: list[float] = Field(description="L2-normalised: a dot product is the cosine similarity")
    dim: int
    modality: str = Field(description="'image' or 'text': which tower embedded the input")


@register_task(
    "image-text-embeddings",
    summary="CLIP / SigLIP vectors of images and texts in one space (image search by text)",
    hub_default=CLIP_HUB_DEFAULT,
    warmup=warm_image,
    demo=DemoView("image", "vector"),
)
class ImageTextEmbeddings(_DualEncoderPipeline):
    """One vector per image or text; a text's vector ranks images by dot product::

    pipe = load_pipeline("image-text-embeddings", model="openai/clip-vit-base-patch32")
    image = pipe("photo.jpg")["embedding"]
    query = pipe({"text": "a dog on a beach"})["embedding"]
    """

    Input = ImageTextInput
    Output = ImageTextOutput
    primary_field = "image"

    def preprocess(self, item: ImageTextInput) -> dict[str, Any]:  # type: ignore[override]
        if item.text is not None:
            return {"text": item.text}
        return {"pixels": self.encoder.pixels(load_image(item.image))}

    def forward(self, batch: list[dict[str, Any]]) -> list[np.ndarray]:
        """Images in one vision forward, texts in one text forward; results back in batch order."""
        out: list[np.ndarray | None] = [None] * len(batch)
        images = [i for i, f in enumerate(batch) if "pixels" in f]
        texts = [i for i, f in enumerate(batch) if "text" in f]
        if images:
            vectors = self.encoder.embed_pixels([batch[i]["pixels"] for i in images]).cpu().numpy()
            for i, vector in zip(images, vectors, strict=True):
                out[i] = vector
        if texts:
            vectors = self.encoder.embed_texts([batch[i]["text"] for i in texts]).cpu().numpy()
            for i, vector in zip(texts, vectors, strict=True):
                out[i] = vector
        return out  # type: ignore[return-value]  # every position is filled above

    def postprocess(self, raw: np.ndarray, item: ImageTextInput) -> dict[str, Any]:  # type: ignore[override]
        modality = "text" if item.text is not None else "image"
        return {"embedding": raw.astype(float).tolist(), "dim": int(raw.shape[0]), "modality": modality}
