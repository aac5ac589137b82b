"""``aiforge train CONFIG --dry-run``: every check of a real run, plus cost estimates, in seconds.

It runs the same :func:`~aiforge.train.loop.prepare` as training (so a config that passes here
does not fail on data or model an hour later), then reports label balance, token lengths and how
much ``max_length`` truncates, and times a few real optimizer steps on shuffled batches to
estimate time and memory per epoch.
"""

from __future__ import annotations

import math
import resource
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from aiforge.train.batches import epoch_batches
from aiforge.train.config import TrainConfig
from aiforge.train.loop import autocast_factory, build_optimizer, plan_steps, prepare
from aiforge.train.prepared import Prepared

IMBALANCE_WARN_RATIO = 5.0  # largest / smallest class: beyond this, accuracy alone misleads
TRUNCATION_WARN_SHARE = 0.05


@dataclass
class DryRunReport:
    backbone: str
    device: str
    rows: dict[str, int]
    skipped_rows: dict[str, dict[str, int]]
    labels: dict[str, int]
    token_lengths: dict[str, float]
    max_length: int
    truncated_share: float
    parameters: dict[str, int]
    steps_per_epoch: int
    total_steps: int
    measured_steps: int
    seconds_per_step: float
    seconds_per_epoch: float
    seconds_total: float
    peak_memory_mb: float
    warnings: list[str] = field(default_factory=list)
    length_unit: str | None = "tokens"  # what token_lengths and max_length count; None: no lengths (images)
    forward_flops: float = 0.0  # per token (per image where inputs have no length); a step is ~3x

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def lines(self) -> list[str]:
        """Human-readable summary, one fact per line."""
        lengths = ", ".join(f"{k} {v:.0f}" for k, v in self.token_lengths.items())
        length_lines = (
            [
                f"{self.length_unit:<14}{lengths}",
                f"max_length    {self.max_length} (truncates {self.truncated_share:.1%} of training inputs)",
            ]
            if self.length_unit
            else []
        )
        return [
            f"backbone      {self.backbone} on {self.device}",
            "rows          " + ", ".join(f"{k} {v}" for k, v in self.rows.items()),
            *(
                ["labels        " + ", ".join(f"{k}: {v}" for k, v in self.labels.items())]
                if self.labels
                else []
            ),
            *length_lines,
            f"parameters    {self.parameters['trainable']:,} trainable of {self.parameters['total']:,}",
            f"FLOPs         {_si(self.forward_flops)} forward, ~{_si(3 * self.forward_flops)} "
            f"forward+backward per {(self.length_unit or 'image').removesuffix('s')}",
            f"steps         {self.steps_per_epoch} per epoch, {self.total_steps} in total",
            f"time          {self.seconds_per_step:.2f} s/step -> "
            f"~{_minutes(self.seconds_per_epoch)} per epoch, "
            f"~{_minutes(self.seconds_total)} in total (measured over {self.measured_steps} steps)",
            f"memory        ~{self.peak_memory_mb:,.0f} MB peak",
            *[f"warning       {w}" for w in self.warnings],
        ]


def _si(value: float) -> str:
    for unit, scale in (("T", 1e12), ("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value:.0f}"


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.0f} s"


def dry_run(config: TrainConfig, strict: bool = False, measure_steps: int = 6) -> DryRunReport:
    """Check data and model, then time ``measure_steps`` optimizer steps (after one warm-up step)."""
    prep = prepare(config, strict)
    cfg, task, model = config.training, prep.task, prep.model
    warnings: list[str] = []
    counts = prep.dataset.label_counts()
    if counts and max(counts.values()) / max(1, min(counts.values())) > IMBALANCE_WARN_RATIO:
        warnings.append(
            f"labels are imbalanced ({max(counts.values())}:{min(counts.values())}); "
            "watch macro_f1, not only accuracy (--set training.metric=macro_f1)"
        )
    for split, reasons in prep.dataset.skipped.items():
        warnings.append(f"{split}: skipped " + ", ".join(f"{n} rows ({why})" for why, n in reasons.items()))
    lengths = np.asarray(prep.train_lengths)
    cuts = getattr(task, "max_length_cuts", True)  # False: packed LM blocks, QA windows
    truncated = (
        float((lengths > task.max_length).mean()) if len(lengths) and task.length_unit and cuts else 0.0
    )
    if truncated > TRUNCATION_WARN_SHARE:
        warnings.append(
            f"max_length {task.max_length} cuts {truncated:.0%} of the training inputs; "
            "raise training.max_length if their ends matter"
        )

    n_batches = math.ceil(len(prep.train) / cfg.batch_size)
    steps_per_epoch, total_steps, _ = plan_steps(n_batches, cfg)
    seconds_per_token = _time_steps(prep, measure_steps)
    # Batches differ a lot in padded length (length grouping), so a few measured steps are scaled
    # by padded tokens: the epoch's exact padded token count is known before training.
    lengths_in_batches = prep.train.lengths()
    batches = epoch_batches(lengths_in_batches, cfg.batch_size, cfg.seed, 0, cfg.length_grouping)
    epoch_tokens = sum(_padded_tokens(lengths_in_batches, b) for b in batches)
    seconds = seconds_per_token * epoch_tokens / max(1, len(batches))  # mean micro-batch
    val_tokens = sum(sorted(prep.validation.lengths()))  # evaluation sorts by length: little padding
    per_epoch = seconds_per_token * (epoch_tokens + val_tokens / 3)  # a forward pass ~1/3 of a step
    n_epochs = total_steps / steps_per_epoch
    params = {
        "total": sum(p.numel() for p in model.parameters()),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
    }
    return DryRunReport(
        backbone=prep.backbone,
        device=prep.device,
        rows={
            "train": len(prep.train),
            "validation": len(prep.validation),
            "test": len(prep.test) if prep.test is not None else 0,
        },
        skipped_rows=prep.dataset.skipped,
        labels=counts,
        token_lengths={f"p{q}": float(np.percentile(lengths, q)) for q in (50, 90, 99)}
        | {"max": float(lengths.max())},
        max_length=task.max_length,
        truncated_share=truncated,
        parameters=params,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        measured_steps=measure_steps,
        seconds_per_step=seconds * cfg.grad_accum,  # one optimizer step = grad_accum micro-batches
        seconds_per_epoch=per_epoch,
        seconds_total=per_epoch * n_epochs,
        peak_memory_mb=_peak_memory_mb(prep.device),
        warnings=warnings,
        length_unit=task.length_unit,
        forward_flops=_forward_flops_per_item(prep),
    )


def _forward_flops_per_item(prep: Prepared[Any]) -> float:
    """FLOPs of one forward pass over the first training item, per token (per item where inputs
    have no length), counted by torch's FlopCounterMode: matmuls and convolutions, nearly all of it."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = prep.task.collate(prep.train, [0], prep.device)
    inputs = {k: v for k, v in batch.items() if k not in ("labels", "shift_labels")}
    counter = FlopCounterMode(display=False)
    was_training = prep.model.training
    prep.model.eval()
    with torch.no_grad(), counter:
        prep.model(**inputs)
    prep.model.train(was_training)
    items = prep.train.lengths()[0] if prep.task.length_unit else 1
    return counter.get_total_flops() / max(1, items)


def _padded_tokens(lengths: list[int], indices: list[int]) -> int:
    return max(lengths[i] for i in indices) * len(indices)


def _time_steps(prep: Prepared[Any], measure_steps: int) -> float:
    """Seconds per padded token of forward+backward+step, over the first (shuffled) batches."""
    cfg, task, model, device = prep.config.training, prep.task, prep.model, prep.device
    autocast, _ = autocast_factory(cfg.mixed_precision, device)
    optimizer = build_optimizer(model, cfg)
    lengths = prep.train.lengths()
    batches = epoch_batches(lengths, cfg.batch_size, cfg.seed, 0, cfg.length_grouping)
    model.train()
    seconds, tokens = 0.0, 0
    warm_up = (0.0, 0)
    for i, indices in enumerate(batches[: measure_steps + 1]):
        start = time.perf_counter()
        batch = task.collate(prep.train, indices, device)
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        if i > 0:  # the first step pays for allocator warm-up and lazy init
            seconds += time.perf_counter() - start
            tokens += _padded_tokens(lengths, indices)
        else:
            warm_up = (time.perf_counter() - start, _padded_tokens(lengths, indices))
    if not tokens:  # one batch in all: its warm-up step is the only measure (an overestimate)
        seconds, tokens = warm_up
    return seconds / tokens if tokens else 0.0


def _peak_memory_mb(device: str) -> float:
    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10  # bytes on macOS, KiB on Linux
