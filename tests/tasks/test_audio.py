"""Audio tasks: decoding, Whisper chunking/stitching, transcript formats, classification, TTS.

Speech comes from Debian's ``espeak-ng`` (robotic, but Whisper base reads its English well); the
packaged Whisper base (CTranslate2) gives known answers; tiny random transformers models of the real
architectures (Whisper, AST, VITS) test the plumbing, never accuracy.
"""

from __future__ import annotations

import base64
import io
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile

from aiforge.errors import AiforgeError
from aiforge.media import load_audio
from aiforge.tasks import load_pipeline
from aiforge.tasks.audio.transcripts import format_transcript
from aiforge.tasks.audio.windows import (
    CHUNK_S,
    SAMPLING_RATE,
    Window,
    decode_windows,
    plan_windows,
    split_on_timestamps,
    stitch_segments,
)

FOX = "the quick brown fox jumps over the lazy dog"
SENTENCES = [
    FOX,
    "machine learning engineers often spend more time cleaning data than training models",
    "the weather today is sunny with a light breeze from the west",
    "please remember to save your work before closing the application",
    "trains from the central station leave every fifteen minutes",
    "she bought three apples two oranges and a loaf of bread",
]

needs_espeak = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian package espeak-ng")


def speak(text: str, voice: str = "en") -> np.ndarray:
    """espeak-ng speech as 16 kHz mono float32 (decoded through aiforge's own loader)."""
    wav = subprocess.run(["espeak-ng", "-v", voice, "--stdout", text], capture_output=True, check=True).stdout
    return load_audio(wav)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def overlap(expected: str, heard: str) -> float:
    """Share of the expected words that were heard."""
    heard_words = set(words(heard))
    return sum(w in heard_words for w in words(expected)) / len(words(expected))


def write_wav(path: Path, samples: np.ndarray, rate: int = SAMPLING_RATE) -> Path:
    soundfile.write(path, samples, rate, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def long_clip() -> tuple[np.ndarray, list[tuple[float, float]]]:
    """About 70 s: the sentences twice, 1.5 s of silence after each; returns (samples, sentence spans)."""
    pause = np.zeros(int(1.5 * SAMPLING_RATE), np.float32)
    parts, spans, t = [], [], 0.0
    for sentence in SENTENCES * 2:
        clip = speak(sentence)
        spans.append((t, t + len(clip) / SAMPLING_RATE))
        parts += [clip, pause]
        t += (len(clip) + len(pause)) / SAMPLING_RATE
    samples = np.concatenate(parts)
    assert 55 < len(samples) / SAMPLING_RATE < 90, "espeak-ng speaks at an unexpected rate"
    return samples, spans


@pytest.fixture(scope="module")
def whisper_base():
    return load_pipeline("automatic-speech-recognition", "whisper-base", device="cpu")


# ---- decoding ------------------------------------------------------------------------------------
def test_load_audio_reads_path_bytes_and_base64_alike_at_16k(tmp_path: Path) -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(44100) / 44100).astype(np.float32) * 0.5  # 1 s at 44.1 kHz
    path = write_wav(tmp_path / "tone.wav", tone, 44100)
    from_path = load_audio(str(path))
    assert from_path.dtype == np.float32 and abs(len(from_path) - SAMPLING_RATE) < 200  # resampled
    assert np.array_equal(from_path, load_audio(path.read_bytes()))
    b64 = base64.b64encode(path.read_bytes()).decode()
    assert np.array_equal(from_path, load_audio(b64))
    assert np.array_equal(from_path, load_audio("data:audio/wav;base64," + b64))


def test_undecodable_audio_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF\x00\x00 this is not audio at all" * 10)
    with pytest.raises(AiforgeError) as err:
        load_audio(str(bad))
    assert err.value.code == "AF-INPUT-004" and "broken.wav" in err.value.message
    with pytest.raises(AiforgeError) as err:
        load_audio(b"not audio either", name="upload.mp3")
    assert err.value.code == "AF-INPUT-004" and "upload.mp3" in err.value.message


def test_missing_audio_file_is_an_input_error() -> None:
    with pytest.raises(AiforgeError) as err:
        load_audio("no/such/clip.wav")
    assert err.value.code == "AF-INPUT-001" and "no/such/clip.wav" in err.value.message


# ---- chunking and stitching ---------------------------------------------------------------------
def test_plan_windows_cuts_long_audio_in_silences() -> None:
    rng = np.random.default_rng(0)
    sr = SAMPLING_RATE
    audio = (rng.standard_normal(75 * sr) * 0.3).astype(np.float32)
    silences = [(27.0, 28.0), (52.5, 53.5)]
    for a, b in silences:
        audio[int(a * sr) : int(b * sr)] = 0.0
    spans = plan_windows(audio)
    assert spans[0][0] == 0 and spans[-1][1] == len(audio)
    assert all(prev[1] == nxt[0] for prev, nxt in zip(spans, spans[1:], strict=False))  # contiguous
    assert all(b - a <= CHUNK_S * sr for a, b in spans)
    cuts = [b / sr for _, b in spans[:-1]]
    assert len(cuts) == 2
    for cut, (a, b) in zip(cuts, silences, strict=True):
        assert a + 0.3 < cut < b - 0.3  # the middle of the silence, not its edge


def test_short_audio_is_one_window() -> None:
    assert plan_windows(np.zeros(5 * SAMPLING_RATE, np.float32)) == [(0, 5 * SAMPLING_RATE)]


def test_stitch_offsets_clamps_and_orders_segments() -> None:
    windows = [
        (
            0.0,
            29.0,
            [{"start": 0.5, "end": 4.0, "text": " Hello"}, {"start": 3.0, "end": 41.0, "text": " world."}],
        ),
        (
            29.0,
            40.0,
            [{"start": 0.0, "end": 2.0, "text": "  "}, {"start": 1.0, "end": 0.5, "text": " Again."}],
        ),
    ]
    segments, text = stitch_segments(windows)
    assert text == "Hello world. Again."
    assert [s["id"] for s in segments] == [0, 1, 2]
    assert [(s["start"], s["end"]) for s in segments] == [(0.5, 4.0), (4.0, 29.0), (30.0, 30.0)]


def test_split_on_timestamps_keeps_the_unfinished_last_segment() -> None:
    ts, eot, lang = 1000, 900, 950  # timestamp_begin, end of text, a special token in between
    tokens = [lang, ts + 0, 1, 2, ts + 50, ts + 50, 3, ts + 100, ts + 110, 4, 5, eot]
    segments = split_on_timestamps(tokens, ts, eot, window_s=12.5)
    assert segments == [
        {"start": 0.0, "end": 1.0, "tokens": [1, 2]},
        {"start": 1.0, "end": 2.0, "tokens": [3]},
        {"start": 2.2, "end": 12.5, "tokens": [4, 5]},  # no closing timestamp: runs to the window end
    ]
    assert split_on_timestamps([ts, ts + 20, eot], ts, eot, 5.0) == []  # timestamps only: no speech


@needs_espeak
def test_decode_windows_resumes_where_a_window_stopped_early() -> None:
    # A scripted decoder (not a model) that, like Whisper near a window's end, stops after 2 s.
    clip = np.concatenate([speak(FOX), np.zeros(3 * SAMPLING_RATE, np.float32)])  # ~2.8 s speech, 3 s silence
    calls: list[Window] = []

    def decode(parts: list[Window]) -> list[list[dict]]:
        calls.extend(parts)
        return [[{"start": 0.0, "end": 2.0, "text": f" from {p.start}"}] for p in parts]

    [segments] = decode_windows([clip], [Window(0, 0, len(clip))], decode)
    # resumed once, at the last timestamp (speech follows it); the silence after 4 s is not decoded
    assert calls == [Window(0, 0, len(clip)), Window(0, 2 * SAMPLING_RATE, len(clip))]
    assert [(s["start"], s["end"]) for s in segments] == [(0.0, 2.0), (2.0, 4.0)]


# ---- transcript formats ---------------------------------------------------------------------------
RESULT = {
    "text": "Hello there. General Kenobi.",
    "language": "en",
    "language_probability": 0.97,
    "duration": 3725.5,
    "task": "transcribe",
    "segments": [
        {"id": 0, "start": 0.0, "end": 1.5, "text": "Hello there."},
        {"id": 1, "start": 3723.25, "end": 3725.125, "text": "General Kenobi."},
    ],
}


def test_srt_and_vtt_cues() -> None:
    assert format_transcript(RESULT, "srt") == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n\n"
        "2\n01:02:03,250 --> 01:02:05,125\nGeneral Kenobi.\n\n"
    )
    assert format_transcript(RESULT, "vtt") == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:01.500\nHello there.\n\n"
        "01:02:03.250 --> 01:02:05.125\nGeneral Kenobi.\n\n"
    )


def test_text_json_and_verbose_json() -> None:
    assert format_transcript(RESULT, "text") == "Hello there. General Kenobi.\n"
    assert format_transcript(RESULT, "json") == {"text": "Hello there. General Kenobi."}
    verbose = format_transcript(RESULT, "verbose_json")
    assert verbose["language"] == "english" and verbose["duration"] == 3725.5
    assert [s["start"] for s in verbose["segments"]] == [0.0, 3723.25]
    assert {"id", "seek", "tokens", "avg_logprob", "no_speech_prob"} <= set(verbose["segments"][0])
    json.dumps(verbose)
    with pytest.raises(AiforgeError) as err:
        format_transcript(RESULT, "docx")
    assert err.value.code == "AF-INPUT-002"


# ---- packaged Whisper base (faster-whisper) --------------------------------------------------------
@needs_espeak
def test_whisper_base_transcribes_english(whisper_base) -> None:
    out = whisper_base(speak(FOX))
    json.dumps(out)  # plain JSON types, no numpy scalars
    assert whisper_base.backend == "faster-whisper"
    assert out["language"] == "en" and out["language_probability"] > 0.5
    assert overlap(FOX, out["text"]) >= 0.6, out["text"]
    assert out["segments"] and out["segments"][-1]["end"] <= out["duration"]


@needs_espeak
def test_whisper_base_forced_korean_writes_hangul(whisper_base, tmp_path: Path) -> None:
    # espeak's Korean voice is too robotic for language detection (Whisper hears Thai), so force it.
    clip = write_wav(tmp_path / "ko.wav", speak("안녕하세요 오늘 날씨가 정말 좋네요", voice="ko"))
    out = whisper_base({"audio": str(clip), "language": "ko"})
    assert out["language"] == "ko" and out["language_probability"] is None  # forced, not detected
    assert re.search(r"[\uac00-\ud7a3]", out["text"]), out["text"]


def test_unknown_language_is_refused(whisper_base) -> None:
    with pytest.raises(AiforgeError) as err:
        whisper_base({"audio": np.zeros(SAMPLING_RATE, np.float32), "language": "klingon"})
    assert err.value.code == "AF-INPUT-002" and "klingon" in err.value.message


def test_english_only_model_refuses_korean() -> None:
    with pytest.raises(AiforgeError) as err:
        load_pipeline("asr", "whisper-tiny.en", device="cpu", language="ko")
    assert err.value.code == "AF-INPUT-002"


def assert_covers_long_clip(out: dict, spans: list[tuple[float, float]]) -> None:
    """Segments in order, not overlapping, spanning the clip, and every sentence heard where it was
    spoken. Whisper base mishears a few words of synthetic speech here and there, and which ones
    depends on the CPU's kernels (AVX2, AVX-512, AMX): measured on one machine, the last sentence
    came back as "remote, reattles to oranges, and a loaf of bread" (6 of 11 words). So each
    sentence needs half its words at its own time, and the clip as a whole 80 %."""
    segs = out["segments"]
    assert all(s["start"] <= s["end"] for s in segs)
    assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:], strict=False))
    assert segs[0]["start"] < spans[0][0] + 2 and segs[-1]["end"] > spans[-1][0]
    assert segs[-1]["end"] <= out["duration"]
    shares = []
    for (start, end), sentence in zip(spans, SENTENCES * 2, strict=True):
        heard = " ".join(s["text"] for s in segs if s["end"] > start - 1 and s["start"] < end + 1)
        shares.append(overlap(sentence, heard))
        assert shares[-1] >= 0.5, (sentence, start, heard)
    assert sum(shares) / len(shares) >= 0.8, shares


@needs_espeak
@pytest.mark.parametrize("batch_size", [1, 4], ids=["sequential", "batched-chunks"])
def test_long_audio_segments_are_stitched_in_order(whisper_base, long_clip, batch_size: int) -> None:
    samples, spans = long_clip
    pipe = (
        whisper_base if batch_size == 1 else load_pipeline("asr", "whisper-base", device="cpu", batch_size=4)
    )
    out = pipe(samples)
    assert out["duration"] == pytest.approx(len(samples) / SAMPLING_RATE, abs=0.01)
    assert_covers_long_clip(out, spans)


@needs_espeak
def test_batched_word_timestamps_are_on_the_clip_time_line(long_clip) -> None:
    samples, spans = long_clip
    pipe = load_pipeline(
        "asr", "whisper-base", device="cpu", batch_size=4, word_timestamps=True, language="en"
    )
    out = pipe(samples)
    json.dumps(out)  # plain JSON types, no numpy scalars
    assert_covers_long_clip(out, spans)
    words = [w for seg in out["segments"] for w in seg["words"]]
    assert all(s["start"] <= w["start"] <= w["end"] <= s["end"] for s in out["segments"] for w in s["words"])
    assert all(a["start"] <= b["start"] for a, b in zip(words, words[1:], strict=False))
    last_start, last_end = spans[-1]  # the last sentence's words sit where it was spoken, not at 0
    last_words = [w for w in words if last_start - 1 <= w["start"] <= last_end + 1]
    assert overlap(SENTENCES[-1], " ".join(w["word"] for w in last_words)) >= 0.6


# ---- transformers Whisper (tiny random model) ------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_whisper(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_whisper

    return make_tiny_whisper(tmp_path_factory.mktemp("tiny-whisper"))


def test_transformers_whisper_batches_windows_of_several_items(tiny_whisper: Path) -> None:
    rng = np.random.default_rng(1)
    long = (rng.standard_normal(70 * SAMPLING_RATE) * 0.1).astype(np.float32)
    short = (rng.standard_normal(5 * SAMPLING_RATE) * 0.1).astype(np.float32)
    pipe = load_pipeline("asr", str(tiny_whisper), device="cpu", batch_size=8)
    assert pipe.backend == "transformers"
    together = pipe.predict([long, short], batch_size=2)
    alone = [pipe(long), pipe(short)]
    for out, single, samples in zip(together, alone, [long, short], strict=True):
        assert out["segments"] == single["segments"]  # batching never mixes items up
        assert out["duration"] == pytest.approx(len(samples) / SAMPLING_RATE, abs=0.01)
        assert 0 < out["language_probability"] <= 1
        segs = out["segments"]
        assert all(s["start"] <= s["end"] <= out["duration"] for s in segs)
        assert all(a["end"] <= b["start"] for a, b in zip(segs, segs[1:], strict=False))
    # the long clip's segments come from all three windows: offsets were applied
    window_starts = [a / SAMPLING_RATE for a, _ in plan_windows(long)]
    assert len(window_starts) == 3
    assert any(s["start"] >= window_starts[2] for s in together[0]["segments"])


def test_transformers_whisper_forced_language_and_errors(tiny_whisper: Path, tmp_path: Path) -> None:
    pipe = load_pipeline("asr", str(tiny_whisper), device="cpu", language="ko")
    out = pipe(np.zeros(3 * SAMPLING_RATE, np.float32))
    assert out["language"] == "ko" and out["language_probability"] is None
    bad = tmp_path / "noise.ogg"
    bad.write_bytes(b"OggS" + bytes(200))
    [record] = pipe.predict([str(bad)])
    assert record["error"]["code"] == "AF-INPUT-004" and "noise.ogg" in record["error"]["message"]
    with pytest.raises(AiforgeError) as err:
        load_pipeline("asr", str(tiny_whisper), device="cpu", word_timestamps=True)
    assert err.value.code == "AF-INPUT-002"


# ---- audio classification (tiny AST) ---------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_ast(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_ast

    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"), ["speech", "music", "silence"])  # 1 s window


def test_audio_classification_labels_scores_and_truncation(tiny_ast: Path) -> None:
    rng = np.random.default_rng(2)
    short = (rng.standard_normal(SAMPLING_RATE // 2) * 0.1).astype(np.float32)
    long = (rng.standard_normal(3 * SAMPLING_RATE) * 0.1).astype(np.float32)
    pipe = load_pipeline("audio-classification", str(tiny_ast), device="cpu", top_k=2)
    together = pipe.predict([short, long], batch_size=2)
    for out, samples in zip(together, [short, long], strict=True):
        assert [s["label"] for s in out["scores"]][0] == out["label"] and len(out["scores"]) == 2
        assert {s["label"] for s in out["scores"]} <= {"speech", "music", "silence"}
        assert out["scores"][0]["score"] >= out["scores"][1]["score"]
        assert out == pipe(samples)  # fixed-size input: batching changes nothing
    assert together[0]["truncated"] is False and together[1]["truncated"] is True  # 3 s > the 1 s window
    assert together[1]["duration"] == pytest.approx(3.0)


# ---- text to audio (tiny VITS) ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_vits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_vits

    return make_tiny_vits(tmp_path_factory.mktemp("tiny-vits"))


def test_tts_writes_a_valid_wav(tiny_vits: Path, tmp_path: Path) -> None:
    pipe = load_pipeline("text-to-audio", str(tiny_vits), device="cpu", output_dir=str(tmp_path / "out"))
    first, second = pipe.predict(["hello world", "a much longer sentence to speak aloud"], batch_size=2)
    for out in (first, second):
        samples, rate = soundfile.read(out["path"])
        assert rate == out["sampling_rate"] == 16000 and len(samples) > 0
        assert out["duration"] == pytest.approx(len(samples) / rate, abs=1e-3)
        info = soundfile.info(io.BytesIO(base64.b64decode(out["audio_base64"])))
        assert info.subtype == "PCM_16" and info.frames == len(samples)
        assert Path(out["path"]).read_bytes() == base64.b64decode(out["audio_base64"])
    assert second["duration"] > first["duration"]  # padding was cut off per item
    assert first["path"] != second["path"]


def test_tts_explicit_path_and_unspeakable_text(tiny_vits: Path, tmp_path: Path) -> None:
    pipe = load_pipeline("tts", str(tiny_vits), device="cpu")
    out = pipe({"text": "good morning", "path": str(tmp_path / "morning.wav")})
    assert out["path"] == str(tmp_path / "morning.wav") and soundfile.info(out["path"]).samplerate == 16000
    assert pipe({"text": "good morning"})["path"] is None
    [record] = pipe.predict(["12345 !!!"])
    assert record["error"]["code"] == "AF-INPUT-002"
