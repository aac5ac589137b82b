"""Fixtures for the training tests: a tiny random BERT (real architecture, MiniLM tokenizer), small
slices of the bundled NSMC sample, and a config builder that keeps every run fast and offline."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from aiforge.train import load_config
from aiforge.train.config import TrainConfig
from aiforge.train.data import resolve_data_path


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.tiny_models import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny-bert"), head="seq-cls")


@pytest.fixture(scope="session")
def nsmc_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """120 training rows as CSV and 40 test rows as JSONL, both balanced, from the bundled sample."""
    root = tmp_path_factory.mktemp("nsmc")
    train = pd.read_csv(resolve_data_path("packaged:nsmc_sample/train.tsv"), sep="\t")
    test = pd.read_csv(resolve_data_path("packaged:nsmc_sample/test.tsv"), sep="\t")
    small_train = train.groupby("label").head(60).sample(frac=1, random_state=0)
    small_test = test.groupby("label").head(20)
    small_train.to_csv(root / "train.csv", index=False)
    small_test.to_json(root / "test.jsonl", orient="records", lines=True, force_ascii=False)
    return {"train": root / "train.csv", "test": root / "test.jsonl"}


def config_builder(*base: str):
    """``build(*overrides) -> TrainConfig``: ``base`` plus what keeps every test run small, single-
    threaded and untracked; later overrides win."""
    quiet = ["training.epochs=2", "training.num_threads=1", "tracking.enabled=false"]

    def build(*overrides: str) -> TrainConfig:
        return load_config(None, [*quiet, *base, *overrides])

    return build


@pytest.fixture
def make_config(tiny_bert: Path, nsmc_files: dict[str, Path], tmp_path: Path):
    """A fast config on the tiny model; extra ``key=value`` overrides win."""

    def build(*overrides: str) -> TrainConfig:
        base = [
            f"model={tiny_bert}",
            f"output_dir={tmp_path / 'run'}",
            f"data.train={nsmc_files['train']}",
            f"data.test={nsmc_files['test']}",
            "data.validation_split=0.25",
            "training.epochs=2",
            "training.batch_size=16",
            "training.num_threads=1",
            "training.max_length=64",
            "tracking.enabled=false",
        ]
        return load_config(None, base + list(overrides))

    return build
