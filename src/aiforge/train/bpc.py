"""Bits per character of held-out documents, scored the same way for a character LM and the n-gram.

The figure the Korean character LM is judged by (``bench/bench_scratch_lm.py``). Both models see
exactly the same characters under the same rules, so neither side gets a free bit:

* each document is scored on its own, NFKC-normalised as the tokenizer normalises, given one
  document separator (``\\n``) as its only context, and each model also predicts the separator
  that ends it: ``len(document) + 1`` symbols per document on both sides;
* a character outside the LM's vocabulary is one ``<unk>`` symbol for the LM; for the n-gram it
  becomes one placeholder character (:data:`UNSEEN`) in training and held-out text alike, so both
  models share one alphabet and spend one symbol's probability on anything unseen;
* documents longer than the LM's context are scored in overlapping windows: each window predicts
  only the characters the previous one did not, with at least half a context of history.

The training loop's ``bits_per_char`` (:mod:`aiforge.train.lm`) is the quick figure of packed
blocks (context reset every block, cut tails extrapolated); this module is the exact one.
Intervals: a paired bootstrap over documents (:func:`bootstrap`).
"""

from __future__ import annotations

import math
import random
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from aiforge.train.ngram import KneserNey

SEPARATOR = "\n"
UNSEEN = "\ue000"  # a private-use character: what the n-gram sees for a character the LM lacks
EVAL_BATCH = 64


def normalize(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def map_unseen(text: str, alphabet: set[str]) -> str:
    """``text`` with every character outside ``alphabet`` replaced by :data:`UNSEEN`."""
    return "".join(c if c in alphabet or c == SEPARATOR else UNSEEN for c in text)


def lm_alphabet(tokenizer: Any) -> set[str]:
    """The single characters the LM's tokenizer has as tokens."""
    return {token for token in tokenizer.get_vocab() if len(token) == 1}


@dataclass
class DocumentBits:
    """Bits spent on each document (its characters plus the closing separator)."""

    bits: list[float]
    symbols: list[int]

    @property
    def bits_per_char(self) -> float:
        return sum(self.bits) / max(1, sum(self.symbols))


def ngram_document_bits(model: KneserNey, documents: Sequence[str]) -> DocumentBits:
    bits, symbols = [], []
    for document in documents:
        text = SEPARATOR + document + SEPARATOR
        total = 0.0
        for i in range(1, len(text)):
            total -= math.log2(model.probability(text[max(0, i - model.order + 1) : i], text[i]))
        bits.append(total)
        symbols.append(len(text) - 1)
    return DocumentBits(bits, symbols)


@torch.inference_mode()
def lm_document_bits(
    model: torch.nn.Module, tokenizer: Any, documents: Sequence[str], context: int, device: str = "cpu"
) -> DocumentBits:
    """Per-document bits of a causal LM whose tokenizer has one token per character."""
    model.eval()
    separator = tokenizer(SEPARATOR, add_special_tokens=False)["input_ids"]
    encoded = tokenizer(list(documents), add_special_tokens=False)["input_ids"]
    # (document, input ids, first position scored): a window predicts targets[first:]
    windows: list[tuple[int, list[int], int]] = []
    stride = max(1, context // 2)
    for index, ids in enumerate(encoded):
        sequence = separator + ids + separator
        start, scored = 0, 0  # scored: targets (sequence[1:]) already predicted
        while scored < len(sequence) - 1:
            end = min(start + context + 1, len(sequence))  # a window of `context` inputs
            windows.append((index, sequence[start:end], scored - start))
            scored = end - 1
            start = max(0, end - 1 - (context - stride))
    bits = [0.0] * len(encoded)
    windows.sort(key=lambda w: len(w[1]))  # similar lengths per batch: little padding
    pad = tokenizer.pad_token_id or 0
    for begin in range(0, len(windows), EVAL_BATCH):
        batch = windows[begin : begin + EVAL_BATCH]
        width = max(len(w[1]) for w in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        for row, (_, sequence, _) in enumerate(batch):
            ids[row, : len(sequence)] = torch.tensor(sequence)
        # Causal attention: the padding after a sequence never reaches its positions.
        logits = model(input_ids=ids[:, :-1].to(device)).logits.float()
        nats = torch.nn.functional.cross_entropy(
            logits.transpose(1, 2), ids[:, 1:].to(device), reduction="none"
        ).cpu()
        for row, (index, sequence, first) in enumerate(batch):
            bits[index] += float(nats[row, first : len(sequence) - 1].sum()) / math.log(2)
    return DocumentBits(bits, [len(ids) + 1 for ids in encoded])


def bootstrap(
    sides: dict[str, DocumentBits], rounds: int = 1000, seed: int = 0, level: float = 0.95
) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each side's bits per character and of each side minus the first,
    resampling the same documents for every side (paired)."""
    names = list(sides)
    n = len(sides[names[0]].bits)
    rng = random.Random(seed)
    draws: dict[str, list[float]] = {name: [] for name in names}
    draws.update({f"{name} - {names[0]}": [] for name in names[1:]})
    for _ in range(rounds):
        picks = [rng.randrange(n) for _ in range(n)]
        resampled = {}
        for name in names:
            side = sides[name]
            resampled[name] = sum(side.bits[i] for i in picks) / max(1, sum(side.symbols[i] for i in picks))
            draws[name].append(resampled[name])
        for name in names[1:]:
            draws[f"{name} - {names[0]}"].append(resampled[name] - resampled[names[0]])
    tail = (1 - level) / 2
    out = {}
    for name, values in draws.items():
        values.sort()
        out[name] = (values[int(tail * rounds)], values[min(rounds - 1, int((1 - tail) * rounds))])
    return out
