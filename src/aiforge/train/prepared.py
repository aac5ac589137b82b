"""The prepared run: data, task and model, checked and ready (:func:`aiforge.train.loop.prepare`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic

import torch

from aiforge.train.config import TrainConfig
from aiforge.train.data import Dataset
from aiforge.train.task import EncodedT, TrainingTask


@dataclass
class Prepared(Generic[EncodedT]):
    """Data, task and model, checked and ready: shared by the real run and the dry run. The splits
    are encoded by ``task`` (its own type), the only one that reads their inside."""

    config: TrainConfig
    dataset: Dataset
    task: TrainingTask[EncodedT]
    model: torch.nn.Module
    backbone: str
    train: EncodedT
    validation: EncodedT
    test: EncodedT | None
    train_lengths: list[int]
    device: str
    frozen: int
