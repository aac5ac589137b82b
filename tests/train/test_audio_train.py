"""Audio classification through ``aiforge train``: "yes" and "no" spoken by espeak-ng at varied
speed and pitch, in class folders, on a tiny random AST. The model is random, so these tests check
plumbing (decoding, resampling, baseline, saving, loading, errors), not accuracy."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from aiforge.errors import AiforgeError
from aiforge.tasks import load_pipeline
from aiforge.train import dry_run, train
from tests.train.conftest import config_builder

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs Debian package espeak-ng")
WORDS = ("yes", "no")
VOICES = [(speed, pitch) for speed in (120, 160, 200) for pitch in (20, 50, 80)]  # 9 clips per word


@pytest.fixture(scope="session")
def spoken_words(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``yes/`` and ``no/``: 9 espeak-ng WAVs each (22.05 kHz, resampled to 16 kHz when read)."""
    root = tmp_path_factory.mktemp("words")
    for word in WORDS:
        (root / word).mkdir()
        for speed, pitch in VOICES:
            wav = root / word / f"{word}-s{speed}-p{pitch}.wav"
            subprocess.run(
                ["espeak-ng", "-s", str(speed), "-p", str(pitch), "-w", str(wav), word], check=True
            )
    return root


@pytest.fixture(scope="session")
def tiny_ast_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_ast

    return make_tiny_ast(tmp_path_factory.mktemp("tiny-ast"), ["speech", "music", "silence"])


@pytest.fixture
def audio_config(tiny_ast_backbone: Path, spoken_words: Path, tmp_path: Path):
    return config_builder(
        "task=audio-classification",
        f"model={tiny_ast_backbone}",
        f"output_dir={tmp_path / 'run'}",
        f"data.train={spoken_words}",
        "data.validation_split=0.3",
        "training.batch_size=4",
        "training.lr=1e-3",
    )


def test_audio_training_saves_a_model_the_pipeline_loads_with_the_word_labels(
    audio_config, spoken_words: Path
) -> None:
    result = train(audio_config(), progress=False)
    assert (result.model_dir / "preprocessor_config.json").is_file()
    assert result.baseline["name"] == "log-mel-statistics+logreg" and "validation" in result.baseline
    assert result.metrics["validation"]["per_class"].keys() == {"no", "yes"}
    pipe = load_pipeline("audio-classification", model=str(result.model_dir), device="cpu")
    out = pipe(str(spoken_words / "yes" / "yes-s160-p50.wav"))
    assert {s["label"] for s in out["scores"]} == {"no", "yes"} and out["duration"] > 0.2


def test_audio_dry_run_counts_samples_and_skips_undecodable_clips(
    audio_config, spoken_words: Path, tmp_path: Path
) -> None:
    words = shutil.copytree(spoken_words, tmp_path / "words")
    (words / "no" / "broken.wav").write_bytes(b"RIFF....WAVEfmt not really")
    report = dry_run(audio_config(f"data.train={words}"))
    assert report.skipped_rows == {"train": {"undecodable audio": 1}}
    assert report.rows["train"] + report.rows["validation"] == 2 * len(VOICES)
    assert report.length_unit == "samples" and report.max_length == 16000  # AST's 100-frame window
    assert any(line.startswith("samples") for line in report.lines())
    with pytest.raises(AiforgeError) as err:
        dry_run(audio_config(f"data.train={words}"), strict=True)
    assert err.value.code == "AF-DATA-003" and "broken.wav" in err.value.message

    (words / "maybe").mkdir()
    with pytest.raises(AiforgeError) as err:
        dry_run(audio_config(f"data.train={words}"))
    assert err.value.code == "AF-DATA-003" and "maybe" in err.value.message
