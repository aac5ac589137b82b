"""Text to music: MusicGen (transformers) writes a WAV of a requested length from a description.

The model is a ``MusicgenForConditionalGeneration``: a T5 text encoder, a decoder that samples
EnCodec audio codes (several codebooks, one step per frame, delayed one step per codebook) and the
EnCodec decoder that turns codes into a waveform. ``duration`` (seconds) becomes a number of frames
at the codec's frame rate (50 per second for ``facebook/musicgen-small``: 32 kHz, hop 640), and the
generation length is that plus the codebook delay, so the WAV is ``duration`` long to within a frame.

MusicGen samples (top-k 250 with classifier-free guidance 3.0 in the hub models' generation config):
``seed`` makes a description's music repeatable, and each text is seeded on its own so its music is
the same alone or batched. The prompts it was trained on are English descriptions ("lo-fi beat with
soft piano"); it has no offline weights in any package, so it runs from the hub (or a local copy).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError, require
from aiforge.tasks.audio.synthesis import TextToAudioInput, wav_record, wav_target
from aiforge.tasks.base import Pipeline, TaskParams
from aiforge.tasks.card import DemoView, register_task

# MusicGen was trained on 30 s clips; its decoder's positions (2048 for musicgen-small, 41 s) are the
# hard limit, checked per model in forward.
MAX_DURATION_S = 30.0


class TextToMusicParams(TaskParams):
    duration: float = Field(
        default=5.0, gt=0, le=MAX_DURATION_S, description="seconds of music (to within one codec frame)"
    )
    seed: int | None = Field(
        default=0, description="the same seed and text give the same music; null draws a fresh one each time"
    )
    guidance_scale: float | None = Field(
        default=None,
        ge=1.0,
        description="classifier-free guidance: higher follows the text more closely (model default: 3.0)",
    )
    output_dir: str | None = Field(
        default=None, description="also write each WAV here, named by a hash of the text, duration and seed"
    )


class TextToMusicOutput(BaseModel):
    sampling_rate: int
    duration: float
    audio_base64: str = Field(
        description="16-bit PCM WAV file (mono, or stereo models' two channels), base64"
    )
    path: str | None = Field(default=None, description="where the WAV was written, when asked to")
    seed: int | None = Field(description="the seed the music was sampled with")


Tokens = dict[str, Any]  # input_ids and attention_mask of one text, as lists


@register_task(
    "text-to-music",
    summary="compose music from a text description (MusicGen) to a WAV file",
    hub_default="facebook/musicgen-small",
    extra="audio",
    requires=("torch", "transformers", "soundfile"),
    aliases=("music", "musicgen"),
    request_params=("duration", "seed", "guidance_scale"),
    warmup=None,  # seconds of generation per warm-up would delay every start
    demo=DemoView("text", "audio"),
    architectures=("MusicgenForConditionalGeneration",),
)
class TextToMusic(Pipeline):
    """MusicGen through transformers: a text description -> ``duration`` seconds of music."""

    Input = TextToAudioInput
    Output = TextToMusicOutput
    Params = TextToMusicParams
    params: TextToMusicParams
    primary_field = "text"
    default_batch_size = 4
    backend = "transformers"

    def setup(self) -> None:
        transformers = require("transformers", "ml")
        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        self.model = (
            transformers.MusicgenForConditionalGeneration.from_pretrained(location).to(self.device).eval()
        )
        codec = self.model.config.audio_encoder
        self.sampling_rate = int(codec.sampling_rate)
        self.hop_length = int(np.prod(codec.upsampling_ratios))  # waveform samples per codec frame
        self.frame_rate = self.sampling_rate / self.hop_length
        self.num_codebooks = int(self.model.decoder.config.num_codebooks)
        self.max_positions = int(self.model.decoder.config.max_position_embeddings)

    def preprocess(self, item: TextToAudioInput) -> Tokens:  # type: ignore[override]
        encoded = self.tokenizer(item.text, truncation=True)
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def length(self, features: Tokens) -> int:
        return len(features["input_ids"])

    def frames(self) -> int:
        """Codec frames for the requested duration."""
        return max(1, round(self.params.duration * self.frame_rate))

    def forward(self, batch: list[Tokens]) -> list[np.ndarray]:
        frames = self.frames()
        # each step writes one frame of one more codebook: the last codebook lags num_codebooks - 1
        # steps, and the first step is the start token (10 new tokens gave 9 frames with 2 codebooks)
        new_tokens = frames + self.num_codebooks - 1
        if new_tokens + 1 > self.max_positions:
            longest = (self.max_positions - self.num_codebooks) / self.frame_rate
            raise AiforgeError(
                "AF-INPUT-002",
                f"duration {self.params.duration} s is longer than model '{self.model_ref.raw}' can "
                f"generate ({longest:.1f} s)",
                f"ask for at most {longest:.1f} s (-p duration=...), or join several pieces",
            )
        if self.params.seed is None:
            return self._generate(batch, new_tokens, frames, None)
        return [
            wave
            for tokens in batch
            for wave in self._generate([tokens], new_tokens, frames, self.params.seed)
        ]

    def _generate(
        self, batch: list[Tokens], new_tokens: int, frames: int, seed: int | None
    ) -> list[np.ndarray]:
        import torch

        padded = self.tokenizer.pad(batch, return_tensors="pt")
        if seed is not None:
            torch.manual_seed(seed)
        options: dict[str, Any] = {"max_new_tokens": new_tokens, "do_sample": True}
        if self.params.guidance_scale is not None:
            options["guidance_scale"] = self.params.guidance_scale
        with torch.inference_mode():
            audio = self.model.generate(
                input_ids=padded["input_ids"].to(self.device),
                attention_mask=padded["attention_mask"].to(self.device),
                **options,
            )
        waves = audio.float().cpu().numpy()  # (batch, channels, samples)
        return [wave[:, : frames * self.hop_length].T.squeeze(1) for wave in waves]

    def postprocess(self, raw: np.ndarray, item: TextToAudioInput) -> dict[str, Any]:  # type: ignore[override]
        tag = f"|{self.params.duration}|{self.params.seed}"
        target = wav_target(item.path, self.params.output_dir, item.text, tag)
        return {**wav_record(raw, self.sampling_rate, target), "seed": self.params.seed}
