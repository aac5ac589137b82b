"""What the training loop asks of a task: the :class:`TrainingTask` protocol.

A task card names its adapter as ``Trainer(adapter="module:Class", ...)``; the loop builds it as
``Class(config, dataset, ref)`` and then only calls what this protocol lists, in this order:

* ``load()`` the backbone with a fresh head (and the input processor: tokenizer, feature
  extractor, image transforms);
* ``input_lengths(train)`` then ``resolve_max_length(lengths)``: the input limit (``max_length``),
  in ``length_unit`` (tokens, samples; ``None`` where inputs have no length, as images);
* ``encode(split)`` per split: an :class:`EncodedSplit` the task alone knows the inside of;
* ``collate(encoded, indices, device)``: the keyword arguments of one forward pass, labels
  included (``model(**batch).loss``);
* ``evaluate(...)`` with loss and the task's metrics, ``metric_name()`` picking the best model;
* ``fit_baseline(prep)`` (``None``: none), ``save(model, dir)`` and ``reload(dir, device)``.

Encoded splits are the task's own type (token ids, file paths, decoded samples), so the protocol is
generic over it: whatever ``encode`` returns is what ``collate`` and ``evaluate`` receive.
Shared code for the classifiers lives in :mod:`aiforge.train.classifier`, not here.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    import torch

    from aiforge.train.data import Split
    from aiforge.train.prepared import Prepared

# A factory of mixed-precision contexts (``torch.autocast`` or a no-op): one per forward pass.
Autocast = Callable[[], AbstractContextManager[Any]]


class EncodedSplit(Protocol):
    """A split ready for batching, whatever the task keeps per item: its labels (what baselines
    and metrics read), how many items ``max_length`` cut, and per-item lengths (batch grouping)."""

    labels: list[Any]
    truncated: int

    def lengths(self) -> list[int]: ...

    def __len__(self) -> int: ...


EncodedT = TypeVar("EncodedT", bound=EncodedSplit)


class TrainingTask(Protocol[EncodedT]):
    """Everything task-specific the training loop, the dry run and the reports call."""

    name: str
    labels: list[str]
    multi_label: bool
    max_length: int  # resolved by resolve_max_length; 0 where inputs have no length
    length_unit: str | None  # what input_lengths counts (the dry run reports it)

    def load(self) -> torch.nn.Module: ...

    def input_lengths(self, split: Split) -> list[int]: ...

    def resolve_max_length(self, lengths: list[int]) -> int: ...

    def encode(self, split: Split) -> EncodedT: ...

    def collate(self, encoded: EncodedT, indices: list[int], device: str) -> dict[str, torch.Tensor]: ...

    def evaluate(
        self, model: torch.nn.Module, encoded: EncodedT, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]: ...

    def metric_name(self) -> str: ...

    def fit_baseline(self, prep: Prepared) -> dict[str, Any] | None: ...

    def save(self, model: torch.nn.Module, directory: Path) -> None: ...

    def reload(self, directory: Path, device: str) -> torch.nn.Module: ...
