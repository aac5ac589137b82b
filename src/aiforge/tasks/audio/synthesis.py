"""Text to speech: VITS / MMS-TTS models synthesise a WAV file."""

from __future__ import annotations

import base64
import hashlib
import io
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, register_task


class TextToAudioInput(TaskInput):
    text: str = Field(min_length=1)
    path: str | None = Field(default=None, description="write the WAV here (overrides output_dir)")


class TextToAudioOutput(BaseModel):
    sampling_rate: int
    duration: float
    audio_base64: str = Field(description="16-bit PCM mono WAV file, base64")
    path: str | None = Field(default=None, description="where the WAV was written, when asked to")


class TextToAudioParams(TaskParams):
    output_dir: str | None = Field(
        default=None, description="also write each WAV here, named by a hash of the text"
    )
    speaking_rate: float | None = Field(
        default=None, gt=0, description="> 1 speaks faster; default: the model's"
    )
    seed: int | None = Field(default=0, description="VITS samples noise: a seed makes output repeatable")


@register_task(
    "text-to-audio",
    summary="synthesise speech (VITS / MMS-TTS) to a WAV file",
    hub_default="facebook/mms-tts-kor",
    extra="audio",
    requires=("torch", "transformers", "soundfile"),
    aliases=("tts", "text-to-speech"),
    request_params=("seed",),
    warmup=None,  # writes files
    demo=DemoView("text", "audio"),
)
class TextToAudio(Pipeline):
    """Synthesise speech with a VITS model (MMS-TTS: facebook/mms-tts-kor, -eng, ...) to a WAV."""

    Input = TextToAudioInput
    Output = TextToAudioOutput
    Params = TextToAudioParams
    primary_field = "text"
    default_batch_size = 4

    def setup(self) -> None:
        import transformers

        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        self.model = transformers.VitsModel.from_pretrained(location).to(self.device).eval()
        if self.params.speaking_rate:
            self.model.speaking_rate = self.params.speaking_rate
        self.sampling_rate = int(self.model.config.sampling_rate)

    def preprocess(self, item: TextToAudioInput) -> list[int]:
        self._check_romanizer(item.text)
        ids = self.tokenizer(item.text)["input_ids"]
        if not any(i != self.tokenizer.pad_token_id for i in ids):
            raise AiforgeError(
                "AF-INPUT-002",
                f"text {item.text[:60]!r} has no character this model can speak",
                "check the text's language matches the model (e.g. facebook/mms-tts-kor for Korean)",
            )
        return ids

    def _check_romanizer(self, text: str) -> None:
        """MMS-TTS models for non-Latin scripts read romanised text; without uroman, transformers only
        logs a warning and the model speaks noise, so say it as an error."""
        if getattr(self.tokenizer, "is_uroman", False) and not text.isascii():
            try:
                import uroman  # noqa: F401
            except ImportError:
                raise AiforgeError(
                    "AF-DEP-001",
                    f"model '{self.model_ref.raw}' needs text romanised with uroman",
                    "pip install uroman",
                ) from None

    def length(self, features: list[int]) -> int:
        return len(features)

    def forward(self, batch: list[list[int]]) -> list[np.ndarray]:
        import torch

        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
        if self.params.seed is not None:
            torch.manual_seed(self.params.seed)
        with torch.inference_mode():
            out = self.model(
                input_ids=padded["input_ids"].to(self.device),
                attention_mask=padded["attention_mask"].to(self.device),
            )
        waves = out.waveform.float().cpu().numpy()
        return [wave[: int(n)] for wave, n in zip(waves, out.sequence_lengths.cpu(), strict=True)]

    def postprocess(self, raw: np.ndarray, item: TextToAudioInput) -> dict[str, Any]:
        import soundfile

        buffer = io.BytesIO()
        soundfile.write(buffer, np.clip(raw, -1.0, 1.0), self.sampling_rate, subtype="PCM_16", format="WAV")
        wav = buffer.getvalue()
        path = self._target_path(item)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wav)
        return {
            "sampling_rate": self.sampling_rate,
            "duration": round(len(raw) / self.sampling_rate, 3),
            "audio_base64": base64.b64encode(wav).decode("ascii"),
            "path": str(path) if path else None,
        }

    def _target_path(self, item: TextToAudioInput) -> Path | None:
        if item.path:
            return Path(item.path).expanduser()
        if self.params.output_dir:
            digest = hashlib.sha1(item.text.encode("utf-8")).hexdigest()[:12]
            return Path(self.params.output_dir).expanduser() / f"{digest}.wav"
        return None
