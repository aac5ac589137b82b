"""Offline speech synthesis: the packaged Piper voice (English) and espeak-ng (Korean and more),
checked by ear, that is by the packaged Whisper: what it hears must be what was said."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pytest
import soundfile

from aiforge.errors import AiforgeError
from aiforge.media import load_audio
from aiforge.models import PACKAGED
from aiforge.tasks import load_pipeline
from aiforge.train.metrics import edit_distance

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian package espeak-ng")
needs_piper = pytest.mark.skipif(
    not PACKAGED["piper-en-joe"].available(), reason=f"needs {PACKAGED['piper-en-joe'].install_command()}"
)
# Sentences not used anywhere else in the tests, without numbers: Whisper writes "ten" as "10".
SPOKEN = "Please bring your passport and a printed copy of the ticket. She planted peppers in the garden."


def wav_of(out: dict) -> np.ndarray:
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert rate == out["sampling_rate"] and out["duration"] == pytest.approx(len(samples) / rate, abs=1e-3)
    return samples


def word_error_rate(expected: str, heard: str) -> float:
    want, got = re.findall(r"[a-z0-9]+", expected.lower()), re.findall(r"[a-z0-9]+", heard.lower())
    return edit_distance(want, got) / len(want)


@pytest.fixture(scope="module")
def piper():
    return load_pipeline("text-to-audio", "piper-en-joe", device="cpu")


@needs_piper
@pytest.mark.slow
def test_piper_speech_is_heard_back_by_whisper(piper) -> None:
    """The round trip: the packaged Piper voice says a sentence, the packaged Whisper base writes it."""
    out = piper(SPOKEN)
    assert out["engine"] == "piper" and out["sampling_rate"] == 22050 and 3.0 < out["duration"] < 12.0
    whisper = load_pipeline("automatic-speech-recognition", "whisper-base", device="cpu", language="en")
    heard = whisper(load_audio(base64.b64decode(out["audio_base64"])))["text"]
    assert word_error_rate(SPOKEN, heard) <= 0.2, heard  # measured: 0.0


@needs_piper
def test_piper_is_the_offline_default_and_repeatable(piper) -> None:
    default = load_pipeline("tts", device="cpu")  # tests run offline: the packaged voice
    assert default.model_ref.raw == "piper-en-joe" and default.backend == "piper"
    alone = piper("good morning")
    batched = piper.predict(["good morning", "a second, longer sentence beside it"])
    assert batched[0]["audio_base64"] == alone["audio_base64"]  # the same with or without neighbours
    faster = load_pipeline("tts", "piper-en-joe", device="cpu", speaking_rate=2.0)("good morning")
    assert faster["duration"] < 0.75 * alone["duration"]


@needs_piper
@needs_espeak
def test_hangul_given_to_the_english_voice_is_spoken_by_espeak(piper) -> None:
    out = piper("안녕하세요, 만나서 반갑습니다")
    assert out["engine"] == "espeak-ng" and out["duration"] > 1.0
    assert np.abs(wav_of(out)).max() > 0.05  # speech, not silence


@needs_espeak
def test_espeak_speaks_korean_and_takes_voices() -> None:
    espeak = load_pipeline("text-to-audio", "espeak-ng", device="cpu")
    korean = espeak("오늘은 날씨가 맑습니다")
    assert korean["engine"] == "espeak-ng" and korean["duration"] > 1.0
    assert "ko" in espeak.voices() and "en-us" in espeak.voices()
    slow = load_pipeline("tts", "espeak-ng", device="cpu", voice="ko", speaking_rate=0.5)(
        "오늘은 날씨가 맑습니다"
    )
    assert slow["duration"] > 1.5 * korean["duration"]
    [record] = load_pipeline("tts", "espeak-ng", device="cpu", voice="alloy").predict(["hi"])
    assert record["engine"] == "espeak-ng"  # OpenAI's voice names mean the default voice
    with pytest.raises(AiforgeError) as err:
        load_pipeline("tts", "espeak-ng", device="cpu", voice="klingon")
    assert err.value.code == "AF-INPUT-002" and "en-us" in err.value.fix
