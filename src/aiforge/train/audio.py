"""Audio classification for the training loop: any ``AutoModelForAudioClassification``.

Data: class folders or tables of audio paths (:mod:`aiforge.train.media`). Clips are decoded with
the loader inference uses (:func:`aiforge.media.load_audio`: wav, flac, mp3, ogg... to mono,
resampled to the feature extractor's rate) and kept in memory as float32 samples.

Lengths are counted in samples. A model with a fixed input window (AST reads 1024 frames of 10 ms)
sees at most that window, as at inference; for models that read any length (Wav2Vec2, HuBERT)
``training.max_length: auto`` cuts clips at a percentile of the training lengths and an integer
sets the limit in samples. Batches are padded to their longest clip by the feature extractor.

Baseline: logistic regression on the mean and standard deviation of each log-mel band over time
(seconds to fit), reported next to the fine-tuned model.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.train.classifier import ClassifierTask
from aiforge.train.data import Split
from aiforge.train.media import MediaEncoded

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask

BASELINE_MEL_BANDS = 40


class AudioClassificationTask(ClassifierTask[MediaEncoded]):
    """Audio files in (decoded once, kept as samples), any transformers audio classifier, log-mel
    statistics as the baseline."""

    name = "audio-classification"
    auto_class = "AutoModelForAudioClassification"
    backbone_hint = "use an audio classifier backbone (AST, Wav2Vec2, HuBERT...) from the hub or a local dir"
    length_unit: str | None = "samples"

    extractor: Any = None
    sampling_rate = 16000
    _decoded: dict[str, np.ndarray]

    def load_processor(self) -> None:
        import transformers

        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(self.location)
        self.sampling_rate = int(self.extractor.sampling_rate)
        self._decoded = {}

    def save(self, model: torch.nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)  # type: ignore[operator]
        self.extractor.save_pretrained(directory)

    # ---- data -------------------------------------------------------------------------------------
    def samples(self, path: str) -> np.ndarray:
        """A clip as mono float32 at the extractor's rate, decoded once per run."""
        if path not in self._decoded:
            from aiforge.media import load_audio

            self._decoded[path] = load_audio(path, self.sampling_rate)
        return self._decoded[path]

    def input_lengths(self, split: Split) -> list[int]:
        return [len(self.samples(path)) for path in split.inputs]

    def resolve_max_length(self, lengths: list[int]) -> int:
        from aiforge.tasks.audio.classification import max_input_samples

        window = max_input_samples(self.extractor)
        wanted = self.config.training.max_length
        if wanted == "auto":
            wanted = (
                math.ceil(np.percentile(lengths, self.config.training.max_length_percentile))
                if lengths
                else self.sampling_rate * 10
            )
        self.max_length = int(min(wanted, window) if window else wanted)
        return self.max_length

    def encode(self, split: Split) -> MediaEncoded:
        clips = [self.samples(path) for path in split.inputs]
        labels = [self.label_index[str(y)] for y in split.labels]
        kept = [clip[: self.max_length] for clip in clips]
        truncated = sum(len(clip) > self.max_length for clip in clips)
        return MediaEncoded(kept, labels, [len(clip) for clip in kept], truncated=truncated)

    def collate(self, encoded: MediaEncoded, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        """The feature extractor's own batching (padding, attention mask), as inference does it."""
        inputs = self.extractor(
            [encoded.items[i] for i in indices],
            sampling_rate=self.sampling_rate,
            padding=True,
            return_tensors="pt",
        )
        batch = {k: v for k, v in inputs.items() if isinstance(v, torch.Tensor)}
        batch["labels"] = torch.tensor([encoded.labels[i] for i in indices], dtype=torch.long)
        return {k: v.to(device) for k, v in batch.items()}

    # ---- baseline ---------------------------------------------------------------------------------
    def fit_baseline(self, prep: Prepared[MediaEncoded]) -> dict[str, Any] | None:
        """Logistic regression on per-band log-mel mean and standard deviation."""
        from aiforge.train.baseline import fit_feature_baseline

        return fit_feature_baseline(
            "log-mel-statistics+logreg",
            lambda encoded: np.stack([log_mel_statistics(c, self.sampling_rate) for c in encoded.items]),
            prep,
            self.labels,
        )


def log_mel_statistics(
    samples: np.ndarray, sampling_rate: int, bands: int = BASELINE_MEL_BANDS
) -> np.ndarray:
    """Mean and standard deviation over time of each log-mel band (25 ms windows, 10 ms hop)."""
    from transformers.audio_utils import mel_filter_bank, spectrogram, window_function

    frame = int(0.025 * sampling_rate)
    n_fft = 1 << (frame - 1).bit_length()
    if len(samples) < n_fft:
        samples = np.pad(samples, (0, n_fft - len(samples)))
    filters = mel_filter_bank(
        num_frequency_bins=n_fft // 2 + 1,
        num_mel_filters=bands,
        min_frequency=20.0,
        max_frequency=sampling_rate / 2,
        sampling_rate=sampling_rate,
    )
    mel = spectrogram(
        samples.astype(np.float64),
        window_function(frame, "hann", frame_length=n_fft),
        frame_length=n_fft,
        hop_length=sampling_rate // 100,
        power=2.0,
        mel_filters=filters,
        log_mel="log10",
        mel_floor=1e-10,
    )  # (bands, frames)
    return np.concatenate([mel.mean(axis=1), mel.std(axis=1)]).astype(np.float32)


if TYPE_CHECKING:

    def _implements_the_protocol(task: AudioClassificationTask) -> TrainingTask[MediaEncoded]:
        return task  # mypy checks the adapter against TrainingTask here
