"""Speech recognition as a task: Whisper with segment timestamps and language detection.

The engine (:mod:`aiforge.tasks.audio.whisper`) is chosen by the model reference; every engine hands
its per-window segments to :func:`~aiforge.tasks.audio.windows.stitch_segments`, which guarantees what
subtitles rely on: segments in order, never overlapping, inside the clip.
"""

from __future__ import annotations

from typing import Any

from aiforge.errors import AiforgeError
from aiforge.media import load_audio
from aiforge.tasks.audio.asr_types import AsrFeatures, AsrInput, AsrOutput, AsrParams, Transcript
from aiforge.tasks.audio.inputs import AudioPipeline, warm_audio
from aiforge.tasks.audio.whisper import FasterWhisper, TransformersWhisper
from aiforge.tasks.audio.windows import SAMPLING_RATE, stitch_segments
from aiforge.tasks.card import DemoView, register_task


@register_task(
    "automatic-speech-recognition",
    summary="transcribe speech with timestamps and language detection (faster-whisper or transformers)",
    hub_default="openai/whisper-base",
    offline_default="whisper-base",
    extra="audio",
    requires=("soundfile",),  # faster-whisper or transformers, whichever the model needs
    aliases=("asr", "speech-recognition"),
    request_params=("language", "task", "beam_size", "word_timestamps"),
    warmup=warm_audio,
    demo=DemoView("audio", "text"),
    architectures=("ForSpeechSeq2Seq", "WhisperForConditionalGeneration"),
    formats=("ctranslate2",),
    openai=("transcriptions",),
)
class SpeechRecognition(AudioPipeline):
    """Transcribe (or translate to English) speech, with segment timestamps and language detection.

    ``load_pipeline("automatic-speech-recognition")(path)`` runs the packaged Whisper base offline;
    ``language="ko"`` forces Korean; ``batch_size=8`` decodes the windows of long audio 8 at a time.
    """

    Input = AsrInput
    Output = AsrOutput
    Params = AsrParams
    default_batch_size = 4
    sort_window_batches = 4

    backend = "faster-whisper | transformers"

    def setup(self) -> None:
        if self.model_ref.format == "ctranslate2":
            self.backend = "faster-whisper"  # type: ignore[misc]  # the one running
            self.engine: FasterWhisper | TransformersWhisper = FasterWhisper(
                self.model_ref.location, self.device
            )
        else:
            self.backend = "transformers"  # type: ignore[misc]
            self.engine = TransformersWhisper(self.model_ref.location, self.device, self.params)
        if self.params.language:
            self._check_language(self.params.language)

    def _check_language(self, code: str) -> str:
        if code not in self.engine.languages:
            some = ", ".join(self.engine.languages[:12])
            raise AiforgeError(
                "AF-INPUT-002",
                f"language '{code}' is not supported by model '{self.model_ref.raw}'",
                f"use a Whisper language code this model knows ({some}...), or omit it to detect",
            )
        return code

    def preprocess(self, item: AsrInput) -> AsrFeatures:
        language = self._check_language(item.language) if item.language else self.params.language
        return AsrFeatures(load_audio(item.audio), language)

    def length(self, features: AsrFeatures) -> int:
        return len(features.samples)

    def forward(self, batch: list[AsrFeatures]) -> list[tuple[Transcript, float]]:
        transcripts = self.engine.transcribe_many(batch, self.params)
        return [(t, len(f.samples) / SAMPLING_RATE) for t, f in zip(transcripts, batch, strict=True)]

    def postprocess(self, raw: tuple[Transcript, float], item: AsrInput) -> dict[str, Any]:
        transcript, duration = raw
        segments, text = stitch_segments(transcript.windows)
        return {
            "text": text,
            "language": transcript.language,
            "language_probability": transcript.language_probability,
            "duration": round(duration, 3),
            "task": self.params.task,
            "segments": segments,
        }
