"""text-to-music on a tiny MusicGen built from a config (8 kHz codec, 125 frames per second): the WAV
has the requested duration, a seed makes it repeatable and another seed changes it."""

from __future__ import annotations

import base64
import copy
import io
from pathlib import Path

import numpy as np
import pytest
import soundfile
from typer.testing import CliRunner

from aiforge.cli import app
from aiforge.tasks import load_pipeline
from aiforge.tasks.execute import is_error
from tests.tiny_models import make_tiny_musicgen

SAMPLING_RATE, HOP = 8000, 64  # the tiny codec: one frame is 64 samples (8 ms)


@pytest.fixture(scope="module")
def musicgen_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_musicgen(tmp_path_factory.mktemp("musicgen"))


@pytest.fixture(scope="module")
def music(musicgen_dir: Path):
    return load_pipeline("text-to-music", str(musicgen_dir), device="cpu", duration=0.1)


def variant(pipe, **params):
    """The pipeline with other parameters, as the server makes one per request."""
    runner = copy.copy(pipe)
    runner.params = pipe.params.model_copy(update=params)
    return runner


def samples_of(out: dict) -> np.ndarray:
    samples, rate = soundfile.read(io.BytesIO(base64.b64decode(out["audio_base64"])))
    assert rate == out["sampling_rate"] == SAMPLING_RATE
    return samples


@pytest.mark.parametrize("duration", [0.05, 0.21])
def test_the_wav_lasts_the_requested_duration(music, duration: float) -> None:
    out = variant(music, duration=duration)("calm piano with soft rain")
    samples = samples_of(out)
    assert abs(len(samples) - duration * SAMPLING_RATE) <= HOP  # within one codec frame
    assert out["duration"] == pytest.approx(len(samples) / SAMPLING_RATE, abs=1e-3)
    assert np.abs(samples).max() > 0  # a waveform, not silence


def test_a_seed_repeats_the_music_and_another_seed_changes_it(music) -> None:
    text = "upbeat drums and bass"
    first, again = music(text), music(text)
    assert first["audio_base64"] == again["audio_base64"] and first["seed"] == 0
    other = variant(music, seed=7)(text)
    assert not np.allclose(samples_of(other), samples_of(first))
    # seeded per text: the same music alone or batched beside another description
    batched = music.predict([text, "a slow violin melody"])
    assert batched[0]["audio_base64"] == first["audio_base64"]


def test_a_duration_past_the_model_limit_is_refused_with_the_limit(music) -> None:
    (out,) = variant(music, duration=10.0).predict(["too long"])  # the tiny decoder holds 4 s
    assert is_error(out) and out["error"]["code"] == "AF-INPUT-002"
    assert "4.1 s" in out["error"]["message"] and "duration" in out["error"]["fix"]


def test_cli_writes_a_wav_file(musicgen_dir: Path, tmp_path: Path) -> None:
    options = ["-p", "duration=0.15", "-p", "seed=3", "-p", f"output_dir={tmp_path}"]
    result = CliRunner().invoke(
        app, ["run", "music", "a short jingle", "--model", str(musicgen_dir), *options]
    )
    assert result.exit_code == 0, result.output
    (target,) = tmp_path.glob("*.wav")
    samples, rate = soundfile.read(target)
    assert rate == SAMPLING_RATE and abs(len(samples) - 0.15 * SAMPLING_RATE) <= HOP
