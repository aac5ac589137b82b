"""Data parallelism for the training loop, as three small decisions the loop asks about.

A local run uses :data:`SINGLE` (one process: every answer is "do it all"). Under Ray Train
(:mod:`aiforge.scale.train`) each worker gets a :class:`DataParallel` with its rank:

* ``shard(batches)``: the epoch's batches (the same seeded order on every worker) are dealt out
  round-robin, the same count to each, so every worker steps in lockstep;
* ``sync_gradients(model)``: before each optimizer step the gradients are averaged over workers
  (one all-reduce of a flat buffer), so the weights stay identical everywhere, as with DDP;
* ``main``: only rank 0 writes checkpoints and the model dir, tracks to MLflow and registers.
  Every worker evaluates the same validation set, so early stopping decides alike everywhere.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class DataParallel:
    rank: int = 0
    world_size: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    def shard(self, batches: list[Any]) -> list[Any]:
        if self.world_size == 1:
            return batches
        per_worker = len(batches) // self.world_size  # the remainder is dropped: equal step counts
        return batches[self.rank :: self.world_size][:per_worker]

    def shard_count(self, n_batches: int) -> int:
        return n_batches if self.world_size == 1 else max(1, n_batches // self.world_size)

    def sync_gradients(self, model: Any) -> None:
        if self.world_size == 1:
            return
        import torch
        import torch.distributed as dist

        grads = [p.grad for p in model.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()


SINGLE = DataParallel()
