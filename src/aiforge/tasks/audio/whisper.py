"""The two Whisper engines speech recognition runs on.

* :class:`FasterWhisper` (CTranslate2, ``ref.format == "ctranslate2"``): the packaged ``whisper-base``
  (multilingual, Korean included) and ``whisper-tiny.en``; int8 on CPU, float16 on CUDA. With
  ``batch_size=1`` (the default) a clip runs through faster-whisper's own sequential loop, exactly as
  a direct ``WhisperModel.transcribe`` call would. With ``batch_size > 1`` a clip longer than 30 s
  is cut at quiet points into windows (:mod:`aiforge.tasks.audio.windows`) that go through the
  encoder and the decoder ``batch_size`` at a time: faster on long audio, since every window is
  independent.
* :class:`TransformersWhisper` (``WhisperForConditionalGeneration``) for local model dirs and hub ids:
  the same windows, and the windows of every clip in a batch share ``generate`` calls.

torch and transformers are imported inside the transformers engine only, so the packaged
faster-whisper path starts without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from aiforge.errors import AiforgeError, require
from aiforge.tasks.audio.asr_types import AsrFeatures, AsrParams, Transcript
from aiforge.tasks.audio.windows import (
    SAMPLING_RATE,
    SEGMENT_SCORES,
    WINDOW_S,
    Window,
    decode_windows,
    speech_windows,
    split_on_timestamps,
)


@dataclass
class _ClipDecoding:
    """What the windows of one clip share: task, language (detected on the first batch when not
    given) and the tokenizer built for them."""

    task: str
    language: str | None
    probability: float | None = None
    tokenizer: Any = None


class FasterWhisper:
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


class TransformersWhisper:
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
        self.model.eval().to(device)
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
