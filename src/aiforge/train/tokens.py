"""Token classification (NER) for the training loop.

Data: one row per sentence with a token list and a tag list of the same length (JSONL or Parquet),
e.g. ``{"tokens": ["김철수", "는", "서울", "에"], "tags": ["B-PER", "O", "B-LOC", "O"]}``.

Labels are aligned to sub-words the usual way: the first sub-word of a word carries the word's tag,
the other sub-words and special tokens get -100 (ignored by the loss), so the model is trained
and scored per word. Scores are entity-level (seqeval): an entity counts only with its type and
both boundaries right.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from aiforge.train.data import Split
from aiforge.train.metrics import seqeval_metrics
from aiforge.train.task import Autocast
from aiforge.train.text import Encoded, TokenizedTask

if TYPE_CHECKING:
    from aiforge.train.prepared import Prepared
    from aiforge.train.task import TrainingTask

IGNORE_INDEX = -100  # torch's CrossEntropyLoss skips these positions


class TokenClassificationTask(TokenizedTask):
    """A tag per word of a word list: sub-word alignment, entity-level scores, a per-word logistic
    regression baseline (:func:`aiforge.train.baseline.fit_token_baseline`)."""

    name = "token-classification"
    auto_class = "AutoModelForTokenClassification"
    default_metric = "f1"
    split_into_words = True

    def head_kwargs(self) -> dict[str, Any]:
        return {}

    def fit_baseline(self, prep: Prepared[Encoded]) -> dict[str, Any] | None:
        from aiforge.train.baseline import fit_token_baseline, scored_splits

        return fit_token_baseline(prep.dataset.train, scored_splits(prep.dataset), prep.dataset.labels)

    def encode(self, split: Split) -> Encoded:
        """Sub-word ids per sentence; tag ids on first sub-words, -100 elsewhere."""
        enc = self.tokenize(split.inputs, truncation=True, max_length=self.max_length)
        labels, truncated = [], 0
        for row, tags in enumerate(split.labels):
            word_ids = enc.word_ids(row)
            aligned, previous = [], None
            for word in word_ids:
                first = word is not None and word != previous
                aligned.append(self.label_index[tags[word]] if first else IGNORE_INDEX)
                previous = word
            kept = len({w for w in word_ids if w is not None})
            truncated += kept < len(tags)
            labels.append(aligned)
        return Encoded(enc["input_ids"], labels, truncated)

    def collate(self, encoded: Encoded, indices: list[int], device: str) -> dict[str, torch.Tensor]:
        batch = self.pad(encoded, indices)
        labels = torch.full(batch["input_ids"].shape, IGNORE_INDEX, dtype=torch.long)
        for row, i in enumerate(indices):
            labels[row, : len(encoded.labels[i])] = torch.tensor(encoded.labels[i], dtype=torch.long)
        batch["labels"] = labels
        return {k: v.to(device, non_blocking=True) for k, v in batch.items()}

    @torch.inference_mode()
    def evaluate(
        self, model: torch.nn.Module, encoded: Encoded, device: str, batch_size: int, autocast: Autocast
    ) -> dict[str, Any]:
        """Entity-level precision/recall/F1 over the words the model saw (after truncation)."""
        true_tags: list[list[str]] = [[] for _ in range(len(encoded))]
        pred_tags: list[list[str]] = [[] for _ in range(len(encoded))]
        total_loss = 0.0
        for chunk, out in self.eval_batches(model, encoded, device, batch_size, autocast):
            total_loss += float(out.loss) * len(chunk)
            predicted = out.logits.float().argmax(-1).cpu().numpy()
            for row, i in enumerate(chunk):
                gold = np.asarray(encoded.labels[i])
                keep = gold != IGNORE_INDEX
                true_tags[i] = [self.labels[t] for t in gold[keep]]
                pred_tags[i] = [self.labels[t] for t in predicted[row, : len(gold)][keep]]
        metrics = seqeval_metrics(true_tags, pred_tags)
        metrics["rows"] = {"kind": "entities", "true": true_tags, "pred": pred_tags}
        metrics["loss"] = total_loss / max(1, len(encoded))
        return metrics


if TYPE_CHECKING:

    def _implements_the_protocol(task: TokenClassificationTask) -> TrainingTask[Encoded]:
        return task  # mypy checks the adapter against TrainingTask here
