"""What the classifier adapters share: a pretrained backbone with a fresh head, scored per label.

:class:`ClassifierTask` holds the label vocabulary, loads a transformers ``Auto*`` class with a head
of ``len(labels)`` outputs, evaluates in length-sorted batches and computes (multi-label)
classification metrics. The input side (processor, lengths, encoding, batches, saving) is each
adapter's own: text (:mod:`aiforge.train.text`), tokens, images, audio. Together they implement
:class:`aiforge.train.task.TrainingTask`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic

import numpy as np
import torch

from aiforge.errors import AiforgeError
from aiforge.models import ModelRef
from aiforge.train.config import TrainConfig
from aiforge.train.data import Dataset
from aiforge.train.metrics import classification_metrics, multilabel_metrics
from aiforge.train.task import Autocast, EncodedT

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared


class ClassifierTask(Generic[EncodedT]):
    """Labels, head loading, evaluation and metrics; subclasses add ``load_processor``,
    ``input_lengths``, ``resolve_max_length``, ``encode``, ``collate`` and ``save``."""

    name = ""
    auto_class = ""  # the transformers Auto class with this task's head
    backbone_hint = ""  # the fix an unloadable backbone's error suggests
    default_metric = "accuracy"
    length_unit: str | None = None
    max_length_cuts = True  # inputs longer than max_length lose their end (the dry run warns)

    def __init__(self, config: TrainConfig, dataset: Dataset, ref: ModelRef) -> None:
        self.config = config
        self.dataset = dataset
        self.ref = ref
        self.location = ref.location  # what from_pretrained reads
        self.labels = dataset.labels
        self.label_index = {name: i for i, name in enumerate(self.labels)}
        self.multi_label = config.data.multi_label
        self.max_length = 0

    # ---- model ------------------------------------------------------------------------------------
    def load(self) -> torch.nn.Module:
        """The input processor and the backbone with a fresh head of ``len(labels)`` outputs."""
        self.load_processor()
        return self.load_model()

    def load_processor(self) -> None:
        raise NotImplementedError

    def load_model(self) -> torch.nn.Module:
        import transformers

        try:
            model: torch.nn.Module = getattr(transformers, self.auto_class).from_pretrained(
                self.location,
                num_labels=len(self.labels),
                id2label=dict(enumerate(self.labels)),
                label2id={label: i for i, label in enumerate(self.labels)},
                ignore_mismatched_sizes=True,  # a backbone fine-tuned before has a head of another size
                **self.head_kwargs(),
            )
        except (ValueError, KeyError) as exc:
            raise AiforgeError(
                "AF-MODEL-003",
                f"'{self.config.model}' cannot be loaded for {self.name}: {exc}",
                self.backbone_hint,
            ) from None
        return model

    def head_kwargs(self) -> dict[str, Any]:
        kind = "multi_label_classification" if self.multi_label else "single_label_classification"
        return {"problem_type": kind}

    def reload(self, directory: Path, device: str) -> torch.nn.Module:
        """The model a finished run saved (``save``), for the final evaluation."""
        import transformers

        model: torch.nn.Module = getattr(transformers, self.auto_class).from_pretrained(directory)
        return model.to(device).eval()

    def fit_baseline(self, prep: Prepared[EncodedT]) -> dict[str, Any] | None:
        """The cheap baseline reported next to the fine-tuned model (None: this task has none)."""
        return None

    def metric_name(self) -> str:
        """The validation metric that picks the best checkpoint (``training.metric``, or the task's)."""
        wanted = self.config.training.metric
        return self.default_metric if wanted == "auto" else wanted

    def label_target(self, label: Any) -> Any:
        """A label id, or a 0/1 row over the vocabulary for multi-label."""
        if self.multi_label:
            row = [0.0] * len(self.labels)
            for name in label:
                row[self.label_index[str(name)]] = 1.0
            return row
        return self.label_index[str(label)]

    # ---- the input side: each adapter's own ---------------------------------------------------------
    def collate(self, encoded: EncodedT, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # ---- evaluation -----------------------------------------------------------------------------------
    def eval_batches(
        self, model: torch.nn.Module, encoded: EncodedT, device: str, batch_size: int, autocast: Autocast
    ) -> Iterator[tuple[list[int], Any]]:
        """(row indices, model output) over a split in length-sorted batches: evaluation order does
        not matter, and sorted batches pad least. Callers run it under ``torch.inference_mode``."""
        model.eval()
        lengths = encoded.lengths()
        order = sorted(range(len(encoded)), key=lengths.__getitem__)
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            with autocast():
                out = model(**self.collate(encoded, chunk, device))
            yield chunk, out

    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, encoded: EncodedT, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]:
        """Loss and task metrics over a split."""
        logits = np.zeros((len(encoded), len(self.labels)), dtype=np.float32)
        total_loss = 0.0
        for chunk, out in self.eval_batches(model, encoded, device, batch_size, autocast):
            total_loss += float(out.loss) * len(chunk)
            logits[chunk] = out.logits.float().cpu().numpy()
        metrics = self.metrics(encoded, logits)
        metrics["loss"] = total_loss / max(1, len(encoded))
        return metrics

    def metrics(self, encoded: EncodedT, logits: np.ndarray) -> dict[str, Any]:
        """Scores, plus the per-row truth, prediction and logits (``rows``) that the report's
        intervals, the paired test against the baseline (:mod:`aiforge.train.significance`) and the
        temperature (:mod:`aiforge.train.calibration`) need."""
        if self.multi_label:
            true, pred = np.asarray(encoded.labels).astype(int), (logits > 0).astype(int)
            metrics = multilabel_metrics(true, pred, self.labels)
            metrics["rows"] = {
                "kind": "multi",
                "true": true.tolist(),
                "pred": pred.tolist(),
                "logits": logits,
            }
            return metrics
        predicted = logits.argmax(-1).tolist()
        metrics = classification_metrics(encoded.labels, predicted, self.labels)
        metrics["rows"] = {
            "kind": "single",
            "true": list(encoded.labels),
            "pred": predicted,
            "logits": logits,
        }
        return metrics
