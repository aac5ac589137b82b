"""Text to speech: a WAV file from VITS / MMS-TTS (hub), Piper voices or espeak-ng (offline).

Runtimes, by model format (``aiforge.models``):

* ``transformers`` VITS models: MMS-TTS (``facebook/mms-tts-kor``, the hub default; its Korean
  tokenizer reads text romanised by ``uroman``, in the audio extra), or any ``VitsModel``;
* ``piper``: a Piper voice (``VOICE.onnx`` + ``VOICE.onnx.json``), e.g. the packaged English
  ``piper-en-joe`` (the offline default). Piper voices speak one language: a text with Hangul is
  spoken by espeak-ng's Korean voice instead, and the output's ``engine`` says so;
* ``espeak-ng`` (Debian's ``espeak-ng``): 100+ languages including Korean; ``voice`` picks one
  (``ko``, ``en-us``... ``espeak-ng --voices``), by default ``ko`` for Hangul and ``en-us`` otherwise.

``speaking_rate`` and ``voice`` may be set per request (the server's ``POST /v1/audio/speech`` maps
OpenAI's ``speed`` and ``voice`` to them).
"""

from __future__ import annotations

import base64
import hashlib
import io
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field

from aiforge.errors import AiforgeError, require
from aiforge.tasks._script import has_hangul
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, register_runtime, register_task

# OpenAI's voice names: clients send one on every request; here each means the model's default voice.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)
Speech = tuple[np.ndarray, int, str]  # waveform in [-1, 1], sampling rate, the engine that spoke


class TextToAudioInput(TaskInput):
    text: str = Field(min_length=1)
    path: str | None = Field(default=None, description="write the WAV here (overrides output_dir)")


class TextToAudioOutput(BaseModel):
    sampling_rate: int
    duration: float
    audio_base64: str = Field(description="16-bit PCM mono WAV file, base64")
    path: str | None = Field(default=None, description="where the WAV was written, when asked to")
    engine: str = Field(description="which synthesiser spoke: vits, piper or espeak-ng")


class TextToAudioParams(TaskParams):
    output_dir: str | None = Field(
        default=None, description="also write each WAV here, named by a hash of the text"
    )
    speaking_rate: float | None = Field(
        default=None, gt=0, description="> 1 speaks faster; default: the model's"
    )
    seed: int | None = Field(
        default=0,
        description="VITS samples noise: a seed makes each text's audio repeatable (Piper: any seed "
        "turns its noise off, null turns it on)",
    )
    voice: str | None = Field(
        default=None,
        description="espeak-ng: a language voice (ko, en-us...); Piper: a speaker of a multi-speaker "
        "voice; OpenAI's names (alloy...) and none mean the model's default",
    )


@register_task(
    "text-to-audio",
    summary="synthesise speech (VITS / MMS-TTS, Piper, espeak-ng) to a WAV file",
    hub_default="facebook/mms-tts-kor",
    offline_default="piper-en-joe",
    extra="audio",
    requires=("soundfile",),  # each runtime checks its own: transformers, piper or the espeak-ng program
    aliases=("tts", "text-to-speech"),
    request_params=("seed", "speaking_rate", "voice"),
    openai=("speech",),
    formats=("piper",),  # `aiforge serve ./voice.onnx` (a Piper voice beside its .onnx.json)
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

    backend = "transformers"

    def setup(self) -> None:
        transformers = require("transformers", "ml")
        location = self.model_ref.location
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(location)
        self.model = transformers.VitsModel.from_pretrained(location).to(self.device).eval()
        self.default_speaking_rate = float(self.model.speaking_rate)
        self.sampling_rate = int(self.model.config.sampling_rate)

    def voices(self) -> tuple[str, ...]:
        """The ``voice`` values this model takes besides OpenAI's names (which mean its default)."""
        return ()

    def chosen_voice(self) -> str | None:
        """The ``voice`` parameter, checked: None for the default."""
        voice = self.params.voice
        if voice is None or voice in OPENAI_VOICES:
            return None
        if voice not in self.voices():
            offered = ", ".join(self.voices()[:40]) or "only the default (omit voice)"
            raise AiforgeError(
                "AF-INPUT-002",
                f"model '{self.model_ref.raw}' has no voice '{voice}'",
                f"voices: {offered}",
            )
        return voice

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

    def forward(self, batch: list[list[int]]) -> list[Speech]:
        self.chosen_voice()  # VITS models have one voice: anything but the default is refused
        self.model.speaking_rate = self.params.speaking_rate or self.default_speaking_rate
        if self.params.seed is None:
            return self._synthesise(batch)
        # VITS draws its noise for the whole padded batch: seeded once per batch, a text's audio (even
        # its length) changed with the texts beside it. Seeded per text, it is the same alone or batched.
        return [speech for ids in batch for speech in self._synthesise([ids], self.params.seed)]

    def _synthesise(self, batch: list[list[int]], seed: int | None = None) -> list[Speech]:
        import torch

        padded = self.tokenizer.pad({"input_ids": batch}, return_tensors="pt")
        if seed is not None:
            torch.manual_seed(seed)
        with torch.inference_mode():
            out = self.model(
                input_ids=padded["input_ids"].to(self.device),
                attention_mask=padded["attention_mask"].to(self.device),
            )
        waves = out.waveform.float().cpu().numpy()
        return [
            (wave[: int(n)], self.sampling_rate, "vits")
            for wave, n in zip(waves, out.sequence_lengths.cpu(), strict=True)
        ]

    def postprocess(self, raw: Speech, item: TextToAudioInput) -> dict[str, Any]:
        wave, sampling_rate, engine = raw
        target = wav_target(item.path, self.params.output_dir, item.text)
        return {**wav_record(wave, sampling_rate, target), "engine": engine}


def wav_target(path: str | None, output_dir: str | None, text: str, tag: str = "") -> Path | None:
    """Where a generated WAV goes: the input's ``path``, else ``output_dir``/<hash of text and tag>.wav."""
    if path:
        return Path(path).expanduser()
    if output_dir:
        digest = hashlib.sha1((text + tag).encode("utf-8")).hexdigest()[:12]
        return Path(output_dir).expanduser() / f"{digest}.wav"
    return None


def wav_record(wave: np.ndarray, sampling_rate: int, path: Path | None) -> dict[str, Any]:
    """A waveform (samples, or samples x channels, in [-1, 1]) as a 16-bit PCM WAV: base64 in the
    record, and written to ``path`` when one is given."""
    import soundfile

    buffer = io.BytesIO()
    soundfile.write(buffer, np.clip(wave, -1.0, 1.0), sampling_rate, subtype="PCM_16", format="WAV")
    wav = buffer.getvalue()
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(wav)
    return {
        "sampling_rate": sampling_rate,
        "duration": round(len(wave) / sampling_rate, 3),
        "audio_base64": base64.b64encode(wav).decode("ascii"),
        "path": str(path) if path else None,
    }


def accepted_voices(pipe: Pipeline) -> tuple[str, ...]:
    """The ``voice`` values a text-to-audio pipeline takes: its own, then OpenAI's names (its default)."""
    own = pipe.voices() if isinstance(pipe, TextToAudio) else ()
    return (*own, *OPENAI_VOICES)


ESPEAK_INSTALL = "sudo apt-get install espeak-ng (macOS: brew install espeak-ng)"
ESPEAK_WORDS_PER_MINUTE = 175  # espeak-ng's default speed; speaking_rate scales it
ESPEAK_SPEED_RANGE = (80, 450)  # what espeak-ng accepts


@cache
def espeak_voices(program: str) -> dict[str, str]:
    """Language voice (``espeak-ng --voices``: ko, en-us...) -> its voice file, which is what ``-v``
    is given: ``-v chr-US-Qaaa-x-west`` (Cherokee) fails with exit status 1, ``-v iro/chr`` speaks
    (found by the fuzz test; every listed file speaks)."""
    listing = subprocess.run([program, "--voices"], capture_output=True, text=True, check=True, timeout=30)
    rows = [line.split() for line in listing.stdout.splitlines()[1:]]
    return {row[1]: row[4] for row in rows if len(row) >= 5}


@register_runtime("text-to-audio", formats=("espeak-ng",))
class EspeakTextToAudio(TextToAudio):
    """espeak-ng (the Debian program), run once per text: Korean, English and 100+ languages."""

    backend = "espeak-ng"
    default_batch_size = 8  # one process per text: a batch only saves queue round trips

    def setup(self) -> None:
        self.espeak = shutil.which("espeak-ng")
        if self.espeak is None:
            raise AiforgeError("AF-DEP-001", "the espeak-ng program is not installed", ESPEAK_INSTALL)
        self.chosen_voice()  # a load-time voice is checked now

    def voices(self) -> tuple[str, ...]:
        return tuple(espeak_voices(self.espeak)) if self.espeak else ()

    def preprocess(self, item: TextToAudioInput) -> str:
        return item.text

    def length(self, features: Any) -> int:
        return len(features)

    def forward(self, batch: list[str]) -> list[Speech]:
        voice = self.chosen_voice()
        return [self.speak(text, voice) for text in batch]

    def speak(self, text: str, voice: str | None = None) -> Speech:
        """One text through espeak-ng; the voice by default: Korean for Hangul, else US English."""
        import soundfile

        assert self.espeak is not None
        low, high = ESPEAK_SPEED_RANGE
        speed = round(ESPEAK_WORDS_PER_MINUTE * (self.params.speaking_rate or 1.0))
        language = voice or ("ko" if has_hangul(text) else "en-us")
        command = [self.espeak, "-b", "1", "-v", espeak_voices(self.espeak).get(language, language)]
        command += ["-s", str(min(max(speed, low), high)), "--stdout"]
        # the text on stdin: never read as an option, whatever it starts with
        wav = subprocess.run(
            command, input=text.encode("utf-8", "replace"), capture_output=True, check=True, timeout=300
        )
        wave, sampling_rate = soundfile.read(io.BytesIO(wav.stdout), dtype="float32")
        return wave, int(sampling_rate), "espeak-ng"


@register_runtime("text-to-audio", formats=("piper",))
class PiperTextToAudio(EspeakTextToAudio):
    """A Piper voice (VITS exported to ONNX) on onnxruntime; Hangul goes to espeak-ng's Korean."""

    backend = "piper"
    default_batch_size = 4

    def setup(self) -> None:
        piper = require("piper", "audio")
        model = Path(self.model_ref.location)
        self.voice_model = piper.PiperVoice.load(model, config_path=model.with_name(model.name + ".json"))
        self.language = str(self.voice_model.config.espeak_voice)
        self.espeak = shutil.which("espeak-ng")
        self.chosen_voice()

    def voices(self) -> tuple[str, ...]:
        return tuple(self.voice_model.config.speaker_id_map)

    def forward(self, batch: list[str]) -> list[Speech]:
        voice = self.chosen_voice()
        return [self._speak_piper(text, voice) for text in batch]

    def _speak_piper(self, text: str, voice: str | None) -> Speech:
        from piper import SynthesisConfig

        if has_hangul(text) and not self.language.startswith("ko"):
            if self.espeak is None:
                raise AiforgeError(
                    "AF-INPUT-002",
                    f"the Piper voice '{self.model_ref.raw}' speaks {self.language}, not Korean",
                    f"install espeak-ng for Korean ({ESPEAK_INSTALL}), or use --model facebook/mms-tts-kor",
                )
            return self.speak(text, "ko")
        # Piper draws its noise inside the ONNX graph, from a generator seeded when the session is
        # made: onnxruntime.set_seed before a call changed nothing (a text batched or alone came out
        # different). So a seed means no noise: the same text always gives the same audio.
        quiet = 0.0 if self.params.seed is not None else None
        config = SynthesisConfig(
            speaker_id=self.voice_model.config.speaker_id_map.get(voice) if voice else None,
            length_scale=1.0 / self.params.speaking_rate if self.params.speaking_rate else None,
            noise_scale=quiet,
            noise_w_scale=quiet,
        )
        chunks = [chunk.audio_float_array for chunk in self.voice_model.synthesize(text, config)]
        wave = np.concatenate(chunks) if chunks else np.zeros(0, np.float32)
        return wave, int(self.voice_model.config.sample_rate), "piper"
