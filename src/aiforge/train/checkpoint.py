"""Resumable checkpoints, written atomically.

A checkpoint holds everything needed to continue a run as if it had never stopped: model,
optimizer and scheduler state, every RNG state (Python, NumPy, torch CPU and CUDA) and the data
position (epoch and batch index inside it). It is written to a temporary file in the same
directory and renamed over the old one, so a crash or SIGKILL mid-write leaves the last good
checkpoint intact (``os.replace`` is atomic on POSIX and Windows within one filesystem).
"""

from __future__ import annotations

import os
import pickle
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aiforge.errors import AiforgeError, corrupt_file, disk_full_guard

CHECKPOINT_NAME = "last.pt"


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def atomic_save(obj: Any, path: Path, what: str = "checkpoint") -> None:
    """torch.save to ``path.tmp``, flush to disk, then rename over ``path``; a full disk is
    AF-DISK-002 with the old ``path`` untouched and the partial ``.tmp`` removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with disk_full_guard(path, what, leftovers=[tmp]):
        with tmp.open("wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)


def save_checkpoint(
    directory: Path,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    position: dict[str, Any],
    extra: dict[str, Any],
) -> Path:
    """Write ``directory/last.pt``; ``position`` is ``{"epoch", "batch", "step"}`` after the last step."""
    state = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rng": rng_state(),
        "position": position,
        **extra,
    }
    path = directory / CHECKPOINT_NAME
    atomic_save(state, path)
    return path


def load_checkpoint(directory: Path) -> dict[str, Any]:
    """The last checkpoint of a run, or AF-TRAIN-002 saying there is none."""
    path = directory / CHECKPOINT_NAME
    if not path.exists():
        raise AiforgeError(
            "AF-TRAIN-002",
            f"no checkpoint to resume from in '{directory}'",
            "run without --resume to start fresh, or point output_dir at the interrupted run",
        )
    try:
        # weights_only=False: the checkpoint holds RNG states and dicts we wrote, not a downloaded file
        return torch.load(path, map_location="cpu", weights_only=False)
    except (RuntimeError, OSError, EOFError, pickle.UnpicklingError) as exc:  # a cut zip, or garbage
        raise corrupt_file(
            path,
            "checkpoint",
            f"it cannot be resumed from: delete it (rm '{path}') and train again without --resume "
            f"(torch said: {str(exc).splitlines()[0][:120]})",
        ) from None
