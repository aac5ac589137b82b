"""Speech-recognition throughput: aiforge's pipeline vs faster-whisper called directly.

A 100-second English clip (espeak-ng sentences with short pauses) goes through

* ``load_pipeline("automatic-speech-recognition")`` (the packaged multilingual Whisper base, int8,
  greedy) and ``faster_whisper.WhisperModel.transcribe`` with the same settings: the pipeline's
  overhead (decoding, stitching, JSON) should cost under 5 % (target: ours >= 0.95x direct);
* the same two with batched chunked inference (``batch_size=8``): aiforge's own window batching vs
  faster-whisper's ``BatchedInferencePipeline`` (target: >= 15x real time on 2 cores).

Runs are interleaved (A, B, C, D, A, B, ...) so that load from other processes hits every
configuration alike; the median and best of ``--repeats`` runs are reported, after one warm-up each,
with the CPU time this process spent (steadier than wall time when other processes share the cores).
Needs Debian's ``espeak-ng``. Usage::

    python bench/bench_asr.py [--repeats 5] [--seconds 100] [--batch-size 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import soundfile

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "Machine learning engineers often spend more time cleaning data than training models.",
    "The weather today is sunny with a light breeze from the west.",
    "Please remember to save your work before closing the application.",
    "A good benchmark measures the same thing twice and reports both numbers.",
    "Speech recognition turns spoken words into written text.",
    "The library opens at nine in the morning and closes at six in the evening.",
    "Our team will meet on Thursday to review the quarterly results.",
    "Trains from the central station leave every fifteen minutes.",
    "She bought three apples, two oranges and a loaf of bread.",
    "The museum has a large collection of paintings from the last century.",
    "Reading a good book is one of the best ways to relax.",
]
RATE = 16000


def make_clip(path: Path, seconds: float) -> float:
    """Sentences with 0.7 s pauses, repeated and cut to ``seconds``; returns the duration."""
    from aiforge.media import load_audio

    pause = np.zeros(int(0.7 * RATE), np.float32)
    speech = []
    for sentence in SENTENCES:
        wav = subprocess.run(["espeak-ng", "--stdout", sentence], capture_output=True, check=True).stdout
        speech += [load_audio(wav), pause]
    one_pass = np.concatenate(speech)
    repeats = int(np.ceil(seconds * RATE / len(one_pass)))
    clip = np.tile(one_pass, repeats)[: int(seconds * RATE)]
    soundfile.write(path, clip, RATE, subtype="PCM_16")
    return len(clip) / RATE


def timed(fn: Callable[[], object]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process). On a shared machine wall time swings with other
    processes' load; CPU time barely does, so the ours/direct ratio is also given in CPU time."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--seconds", type=float, default=100.0)
    parser.add_argument("--batch-size", type=int, default=8)
    args = parser.parse_args()

    from faster_whisper import BatchedInferencePipeline, WhisperModel

    from aiforge.tasks import load_pipeline

    workdir = Path(tempfile.mkdtemp(prefix="bench-asr-"))
    audio = workdir / "clip.wav"
    duration = make_clip(audio, args.seconds)
    settings = {"beam_size": 1, "condition_on_previous_text": False}  # aiforge's defaults, spelled out

    ours = load_pipeline("automatic-speech-recognition", device="cpu")
    ours_batched = load_pipeline("automatic-speech-recognition", device="cpu", batch_size=args.batch_size)
    direct = WhisperModel(ours.model_ref.location, device="cpu", compute_type="int8")
    direct_batched = BatchedInferencePipeline(model=direct)

    def run_direct() -> None:
        segments, _ = direct.transcribe(str(audio), **settings)
        list(segments)

    def run_direct_batched() -> None:
        segments, _ = direct_batched.transcribe(str(audio), batch_size=args.batch_size, beam_size=1)
        list(segments)

    configs: dict[str, Callable[[], object]] = {
        "aiforge pipeline, sequential": lambda: ours(str(audio)),
        "faster-whisper direct, sequential": run_direct,
        f"aiforge pipeline, batched chunks (batch_size={args.batch_size})": lambda: ours_batched(str(audio)),
        f"faster-whisper BatchedInferencePipeline (batch_size={args.batch_size}, VAD)": run_direct_batched,
    }
    print(
        f"model: {ours.model_ref.describe()} ({ours.backend}, int8, greedy)  clip: {duration:.0f} s  "
        f"cores: {os.cpu_count()}  load average before: {os.getloadavg()[0]:.1f}"
    )
    for fn in configs.values():  # warm-up: first-call allocations, VAD model load
        fn()
    walls: dict[str, list[float]] = {name: [] for name in configs}
    cpus: dict[str, list[float]] = {name: [] for name in configs}
    for _ in range(args.repeats):
        for name, fn in configs.items():
            wall, cpu = timed(fn)
            walls[name].append(wall)
            cpus[name].append(cpu)

    print(f"\n{'configuration':<66} {'median s':>8} {'best s':>7} {'x real time med/best':>21} {'CPU s':>6}")
    for name in configs:
        med, best = statistics.median(walls[name]), min(walls[name])
        print(
            f"{name:<66} {med:8.2f} {best:7.2f} {duration / med:13.1f} / {duration / best:<5.1f}"
            f" {statistics.median(cpus[name]):6.1f}"
        )
    names = list(configs)
    for ours_name, direct_name in ((names[0], names[1]), (names[2], names[3])):
        ratios = [
            statistics.median(walls[direct_name]) / statistics.median(walls[ours_name]),
            min(walls[direct_name]) / min(walls[ours_name]),
            statistics.median(cpus[direct_name]) / statistics.median(cpus[ours_name]),
        ]
        mode = ours_name.split(", ", 1)[1]
        print(
            f"speed ours/direct [{mode}]: "
            + ", ".join(
                f"{r:.2f}x {kind}"
                for r, kind in zip(ratios, ("wall median", "wall best", "CPU time"), strict=True)
            )
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
