"""Offline audio classification of one question, "is someone speaking?": Silero VAD, whose weights
ship in the silero-vad wheel (MIT).

``packaged:silero-vad`` is audio-classification's offline default. It labels a clip ``speech`` or
``no speech``; it does not know dogs from music (AST, the hub default, has AudioSet's 527 labels).
Silero VAD scores each 32 ms window of 16 kHz audio; a clip's ``speech`` score is the 90th
percentile of its windows' scores, so a clip that is one tenth speech or more scores as speech while
a single loud click does not. Measured here: espeak-ng's "The train to Busan leaves..." 0.99999;
silence 0.006, white noise 0.017, a 440 Hz tone 0.0004.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from aiforge.errors import require
from aiforge.media import load_audio
from aiforge.tasks.audio.classification import AudioClassificationOutput, AudioClassificationParams
from aiforge.tasks.audio.inputs import AudioInput, AudioPipeline
from aiforge.tasks.card import register_runtime

SAMPLING_RATE = 16000
WINDOW = 512  # samples per score at 16 kHz (32 ms), the model's fixed step
SPEECH_PERCENTILE = 90


@register_runtime("audio-classification", formats=("silero-vad",))
class SpeechDetection(AudioPipeline):
    """``speech`` / ``no speech`` for a clip, from Silero VAD's per-window speech probabilities."""

    Input = AudioInput
    Output = AudioClassificationOutput
    Params = AudioClassificationParams
    params: AudioClassificationParams
    backend = "silero-vad"
    default_batch_size = 8

    def setup(self) -> None:
        silero_vad = require("silero_vad", "audio")
        self.model = silero_vad.load_silero_vad(onnx=False)

    def preprocess(self, item: AudioInput) -> np.ndarray:  # type: ignore[override]
        return np.asarray(load_audio(item.audio, SAMPLING_RATE), dtype=np.float32)

    def length(self, features: np.ndarray) -> int:
        return len(features)

    def forward(self, batch: list[np.ndarray]) -> list[dict[str, Any]]:
        return [
            {"speech": self._speech_score(samples), "duration": len(samples) / SAMPLING_RATE}
            for samples in batch
        ]

    def _speech_score(self, samples: np.ndarray) -> float:
        import torch

        whole = len(samples) // WINDOW * WINDOW
        clip = samples[:whole] if whole else np.pad(samples, (0, WINDOW - len(samples)))
        self.model.reset_states()  # the model carries state from one window to the next
        probs = self.model.audio_forward(torch.from_numpy(np.ascontiguousarray(clip)), SAMPLING_RATE)
        return float(np.percentile(probs.numpy()[0], SPEECH_PERCENTILE))

    def postprocess(self, raw: dict[str, Any], item: AudioInput) -> dict[str, Any]:  # type: ignore[override]
        speech = round(raw["speech"], 6)
        scores = sorted(
            [{"label": "speech", "score": speech}, {"label": "no speech", "score": round(1.0 - speech, 6)}],
            key=lambda s: -float(s["score"]),
        )[: self.params.top_k]
        return {**scores[0], "scores": scores, "duration": round(raw["duration"], 3), "truncated": False}
