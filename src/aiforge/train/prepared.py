"""The prepared run: data, task and model, checked and ready (:func:`aiforge.train.loop.prepare`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aiforge.train.config import TrainConfig
from aiforge.train.data import Dataset
from aiforge.train.text import Encoded, TextClassificationTask


@dataclass
class Prepared:
    """Data, task and model, checked and ready: shared by the real run and the dry run."""

    config: TrainConfig
    dataset: Dataset
    task: TextClassificationTask
    model: torch.nn.Module
    backbone: str
    train: Encoded
    validation: Encoded
    test: Encoded | None
    train_lengths: list[int]
    device: str
    frozen: int
