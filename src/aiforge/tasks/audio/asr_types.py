"""Speech recognition's schemas (input, output, parameters) and what its engines exchange."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field

from aiforge.tasks.audio.inputs import AudioInput
from aiforge.tasks.base import TaskParams


class AsrInput(AudioInput):
    language: str | None = Field(default=None, description="override the language for this item, e.g. 'ko'")


class Word(BaseModel):
    word: str
    start: float
    end: float
    probability: float


class Segment(BaseModel):
    id: int
    start: float
    end: float
    text: str
    words: list[Word] | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class AsrOutput(BaseModel):
    text: str
    language: str
    language_probability: float | None = Field(description="None when the language was forced, not detected")
    duration: float
    task: Literal["transcribe", "translate"]
    segments: list[Segment]


class AsrParams(TaskParams):
    language: str | None = Field(default=None, description="Whisper code ('ko', 'en'...); default: detect")
    task: Literal["transcribe", "translate"] = Field(
        default="transcribe", description="translate: into English"
    )
    beam_size: int = Field(default=1, ge=1, le=16, description="1 = greedy, the fastest")
    word_timestamps: bool = Field(default=False, description="per-word times (faster-whisper backend)")
    vad_filter: bool = Field(default=False, description="skip non-speech (Silero VAD) before decoding")
    batch_size: int = Field(
        default=1,
        ge=1,
        le=64,
        description="> 1: decode long audio as independent 30 s chunks, this many at once",
    )
    condition_on_previous_text: bool = Field(
        default=False,
        description="sequential decoding only: prompt each 30 s window with the text before it "
        "(steadier names and punctuation, but a misheard window can start a hallucination loop)",
    )


@dataclass
class AsrFeatures:
    samples: np.ndarray
    language: str | None  # the per-item override, else the pipeline's param


@dataclass
class Transcript:
    language: str
    language_probability: float | None
    windows: list[tuple[float, float, list[dict[str, Any]]]]  # stitch_segments' input
