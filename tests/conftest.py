"""Shared fixtures. Every test runs offline and keeps aiforge's cache (registry db, assembled
weights) in a per-session temporary home, never in the user's ~/.cache."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session", autouse=True)
def aiforge_home(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("aiforge-home")
    previous = os.environ.get("AIFORGE_HOME")
    os.environ["AIFORGE_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    yield home
    if previous is None:
        os.environ.pop("AIFORGE_HOME", None)
    else:
        os.environ["AIFORGE_HOME"] = previous


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MiB tmpfs: writes past it fail with a real ENOSPC from the kernel. Mounting needs root, as
    the CI machines and the dev containers run; elsewhere the disk-full tests are skipped."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True, text=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here ({done.stderr.strip()}): the disk-full tests need root")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def fill_disk(folder: Path, leave_bytes: int) -> Path:
    """Take all but ``leave_bytes`` of the free space of ``folder``'s file system with one file."""
    stats = os.statvfs(folder)
    free = stats.f_bavail * stats.f_frsize
    filler = folder / "filler.bin"
    with filler.open("wb") as handle:
        handle.write(b"\0" * max(0, free - leave_bytes))
    return filler
