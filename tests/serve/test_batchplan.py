"""Where the batcher cuts a length-sorted run into forward passes, and the cost fit behind it."""

from __future__ import annotations

import itertools
import random

import pytest

from aiforge.serve.batchplan import CostModel, cut_by_cost, cut_by_padding


def total_cost(lengths: list[int], ends: list[int], fixed: float, per_unit: float) -> float:
    starts = [0, *ends[:-1]]
    return sum(
        fixed + per_unit * (end - start) * lengths[end - 1] for start, end in zip(starts, ends, strict=True)
    )


def every_split(n: int, max_items: int):
    """All ways to cut n sorted items into consecutive batches of at most max_items."""
    for cuts in itertools.product((False, True), repeat=n - 1):
        ends = [i + 1 for i, cut in enumerate(cuts) if cut] + [n]
        starts = [0, *ends[:-1]]
        if all(end - start <= max_items for start, end in zip(starts, ends, strict=True)):
            yield ends


def test_cost_cuts_are_the_cheapest_of_all_possible_cuts() -> None:
    rng = random.Random(7)
    for _ in range(200):
        n = rng.randint(1, 9)
        lengths = sorted(rng.randint(3, 80) for _ in range(n))
        max_items = rng.randint(1, 6)
        fixed, per_unit = rng.uniform(0.001, 0.02), rng.uniform(1e-5, 5e-4)
        ends = cut_by_cost(lengths, max_items, fixed, per_unit)
        assert ends[-1] == n and all(b - a <= max_items for a, b in zip([0, *ends], ends, strict=False))
        cheapest = min(total_cost(lengths, e, fixed, per_unit) for e in every_split(n, max_items))
        assert total_cost(lengths, ends, fixed, per_unit) == pytest.approx(cheapest)


def test_a_large_fixed_cost_fills_batches_and_a_small_one_avoids_padding() -> None:
    lengths = [10, 10, 11, 12, 40, 41, 90]
    assert cut_by_cost(lengths, 4, fixed=1.0, per_unit=1e-6) == [4, 7]  # the fewest passes, least padding
    assert cut_by_cost(lengths, 4, fixed=1e-9, per_unit=1.0) == [2, 3, 4, 5, 6, 7]  # only equals share
    assert cut_by_cost([], 4, 1.0, 1.0) == []


def test_padding_rule_cuts_before_a_long_item_and_at_the_item_limit() -> None:
    assert cut_by_padding([3, 3, 3, 45], 8, 0.25) == [3, 4]
    assert cut_by_padding([5] * 10, 4, 0.25) == [4, 8, 10]
    assert cut_by_padding([3, 3, 3, 45], 8, None) == [4]
    assert cut_by_padding([], 8, 0.25) == []


def test_cost_model_recovers_fixed_and_per_token_cost_from_noisy_batches() -> None:
    rng = random.Random(0)
    model = CostModel()
    for _ in range(300):
        padded = rng.randint(8, 1200)
        model.observe(padded, (0.009 + 0.00017 * padded) * rng.uniform(0.9, 1.1))
    fixed, per_unit = model.fit()  # type: ignore[misc]
    assert fixed == pytest.approx(0.009, rel=0.25)
    assert per_unit == pytest.approx(0.00017, rel=0.1)


def test_cost_model_waits_until_the_data_can_tell_fixed_from_per_token() -> None:
    model = CostModel(min_batches=8)
    for _ in range(7):
        model.observe(100, 0.02)
    assert model.fit() is None  # too few batches
    for _ in range(20):
        model.observe(100, 0.02)
    assert model.fit() is None  # one padded size only: any split of 0.02 s fits
    flat = CostModel(min_batches=2)
    for padded in (10, 500, 10, 500):
        flat.observe(padded, 0.5 - padded * 1e-4)  # cost falling with size: not a model to cut by
    assert flat.fit() is None
