"""The input every audio task shares: a path, bytes, base64 string or decoded array in the ``audio``
field, decoded by :func:`aiforge.media.load_audio`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from aiforge.media import AUDIO_SAMPLING_RATE
from aiforge.tasks.base import Pipeline, TaskInput

_AUDIO_TYPES = (str, bytes, bytearray, Path, np.ndarray)


class AudioInput(TaskInput):
    # Any, not ``str | bytes``: Python callers also pass decoded arrays and Paths, which pydantic
    # cannot describe in a JSON schema; the validator below keeps the field strict.
    audio: Any = Field(description="file path, raw file bytes, base64 string or decoded 16 kHz samples")

    @field_validator("audio")
    @classmethod
    def _audio_type(cls, value: Any) -> Any:
        if not isinstance(value, _AUDIO_TYPES):
            raise ValueError(f"expected a path, bytes, base64 string or array, got {type(value).__name__}")
        return value


def warm_audio(params: dict[str, Any]) -> dict[str, Any]:
    """One second of silence at 16 kHz: decoding, features and the model all run."""
    return {"audio": np.zeros(AUDIO_SAMPLING_RATE, dtype=np.float32)}


class AudioPipeline(Pipeline):
    """Base of the tasks that read audio: a bare path, bytes or array is the ``audio`` field."""

    primary_field = "audio"

    @classmethod
    def parse_input(cls, raw: Any) -> TaskInput:
        if isinstance(raw, (bytes, bytearray, Path, np.ndarray)):
            raw = {"audio": raw}
        return super().parse_input(raw)
