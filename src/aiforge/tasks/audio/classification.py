"""Audio classification: label a sound clip with any AutoModelForAudioClassification."""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aiforge.media import load_audio
from aiforge.tasks.audio.inputs import AudioInput, AudioPipeline, warm_audio
from aiforge.tasks.base import TaskParams, fitted_temperature
from aiforge.tasks.card import DemoView, Trainer, register_task


class LabelScore(BaseModel):
    label: str
    score: float


class AudioClassificationOutput(BaseModel):
    label: str
    score: float
    scores: list[LabelScore]
    duration: float
    truncated: bool = Field(
        description="the clip was longer than the model's input window; only its start was used"
    )


class AudioClassificationParams(TaskParams):
    top_k: int = Field(default=5, ge=1, description="labels to return")


@register_task(
    "audio-classification",
    summary="label a sound clip",
    hub_default="MIT/ast-finetuned-audioset-10-10-0.4593",
    offline_default="silero-vad",  # speech / no speech only (audio/vad.py): no package ships AudioSet weights
    extra="audio",
    requires=("torch", "transformers", "soundfile"),
    request_params=("top_k",),
    warmup=warm_audio,
    demo=DemoView("audio", "label"),
    trainer=Trainer(
        "aiforge.train.audio:AudioClassificationTask", "audio", ("MIT/ast-finetuned-audioset-10-10-0.4593",)
    ),
    architectures=("ForAudioClassification",),
)
class AudioClassification(AudioPipeline):
    """Label a sound clip (AST, Wav2Vec2, HuBERT... any AutoModelForAudioClassification)."""

    Input = AudioInput
    Output = AudioClassificationOutput
    Params = AudioClassificationParams
    default_batch_size = 8

    def setup(self) -> None:
        import transformers

        location = self.model_ref.location
        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(location)
        self.model = (
            transformers.AutoModelForAudioClassification.from_pretrained(location).to(self.device).eval()
        )
        self.sampling_rate = int(self.extractor.sampling_rate)
        self.max_samples = max_input_samples(self.extractor)

    def preprocess(self, item: AudioInput) -> dict[str, Any]:
        samples = load_audio(item.audio, self.sampling_rate)
        truncated = self.max_samples is not None and len(samples) > self.max_samples
        return {
            "samples": samples[: self.max_samples] if truncated else samples,
            "truncated": truncated,
            "duration": len(samples) / self.sampling_rate,
        }

    def length(self, features: dict[str, Any]) -> int:
        return len(features["samples"])

    def forward(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per item: its logits plus its duration and truncation flag (postprocess sees no features)."""
        import torch

        inputs = self.extractor(
            [f["samples"] for f in batch], sampling_rate=self.sampling_rate, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = (
                self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits.float().cpu().numpy()
            )
        return [
            {"logits": row, "duration": f["duration"], "truncated": f["truncated"]}
            for row, f in zip(logits, batch, strict=True)
        ]

    def postprocess(self, raw: dict[str, Any], item: AudioInput) -> dict[str, Any]:
        logits = raw["logits"] / fitted_temperature(self.model.config)
        multi = self.model.config.problem_type == "multi_label_classification"
        probs = 1.0 / (1.0 + np.exp(-logits)) if multi else _softmax(logits)
        labels = self.model.config.id2label
        scores = [
            {"label": str(labels.get(int(i), f"LABEL_{i}")), "score": round(float(probs[i]), 6)}
            for i in np.argsort(-probs)[: self.params.top_k]
        ]
        return {
            **scores[0],
            "scores": scores,
            "duration": round(raw["duration"], 3),
            "truncated": raw["truncated"],
        }


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def max_input_samples(extractor: Any) -> int | None:
    """How many samples the model reads at most: AST takes ``max_length`` frames of 10 ms, Whisper-style
    extractors ``n_samples``; Wav2Vec2 / HuBERT encoders take any length (None)."""
    if getattr(extractor, "n_samples", None):
        return int(extractor.n_samples)
    if type(extractor).__name__ == "ASTFeatureExtractor":
        return int(extractor.max_length * extractor.sampling_rate // 100)
    return None
