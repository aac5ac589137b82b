"""Checkpoints: atomic writes and exact RNG restore."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from aiforge.errors import AiforgeError
from aiforge.train.checkpoint import CHECKPOINT_NAME, atomic_save, load_checkpoint, rng_state, set_rng_state


class Unpicklable:
    def __reduce__(self):
        raise RuntimeError("disk full, or killed mid-write")


def test_failed_write_leaves_the_last_good_checkpoint(tmp_path: Path) -> None:
    atomic_save({"step": 10}, tmp_path / CHECKPOINT_NAME)
    with pytest.raises(RuntimeError):
        atomic_save({"step": 20, "bad": Unpicklable()}, tmp_path / CHECKPOINT_NAME)
    assert load_checkpoint(tmp_path)["step"] == 10


def test_rng_state_round_trip_replays_the_same_numbers() -> None:
    state = rng_state()
    first = (
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
        torch.nn.Dropout(0.5)(torch.ones(8)),
    )
    set_rng_state(state)
    again = (
        random.random(),
        float(np.random.rand()),
        torch.rand(3).tolist(),
        torch.nn.Dropout(0.5)(torch.ones(8)),
    )
    assert first[:3] == again[:3]
    assert torch.equal(first[3], again[3])


def test_resume_without_checkpoint_says_so(tmp_path: Path) -> None:
    with pytest.raises(AiforgeError) as err:
        load_checkpoint(tmp_path)
    assert err.value.code == "AF-TRAIN-002"
