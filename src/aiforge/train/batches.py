"""The order of training batches: a pure function of (seed, epoch), the same for every task."""

from __future__ import annotations

import random


def epoch_batches(
    lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> list[list[int]]:
    """The batches of one epoch, a pure function of (seed, epoch): a resumed run replays the same order.

    With length grouping, items are shuffled, cut into windows of 50 batches, sorted by length within
    a window, batched, and the batches shuffled again: little padding, still random order.
    """
    rng = random.Random(seed * 100_003 + epoch)
    indices = list(range(len(lengths)))
    rng.shuffle(indices)
    if group_by_length:
        window = batch_size * 50
        indices = [
            i
            for s in range(0, len(indices), window)
            for i in sorted(indices[s : s + window], key=lambda i: lengths[i])
        ]
    batches = [indices[s : s + batch_size] for s in range(0, len(indices), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches
