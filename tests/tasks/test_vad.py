"""audio-classification's offline default: the packaged Silero VAD, speech or no speech."""

from __future__ import annotations

import io
import shutil
import subprocess

import numpy as np
import pytest
import soundfile

from aiforge.models import PACKAGED
from aiforge.tasks import load_pipeline

pytestmark = pytest.mark.skipif(
    not PACKAGED["silero-vad"].available() or shutil.which("espeak-ng") is None,
    reason="needs pip install silero-vad and the Debian package espeak-ng (to speak the test sentence)",
)


def wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV")
    return buffer.getvalue()


def test_speech_is_told_from_silence_noise_and_a_tone() -> None:
    vad = load_pipeline("audio-classification", device="cpu")  # no model: the offline default
    assert vad.model_ref.raw == "silero-vad"
    spoken = subprocess.run(
        ["espeak-ng", "--stdout", "The ferry to Jeju leaves at noon from the second pier."],
        capture_output=True,
        check=True,
        timeout=60,
    ).stdout
    rng = np.random.default_rng(0)
    seconds = np.arange(32000) / 16000
    others = [np.zeros(32000), rng.normal(0, 0.1, 32000), 0.3 * np.sin(2 * np.pi * 440 * seconds)]
    speech, *rest = vad.predict([spoken, *(wav(x) for x in others)])
    assert speech["label"] == "speech" and speech["score"] > 0.9  # measured: 0.99999
    assert [r["label"] for r in rest] == ["no speech"] * 3
    assert all(r["score"] > 0.9 and r["duration"] == 2.0 for r in rest)  # measured: >= 0.983
