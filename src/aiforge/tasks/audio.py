"""Audio tasks: speech recognition, audio classification and text-to-speech.

Speech recognition has two backends, chosen by the model reference:

* **faster-whisper** (CTranslate2) for ``ref.format == "ctranslate2"``: the packaged ``whisper-base``
  (multilingual, Korean included) and ``whisper-tiny.en``; int8 on CPU, float16 on CUDA. With
  ``batch_size=1`` (the default) a clip runs through faster-whisper's own sequential loop, exactly as
  a direct ``WhisperModel.transcribe`` call would. With ``batch_size > 1`` a clip longer than 30 s
  is cut at quiet points into windows (:func:`plan_windows`) that go through the encoder and the
  decoder ``batch_size`` at a time: faster on long audio, since every window is independent.
* **transformers** Whisper (``WhisperForConditionalGeneration``) for local model dirs and hub ids:
  the same windows, and the windows of every clip in a batch share ``generate`` calls.

Batched windows lose what Whisper's sequential loop does at a window's end (it seeks back and
decodes again), so :func:`split_on_timestamps` keeps a window's unfinished last segment and
:func:`decode_windows` re-decodes a window whose transcript stopped early while speech follows.
Every backend hands its segments to :func:`stitch_segments`, which guarantees what subtitles rely
on: segments in order, never overlapping, inside the clip.

:func:`load_audio` and :func:`format_transcript` (json, text, srt, vtt, verbose_json) are shared with
the server's OpenAI-compatible transcription endpoint. torch and transformers are imported inside
the transformers code paths only, so the packaged faster-whisper path starts without them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field, field_validator

from aiforge.errors import AiforgeError, require
from aiforge.tasks.base import Pipeline, TaskInput, TaskParams
from aiforge.tasks.card import DemoView, Trainer, register_task

SAMPLING_RATE = 16000  # Whisper's input rate
WINDOW_S = 30.0  # Whisper's receptive field: one mel window
# The longest window aiforge plans. Whisper tends to leave out an utterance that ends near the 30 s
# edge (its training transcripts dropped speech cut by it); 2 s of true silence after every window's
# last words removes most of the re-decoding that decode_windows would otherwise need.
CHUNK_S = 28.0

# ---- audio input ---------------------------------------------------------------------------------
_BASE64 = re.compile(r"^[A-Za-z0-9+/=_\-\s]+$")


def load_audio(value: Any, sampling_rate: int = SAMPLING_RATE, name: str | None = None) -> np.ndarray:
    """Any audio the user hands us -> mono float32 samples at ``sampling_rate``.

    ``value`` is a file path, raw file bytes (an HTTP upload), a base64 string (optionally a
    ``data:audio/...;base64,`` URI) or an already decoded 1-D/2-D array (taken as being at
    ``sampling_rate``). Every format FFmpeg reads works (wav, flac, mp3, ogg, m4a, webm...).
    ``name`` is what error messages call the input (e.g. the uploaded file's name).
    """
    if isinstance(value, np.ndarray):
        return _to_mono(value)
    source, label = _audio_source(value, name)
    decode_audio = require("faster_whisper", "audio").decode_audio
    try:
        samples = decode_audio(source, sampling_rate=sampling_rate)
    except Exception as exc:  # av raises a dozen FFmpeg error types; all mean "cannot decode"
        raise AiforgeError(
            "AF-INPUT-004",
            f"could not decode audio {label}: {type(exc).__name__}: {exc}",
            "pass a readable audio file (wav, flac, mp3, ogg, m4a...); check it plays, e.g. `ffprobe FILE`",
        ) from None
    if samples.size == 0:
        raise AiforgeError(
            "AF-INPUT-004", f"audio {label} contains no samples", "pass a file with at least one audio frame"
        )
    return samples


def _audio_source(value: Any, name: str | None) -> tuple[str | io.BytesIO, str]:
    """(what the decoder reads, how messages name it) for a path, bytes or base64 string."""
    if isinstance(value, (bytes, bytearray)):
        return io.BytesIO(bytes(value)), f"'{name}'" if name else f"(uploaded, {len(value)} bytes)"
    if isinstance(value, Path):
        value = str(value)
    if not isinstance(value, str):
        raise AiforgeError(
            "AF-INPUT-002",
            f"audio must be a path, bytes or base64 string, got {type(value).__name__}",
            "pass a file path or base64-encoded file contents",
        )
    if value.startswith("data:") and "," in value:
        return io.BytesIO(_b64decode(value.split(",", 1)[1], name)), f"'{name or 'data URI'}'"
    path = Path(value).expanduser()
    if len(value) < 1024 and path.exists():
        if not path.is_file():
            raise AiforgeError("AF-INPUT-001", f"audio path '{value}' is not a file", "pass an audio file")
        return str(path), f"'{value}'"
    if len(value) >= 256 and _BASE64.match(value[:4096]):
        return io.BytesIO(_b64decode(value, name)), f"'{name}'" if name else "(base64 string)"
    raise AiforgeError(
        "AF-INPUT-001",
        f"audio file '{value[:200]}' not found",
        "pass an existing file path, or the file's contents base64-encoded",
    )


def _b64decode(text: str, name: str | None) -> bytes:
    try:
        return base64.b64decode(
            "".join(text.split()), altchars=b"-_" if ("-" in text or "_" in text) else None, validate=True
        )
    except (binascii.Error, ValueError) as exc:
        raise AiforgeError(
            "AF-INPUT-004",
            f"audio {name or 'string'} is neither a file path nor valid base64: {exc}",
            "pass a file path or standard base64 of the file bytes",
        ) from None


def _to_mono(samples: np.ndarray) -> np.ndarray:
    """A decoded array -> 1-D float32; (n, channels) or (channels, n) are averaged to mono."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(axis=int(np.argmin(samples.shape)))
    if samples.ndim != 1 or samples.size == 0:
        raise AiforgeError(
            "AF-INPUT-004",
            f"audio array has shape {samples.shape}; expected (samples,)",
            "pass mono samples, or (samples, channels)",
        )
    return samples


# ---- chunking and stitching ----------------------------------------------------------------------
def plan_windows(
    audio: np.ndarray, sampling_rate: int = SAMPLING_RATE, window_s: float = CHUNK_S, search_s: float = 5.0
) -> list[tuple[int, int]]:
    """Cut a clip into contiguous spans of at most ``window_s`` seconds, in sample indices.

    Each cut falls in the middle of the longest quiet stretch of the span's last ``search_s``
    seconds, so a word is rarely split between two windows (a split word is misheard twice).
    """
    window, search, frame = int(window_s * sampling_rate), int(search_s * sampling_rate), sampling_rate // 50
    spans, start, n = [], 0, len(audio)
    while n - start > window:
        lo = start + window - search
        spans.append((start, lo + _quietest_point(audio[lo : start + window], frame)))
        start = spans[-1][1]
    spans.append((start, n))
    return spans


def _quietest_point(chunk: np.ndarray, frame: int) -> int:
    """Sample offset of the centre of the longest run of near-minimum-energy 20 ms frames."""
    k = len(chunk) // frame
    energy = (chunk[: k * frame].reshape(k, frame).astype(np.float64) ** 2).mean(axis=1)
    quiet = energy <= energy.min() + 0.1 * (np.median(energy) - energy.min()) + 1e-10
    best_start, best_len, run_start = 0, 0, None
    for i, q in enumerate([*quiet, False]):
        if q and run_start is None:
            run_start = i
        elif not q and run_start is not None:
            if i - run_start > best_len:
                best_start, best_len = run_start, i - run_start
            run_start = None
    return (best_start * frame + (best_start + best_len) * frame) // 2


def speech_windows(samples: np.ndarray, vad_filter: bool) -> list[tuple[int, int]]:
    """The <= ``CHUNK_S`` windows to decode: :func:`plan_windows` over the whole clip, or, with the VAD,
    runs of speech (Silero, bundled with faster-whisper) merged while they fit one window."""
    if not vad_filter:
        return plan_windows(samples)
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    merged: list[tuple[int, int]] = []
    for run in get_speech_timestamps(samples, VadOptions(max_speech_duration_s=CHUNK_S)):
        if merged and run["end"] - merged[-1][0] <= CHUNK_S * SAMPLING_RATE:
            merged[-1] = (merged[-1][0], run["end"])
        else:
            merged.append((run["start"], run["end"]))
    return merged


def split_on_timestamps(
    tokens: list[int], timestamp_begin: int, eot: int, window_s: float, precision: float = 0.02
) -> list[dict[str, Any]]:
    """Whisper output ids of one window -> segments ``{start, end, tokens}`` (window-relative).

    Whisper writes ``<|t0|> text <|t1|><|t1|> text <|t2|>``. Text after the last timestamp is an
    unfinished segment: Whisper's sequential loop re-decodes it from there, a batch of windows cannot,
    and faster-whisper's batched pipeline drops it. Windows here end at a quiet point, so that text is
    the window's last words: it is kept, ending at the window's end.
    """
    segments: list[dict[str, Any]] = []
    start, text = 0.0, []
    for token in tokens:
        if token >= timestamp_begin:
            time = min((token - timestamp_begin) * precision, window_s)
            if text:
                segments.append({"start": start, "end": time, "tokens": text})
                text = []
            start = time
        elif token < eot:
            text.append(token)
    if text:
        segments.append({"start": start, "end": window_s, "tokens": text})
    return segments


@dataclass(frozen=True)
class Window:
    """A span of one clip of the batch, in samples."""

    item: int
    start: int
    end: int


# A backend's batch decoder: windows -> per window, segments with times relative to the window's start.
DecodeFn = Callable[[list[Window]], list[list[dict[str, Any]]]]
MAX_RESUMES = 2


def decode_windows(
    clips: list[np.ndarray], windows: list[Window], decode: DecodeFn
) -> list[list[dict[str, Any]]]:
    """Decode windows in batches, resuming any window whose transcript stops early.

    Whisper often ends a window's transcript a few seconds before its end when an utterance starts
    there (its training transcripts left out speech cut by the 30 s edge). Its sequential loop then
    seeks to the last timestamp and decodes a new window from there; a batch of independent windows
    would lose that speech. Here a window whose transcript stops >= 1 s early while the VAD hears
    speech after it is decoded again from that point, up to ``MAX_RESUMES`` times, still in batches.
    """
    results: list[list[dict[str, Any]]] = [[] for _ in windows]
    pending = list(enumerate(windows))
    for _ in range(MAX_RESUMES + 1):
        if not pending:
            break
        resumed = []
        for (k, part), segments in zip(pending, decode([part for _, part in pending]), strict=True):
            # where the transcript stopped, before word alignment moved segment ends onto words
            stop_s = segments[-1].get("decoded_end", segments[-1]["end"]) if segments else 0.0
            offset = (part.start - windows[k].start) / SAMPLING_RATE
            results[k] += [_shift_segment(seg, offset) for seg in segments if not _is_silence(seg)]
            stop = part.start + int(stop_s * SAMPLING_RATE)
            if (
                segments
                and part.end - stop >= SAMPLING_RATE
                and _has_speech(clips[part.item][stop : part.end])
            ):
                resumed.append((k, Window(part.item, stop, part.end)))
        pending = resumed
    return results


def _shift_segment(seg: dict[str, Any], offset: float) -> dict[str, Any]:
    out = {key: value for key, value in seg.items() if key != "decoded_end"}
    out.update(start=seg["start"] + offset, end=seg["end"] + offset)
    if seg.get("words"):
        out["words"] = [{**w, "start": w["start"] + offset, "end": w["end"] + offset} for w in seg["words"]]
    return out


def _is_silence(seg: dict[str, Any]) -> bool:
    """Whisper's own rule (faster-whisper's defaults): likely no speech and an unsure decode."""
    return seg.get("no_speech_prob", 0.0) > 0.6 and seg.get("avg_logprob", 0.0) < -1.0


def _has_speech(samples: np.ndarray) -> bool:
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    return bool(get_speech_timestamps(samples, VadOptions(min_speech_duration_ms=250)))


SEGMENT_SCORES = ("avg_logprob", "compression_ratio", "no_speech_prob")  # Whisper's per-segment confidence


def stitch_segments(windows: Iterable[tuple[float, float, list[dict[str, Any]]]]) -> tuple[list[dict], str]:
    """Put per-window segments onto the clip's time line; returns (segments, full text).

    ``windows`` yields ``(window_start_s, window_end_s, segments)`` in time order, each segment's
    ``start``/``end`` relative to its window. Times are clamped into the window and after the
    previous segment's end, so subtitles never overlap or run backwards even when a model emits
    an out-of-range timestamp; empty segments are dropped and ids renumbered. The full text joins
    the segments as the model wrote them (Whisper puts the leading space where a language has one).
    """
    segments: list[dict[str, Any]] = []
    pieces: list[str] = []
    prev_end = 0.0
    for w_start, w_end, window_segments in windows:
        for seg in window_segments:
            text = seg["text"].strip()
            if not text:
                continue
            start = float(min(max(w_start + seg["start"], w_start, prev_end), w_end))
            end = float(min(max(w_start + seg["end"], start), w_end))
            out = {"id": len(segments), **seg, "start": round(start, 3), "end": round(end, 3), "text": text}
            out.update({key: round(float(seg[key]), 4) for key in SEGMENT_SCORES if seg.get(key) is not None})
            if seg.get("words"):
                out["words"] = [_shift_word(w, w_start, start, end) for w in seg["words"]]
            segments.append(out)
            pieces.append(seg["text"])
            prev_end = end
    return segments, "".join(pieces).strip()


def _shift_word(word: dict[str, Any], offset: float, lo: float, hi: float) -> dict[str, Any]:
    start = float(min(max(word["start"] + offset, lo), hi))
    end = float(min(max(word["end"] + offset, start), hi))
    return {
        "word": word["word"],
        "start": round(start, 3),
        "end": round(end, 3),
        "probability": round(float(word["probability"]), 4),
    }


# ---- transcript formats (OpenAI response_format) ---------------------------------------------------
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


def format_transcript(result: dict[str, Any], fmt: str = "json") -> str | dict[str, Any]:
    """Render a speech-recognition output in one of the OpenAI transcription formats."""
    segments = result.get("segments") or []
    if fmt == "json":
        return {"text": result["text"]}
    if fmt == "text":
        return result["text"] + "\n"
    if fmt == "srt":
        return _cues(segments, ",", numbered=True)
    if fmt == "vtt":
        return "WEBVTT\n\n" + _cues(segments, ".", numbered=False)
    if fmt == "verbose_json":
        return _verbose_json(result)
    raise AiforgeError(
        "AF-INPUT-002", f"unknown transcript format '{fmt}'", f"use one of: {', '.join(TRANSCRIPT_FORMATS)}"
    )


def _cues(segments: list[dict[str, Any]], decimal_sep: str, numbered: bool) -> str:
    """Subtitle cues: SRT numbers them and writes ``00:01:02,345``; WebVTT writes ``00:01:02.345``."""
    return "".join(
        (f"{i}\n" if numbered else "")
        + f"{_timestamp(s['start'], decimal_sep)} --> {_timestamp(s['end'], decimal_sep)}\n{s['text']}\n\n"
        for i, s in enumerate(segments, start=1)
    )


def _timestamp(seconds: float, decimal_sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_sep}{ms:03d}"


def _verbose_json(result: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's verbose_json: language as a lower-case name, segments with every field clients parse."""
    segments = [
        {
            "id": s["id"],
            "seek": int(s["start"] * 100),
            "start": s["start"],
            "end": s["end"],
            "text": s["text"],
            "tokens": [],
            "temperature": 0.0,
            "avg_logprob": s.get("avg_logprob") or 0.0,
            "compression_ratio": s.get("compression_ratio") or 0.0,
            "no_speech_prob": s.get("no_speech_prob") or 0.0,
        }
        for s in result.get("segments") or []
    ]
    out: dict[str, Any] = {
        "task": result.get("task", "transcribe"),
        "language": language_name(result["language"]),
        "duration": result["duration"],
        "text": result["text"],
        "segments": segments,
    }
    words = [w for s in result.get("segments") or [] for w in (s.get("words") or [])]
    if words:
        out["words"] = [{"word": w["word"].strip(), "start": w["start"], "end": w["end"]} for w in words]
    return out


def language_name(code: str) -> str:
    """'ko' -> 'korean' (OpenAI reports names); an unknown code is returned as is."""
    try:
        from transformers.models.whisper.tokenization_whisper import LANGUAGES
    except ImportError:
        return code
    return LANGUAGES.get(code, code)


# ---- inputs shared by the audio tasks --------------------------------------------------------------
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
    return {"audio": np.zeros(16000, dtype=np.float32)}


class AudioPipeline(Pipeline):
    """Base of the tasks that read audio: a bare path, bytes or array is the ``audio`` field."""

    primary_field = "audio"

    @classmethod
    def parse_input(cls, raw: Any) -> TaskInput:
        if isinstance(raw, (bytes, bytearray, Path, np.ndarray)):
            raw = {"audio": raw}
        return super().parse_input(raw)


# ---- speech recognition: schemas ---------------------------------------------------------------
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


@dataclass
class _ClipDecoding:
    """What the windows of one clip share: task, language (detected on the first batch when not
    given) and the tokenizer built for them."""

    task: str
    language: str | None
    probability: float | None = None
    tokenizer: Any = None


# ---- speech recognition: backends ---------------------------------------------------------------
class _FasterWhisper:
    """CTranslate2 Whisper through faster-whisper, one clip at a time (CTranslate2 already spreads
    one clip over every core).

    ``batch_size == 1`` or a clip under 30 s: faster-whisper's own sequential loop, exactly what a
    direct ``WhisperModel.transcribe`` call does. Otherwise the clip is cut into windows and
    ``batch_size`` windows go through the encoder and decoder together, as in faster-whisper's
    ``BatchedInferencePipeline`` but keeping the speech that pipeline loses at window ends
    (see :func:`split_on_timestamps` and :func:`decode_windows`).
    """

    def __init__(self, location: str, device: str) -> None:
        fw = require("faster_whisper", "audio")
        on_cuda = device.startswith("cuda")
        index = int(device.split(":")[1]) if ":" in device else 0
        compute_type = "float16" if on_cuda else "int8"
        self.model = fw.WhisperModel(
            location, device="cuda" if on_cuda else "cpu", device_index=index, compute_type=compute_type
        )
        self.languages = list(self.model.supported_languages)

    def transcribe_many(self, batch: list[AsrFeatures], params: AsrParams) -> list[Transcript]:
        return [self.transcribe(f.samples, f.language, params) for f in batch]

    def transcribe(self, samples: np.ndarray, language: str | None, params: AsrParams) -> Transcript:
        duration = len(samples) / SAMPLING_RATE
        if params.batch_size > 1 and duration > WINDOW_S:
            return self._transcribe_windows(samples, language, params)
        segments, info = self.model.transcribe(
            samples,
            language=language,
            task=params.task,
            beam_size=params.beam_size,
            word_timestamps=params.word_timestamps,
            vad_filter=params.vad_filter,
            condition_on_previous_text=params.condition_on_previous_text,
        )
        raw = [_fw_segment(s) for s in segments]  # the generator decodes as it is consumed
        probability = None if language else round(float(info.language_probability), 4)
        return Transcript(info.language, probability, [(0.0, duration, raw)])

    def _features(self, samples: np.ndarray) -> np.ndarray:
        """Log-mel of one window. The audio, not the mel, is padded to 30 s (as OpenAI's Whisper
        does; faster-whisper pads the mel with zeros): the model sees true silence after the
        window's last words and transcribes them instead of stopping short."""
        from faster_whisper.audio import pad_or_trim

        padded = np.pad(samples, (0, max(0, int(WINDOW_S * SAMPLING_RATE) - len(samples))))
        return pad_or_trim(self.model.feature_extractor(padded)[..., :-1])

    def _transcribe_windows(self, samples: np.ndarray, language: str | None, params: AsrParams) -> Transcript:
        windows = [Window(0, a, b) for a, b in speech_windows(samples, params.vad_filter)]
        if not windows:
            return Transcript(language or "en", None, [])
        state = _ClipDecoding(params.task, language)

        def decode(parts: list[Window]) -> list[list[dict[str, Any]]]:
            out = []
            for i in range(0, len(parts), params.batch_size):
                out += self._decode_batch(samples, parts[i : i + params.batch_size], state, params)
            return out

        segments = decode_windows([samples], windows, decode)
        spans = [
            (w.start / SAMPLING_RATE, w.end / SAMPLING_RATE, segs)
            for w, segs in zip(windows, segments, strict=True)
        ]
        return Transcript(state.language or "en", state.probability, spans)

    def _tokenizer(self, state: _ClipDecoding, encoded: Any) -> Any:
        """The clip's tokenizer. With no language given, the first window decides (the sequential
        loop's rule), read off the encoder output of the first batch rather than a second encoding."""
        from faster_whisper.tokenizer import Tokenizer

        if state.tokenizer is None:
            multilingual = self.model.model.is_multilingual
            if state.language is None and not multilingual:
                state.language, state.probability = "en", 1.0
            elif state.language is None:
                token, probability = self.model.model.detect_language(encoded)[0][0]  # best of window 0
                state.language, state.probability = token[2:-2], round(float(probability), 4)
            state.tokenizer = Tokenizer(
                self.model.hf_tokenizer, multilingual, task=state.task, language=state.language
            )
        return state.tokenizer

    def _decode_batch(
        self, samples: np.ndarray, parts: list[Window], state: _ClipDecoding, params: AsrParams
    ) -> list[list[dict[str, Any]]]:
        """One encoder pass and one batched greedy/beam decode for a few windows."""
        from faster_whisper.transcribe import get_compression_ratio, get_suppressed_tokens

        model = self.model
        features = np.stack([self._features(samples[w.start : w.end]) for w in parts])
        encoded = model.encode(features)
        tokenizer = self._tokenizer(state, encoded)
        prompt = model.get_prompt(tokenizer, [], without_timestamps=False)
        results = model.model.generate(
            encoded,
            [prompt] * len(parts),
            beam_size=params.beam_size,
            max_length=model.max_length,
            suppress_blank=True,
            suppress_tokens=list(get_suppressed_tokens(tokenizer, [-1])),
            return_scores=True,
            return_no_speech_prob=True,
        )
        windows = []
        for result, part in zip(results, parts, strict=True):
            ids = result.sequences_ids[0]
            length_s = (part.end - part.start) / SAMPLING_RATE
            segments = split_on_timestamps(ids, tokenizer.timestamp_begin, tokenizer.eot, length_s)
            for seg in segments:
                seg["text"] = tokenizer.decode(seg["tokens"])
                seg.update(
                    seek=0,
                    decoded_end=seg["end"],
                    avg_logprob=result.scores[0] / (len(ids) + 1),
                    no_speech_prob=result.no_speech_prob,
                    compression_ratio=get_compression_ratio(seg["text"]),
                )
            windows.append(segments)
        if params.word_timestamps and any(windows):
            self._add_words(windows, features, encoded, parts, tokenizer)
        for segments in windows:
            for seg in segments:
                del seg["tokens"], seg["seek"]
        return windows

    def _add_words(
        self,
        windows: list[list[dict[str, Any]]],
        features: np.ndarray,
        encoded: Any,
        parts: list[Window],
        tokenizer: Any,
    ) -> None:
        """Word times by cross-attention alignment (faster-whisper's own), for windows with text."""
        keep = [k for k, segments in enumerate(windows) if segments]
        if len(keep) < len(windows):  # the aligner pairs encoder rows with windows one to one
            encoded = self.model.encode(features[keep])
        frames = [
            int(np.ceil((parts[k].end - parts[k].start) / SAMPLING_RATE) * self.model.frames_per_second)
            for k in keep
        ]
        punctuation_before, punctuation_after = (
            "\"'“¿([{-",
            "\"'.。,，!！?？:：”)]}、",
        )  # faster-whisper's defaults
        self.model.add_word_timestamps(
            [windows[k] for k in keep], tokenizer, encoded, frames, punctuation_before, punctuation_after, 0.0
        )


def _fw_segment(seg: Any) -> dict[str, Any]:
    words = [
        {"word": w.word, "start": w.start, "end": w.end, "probability": w.probability}
        for w in seg.words or []
    ]
    return {
        "start": seg.start,
        "end": seg.end,
        "text": seg.text,
        "words": words or None,
        **{key: getattr(seg, key) for key in SEGMENT_SCORES},
    }


class _TransformersWhisper:
    """transformers Whisper: the windows of every clip in a batch share ``generate`` calls."""

    def __init__(self, location: str, device: str, params: AsrParams) -> None:
        import torch
        import transformers

        if params.word_timestamps:
            raise AiforgeError(
                "AF-INPUT-002",
                "word_timestamps needs the faster-whisper backend",
                "use a CTranslate2 model (e.g. --model whisper-base), or drop word_timestamps",
            )
        self.dtype = torch.float16 if device.startswith("cuda") else torch.float32
        self.processor = transformers.AutoProcessor.from_pretrained(location)
        self.model = transformers.WhisperForConditionalGeneration.from_pretrained(location, dtype=self.dtype)
        self.model.to(device).eval()
        self.device = device
        tokenizer = self.processor.tokenizer
        self.timestamp_begin = tokenizer.convert_tokens_to_ids("<|0.00|>")
        self.eot = tokenizer.convert_tokens_to_ids("<|endoftext|>")
        lang_to_id = getattr(self.model.generation_config, "lang_to_id", None) or {}
        self.lang_ids = {token.strip("<|>"): i for token, i in lang_to_id.items()}
        self.multilingual = bool(
            getattr(self.model.generation_config, "is_multilingual", False) and self.lang_ids
        )
        self.languages = sorted(self.lang_ids) if self.multilingual else ["en"]

    def _features(self, clips: list[np.ndarray], parts: list[Window]) -> Any:
        extract = self.processor.feature_extractor
        arrays = [clips[w.item][w.start : w.end] for w in parts]
        return extract(arrays, sampling_rate=SAMPLING_RATE, return_tensors="pt").input_features.to(
            self.device, self.dtype
        )

    def transcribe_many(self, batch: list[AsrFeatures], params: AsrParams) -> list[Transcript]:
        import torch

        clips = [f.samples for f in batch]
        windows = [
            Window(i, a, b)
            for i, clip in enumerate(clips)
            for a, b in speech_windows(clip, params.vad_filter)
        ]
        with torch.inference_mode():
            languages = self._languages(batch, clips, windows)

            def decode(parts: list[Window]) -> list[list[dict[str, Any]]]:
                return self._generate(clips, parts, [languages[w.item][0] for w in parts], params)

            segments = decode_windows(clips, windows, decode)
        return [
            Transcript(
                *languages[i],
                [
                    (w.start / SAMPLING_RATE, w.end / SAMPLING_RATE, segs)
                    for w, segs in zip(windows, segments, strict=True)
                    if w.item == i
                ],
            )
            for i in range(len(batch))
        ]

    def _languages(
        self, batch: list[AsrFeatures], clips: list[np.ndarray], windows: list[Window]
    ) -> list[tuple[str, float | None]]:
        """Per clip: (language, probability) from one decoder step on its first window, unless forced."""
        import torch

        out: list[tuple[str, float | None]] = [
            (f.language, None) if f.language else ("en", None if self.multilingual else 1.0) for f in batch
        ]
        first = {w.item: w for w in reversed(windows)}
        todo = [i for i, f in enumerate(batch) if not f.language and i in first]
        if not (self.multilingual and todo):
            return out
        features = self._features(clips, [first[i] for i in todo])
        start = torch.full(
            (len(todo), 1), self.model.generation_config.decoder_start_token_id, device=self.device
        )
        logits = self.model(input_features=features, decoder_input_ids=start).logits
        codes = list(self.lang_ids)
        probs = logits[:, -1, [self.lang_ids[c] for c in codes]].float().softmax(-1)
        for row, i in enumerate(todo):
            best = int(probs[row].argmax())
            out[i] = (codes[best], round(float(probs[row, best]), 4))
        return out

    def _generate(
        self, clips: list[np.ndarray], parts: list[Window], languages: list[str], params: AsrParams
    ) -> list[list[dict[str, Any]]]:
        """Decode windows ``batch_size`` at a time, one language per generate call."""
        results: list[list[dict[str, Any]]] = [[] for _ in parts]
        for language in dict.fromkeys(languages):
            rows = [k for k, code in enumerate(languages) if code == language]
            kwargs = {"language": language, "task": params.task} if self.multilingual else {}
            for c in range(0, len(rows), params.batch_size):
                chunk = rows[c : c + params.batch_size]
                features = self._features(clips, [parts[k] for k in chunk])
                ids = self.model.generate(
                    features, return_timestamps=True, num_beams=params.beam_size, do_sample=False, **kwargs
                )
                for k, row_ids in zip(chunk, ids.tolist(), strict=True):
                    results[k] = self._segments(row_ids, (parts[k].end - parts[k].start) / SAMPLING_RATE)
        return results

    def _segments(self, ids: list[int], length_s: float) -> list[dict[str, Any]]:
        """One window's ids -> window-relative segments with text."""
        decode = self.processor.tokenizer.decode
        return [
            {"start": s["start"], "end": s["end"], "text": decode(s["tokens"])}
            for s in split_on_timestamps(ids, self.timestamp_begin, self.eot, length_s)
        ]


# ---- speech recognition: the pipeline -------------------------------------------------------------
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
            self.engine: _FasterWhisper | _TransformersWhisper = _FasterWhisper(
                self.model_ref.location, self.device
            )
        else:
            self.backend = "transformers"  # type: ignore[misc]
            self.engine = _TransformersWhisper(self.model_ref.location, self.device, self.params)
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


# ---- audio classification -----------------------------------------------------------------------
class LabelScore(BaseModel):
    label: str
    score: float


class AudioClassificationOutput(BaseModel):
    label: str
    score: float
    scores: list[LabelScore]
    duration: float
    truncated: bool = Field(
        description="the clip was longer than the model's input window; only its start was used"
    )


class AudioClassificationParams(TaskParams):
    top_k: int = Field(default=5, ge=1, description="labels to return")


@register_task(
    "audio-classification",
    summary="label a sound clip",
    hub_default="MIT/ast-finetuned-audioset-10-10-0.4593",
    extra="audio",
    requires=("torch", "transformers", "soundfile"),
    request_params=("top_k",),
    warmup=warm_audio,
    demo=DemoView("audio", "label"),
    trainer=Trainer(
        "aiforge.train.audio:AudioClassificationTask", "audio", ("MIT/ast-finetuned-audioset-10-10-0.4593",)
    ),
    architectures=("ForAudioClassification",),
)
class AudioClassification(AudioPipeline):
    """Label a sound clip (AST, Wav2Vec2, HuBERT... any AutoModelForAudioClassification)."""

    Input = AudioInput
    Output = AudioClassificationOutput
    Params = AudioClassificationParams
    default_batch_size = 8

    def setup(self) -> None:
        import transformers

        location = self.model_ref.location
        self.extractor = transformers.AutoFeatureExtractor.from_pretrained(location)
        self.model = (
            transformers.AutoModelForAudioClassification.from_pretrained(location).to(self.device).eval()
        )
        self.sampling_rate = int(self.extractor.sampling_rate)
        self.max_samples = max_input_samples(self.extractor)

    def preprocess(self, item: AudioInput) -> dict[str, Any]:
        samples = load_audio(item.audio, self.sampling_rate)
        truncated = self.max_samples is not None and len(samples) > self.max_samples
        return {
            "samples": samples[: self.max_samples] if truncated else samples,
            "truncated": truncated,
            "duration": len(samples) / self.sampling_rate,
        }

    def length(self, features: dict[str, Any]) -> int:
        return len(features["samples"])

    def forward(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Per item: its logits plus its duration and truncation flag (postprocess sees no features)."""
        import torch

        inputs = self.extractor(
            [f["samples"] for f in batch], sampling_rate=self.sampling_rate, padding=True, return_tensors="pt"
        )
        with torch.inference_mode():
            logits = (
                self.model(**{k: v.to(self.device) for k, v in inputs.items()}).logits.float().cpu().numpy()
            )
        return [
            {"logits": row, "duration": f["duration"], "truncated": f["truncated"]}
            for row, f in zip(logits, batch, strict=True)
        ]

    def postprocess(self, raw: dict[str, Any], item: AudioInput) -> dict[str, Any]:
        logits = raw["logits"]
        multi = self.model.config.problem_type == "multi_label_classification"
        probs = 1.0 / (1.0 + np.exp(-logits)) if multi else _softmax(logits)
        labels = self.model.config.id2label
        scores = [
            {"label": str(labels.get(int(i), f"LABEL_{i}")), "score": round(float(probs[i]), 6)}
            for i in np.argsort(-probs)[: self.params.top_k]
        ]
        return {
            **scores[0],
            "scores": scores,
            "duration": round(raw["duration"], 3),
            "truncated": raw["truncated"],
        }


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max())
    return e / e.sum()


def max_input_samples(extractor: Any) -> int | None:
    """How many samples the model reads at most: AST takes ``max_length`` frames of 10 ms, Whisper-style
    extractors ``n_samples``; Wav2Vec2 / HuBERT encoders take any length (None)."""
    if getattr(extractor, "n_samples", None):
        return int(extractor.n_samples)
    if type(extractor).__name__ == "ASTFeatureExtractor":
        return int(extractor.max_length * extractor.sampling_rate // 100)
    return None


# ---- text to audio ------------------------------------------------------------------------------
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
