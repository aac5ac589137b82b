"""Long audio for Whisper: cut into windows at quiet points, decode them in batches, stitch the segments.

Whisper reads 30 s at a time. :func:`plan_windows` (or :func:`speech_windows`, with the VAD) cuts a
clip into windows at quiet points; :func:`decode_windows` runs them through an engine's batch decoder.

Batched windows lose what Whisper's sequential loop does at a window's end (it seeks back and
decodes again), so :func:`split_on_timestamps` keeps a window's unfinished last segment and
:func:`decode_windows` re-decodes a window whose transcript stopped early while speech follows.
Every engine hands its segments to :func:`stitch_segments`, which guarantees what subtitles rely
on: segments in order, never overlapping, inside the clip.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.media import AUDIO_SAMPLING_RATE

SAMPLING_RATE = AUDIO_SAMPLING_RATE  # Whisper's input rate
WINDOW_S = 30.0  # Whisper's receptive field: one mel window
# The longest window aiforge plans. Whisper tends to leave out an utterance that ends near the 30 s
# edge (its training transcripts dropped speech cut by it); 2 s of true silence after every window's
# last words removes most of the re-decoding that decode_windows would otherwise need.
CHUNK_S = 28.0


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
    start = 0.0
    text: list[int] = []
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
            last = segments[-1] if segments else {"end": 0.0}
            stop_s: float = last["decoded_end"] if "decoded_end" in last else last["end"]
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
