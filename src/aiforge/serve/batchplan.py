"""Where to cut a length-sorted run of queued items into forward passes.

Two rules, both over items sorted by ``pipe.length`` (shortest first), both capped at
``max_items`` per batch:

* :func:`cut_by_padding`: cut where padding would exceed a fixed fraction of the real tokens.
* :func:`cut_by_cost`: cut where the *measured* cost of this model says it is cheapest. On a CPU a
  forward pass costs a fixed part (Python, kernel launches, postprocess: ~9 ms for MiniLM on 2
  cores) plus a part that grows with the padded size (batch x longest item). :class:`CostModel`
  fits those two numbers from the batches the server actually ran, and a small dynamic program
  picks the cuts that minimise the predicted total time of the run. With 64 requests in flight
  the fixed 25 % padding rule cut NSMC traffic into batches of ~7.6 items; paying a little padding
  to save a fixed cost is often the better trade, and the fit says exactly when.

The fitted rule takes over once the fit is trustworthy (enough batches of different sizes, a
positive fixed cost); until then the padding rule runs, so a cold server behaves as before.
"""

from __future__ import annotations

from collections.abc import Sequence

# Observations decay with this factor per new batch: the fit follows a changing machine (another
# process takes a core) within a few hundred batches, yet one slow batch barely moves it.
DECAY = 0.99
MIN_BATCHES = 8  # batches observed before the fit is used


def cut_by_padding(lengths: Sequence[int], max_items: int, max_padding: float | None) -> list[int]:
    """End indices of consecutive batches: at most ``max_items`` each, and a cut wherever the next
    (longest so far) item would make padding exceed ``max_padding`` x the batch's real length."""
    ends: list[int] = []
    start, real = 0, 0
    for i, length in enumerate(lengths):
        size = i - start
        too_padded = max_padding is not None and (size + 1) * length > (1 + max_padding) * (real + length)
        if size and (size >= max_items or too_padded):
            ends.append(i)
            start, real = i, 0
        real += length
    if lengths:
        ends.append(len(lengths))
    return ends


def cut_evenly(count: int, max_items: int) -> list[int]:
    """End indices of the fewest batches of at most ``max_items`` that hold ``count`` items, their
    sizes differing by one at most (70 items, at most 32 each: 23 + 24 + 23, not 32 + 32 + 6)."""
    batches = -(-count // max_items)
    return [round(count * (i + 1) / batches) for i in range(batches)]


def cut_by_cost(lengths: Sequence[int], max_items: int, fixed: float, per_unit: float) -> list[int]:
    """End indices of the batches that minimise ``sum(fixed + per_unit * size * longest)``.

    ``lengths`` must be sorted ascending, so a batch is a contiguous run and its last item is its
    longest: ``best[j]`` (cheapest way to run the first j items) = min over the last batch's start.
    """
    n = len(lengths)
    best = [0.0] + [float("inf")] * n
    start_of = [0] * (n + 1)
    for end in range(1, n + 1):
        longest = lengths[end - 1]
        for start in range(max(0, end - max_items), end):
            cost = best[start] + fixed + per_unit * (end - start) * longest
            if cost < best[end]:
                best[end], start_of[end] = cost, start
    ends: list[int] = []
    end = n
    while end > 0:
        ends.append(end)
        end = start_of[end]
    return ends[::-1]


class CostModel:
    """Exponentially weighted least squares of ``seconds ~ fixed + per_unit * padded`` per batch."""

    def __init__(self, decay: float = DECAY, min_batches: int = MIN_BATCHES) -> None:
        self.decay = decay
        self.min_batches = min_batches
        self.batches = 0
        self._w = self._x = self._y = self._xx = self._xy = 0.0

    def observe(self, padded: int, seconds: float) -> None:
        """One forward pass over ``padded`` units (batch size x longest item) took ``seconds``."""
        d = self.decay
        self._w = d * self._w + 1.0
        self._x = d * self._x + padded
        self._y = d * self._y + seconds
        self._xx = d * self._xx + padded * padded
        self._xy = d * self._xy + padded * seconds
        self.batches += 1

    def fit(self) -> tuple[float, float] | None:
        """(fixed seconds, seconds per padded unit), or None while the data cannot tell them apart."""
        if self.batches < self.min_batches:
            return None
        spread = self._w * self._xx - self._x * self._x
        if spread <= 1e-9 * self._w * self._xx:  # (nearly) one padded size seen: no slope to fit
            return None
        per_unit = (self._w * self._xy - self._x * self._y) / spread
        fixed = (self._y - per_unit * self._x) / self._w
        if per_unit <= 0 or fixed <= 0:
            return None  # noise, or a model whose cost does not grow with size: keep the padding rule
        return fixed, per_unit
