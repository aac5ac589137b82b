"""Speech-recognition output rendered in the OpenAI transcription formats (json, text, srt, vtt,
verbose_json); the server's ``/v1/audio/transcriptions`` route answers with these."""

from __future__ import annotations

from typing import Any, Literal, get_args

from aiforge.errors import AiforgeError

# OpenAI's response_format values (the server's transcription route takes exactly these)
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
TRANSCRIPT_FORMATS: tuple[str, ...] = get_args(TranscriptFormat)


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
