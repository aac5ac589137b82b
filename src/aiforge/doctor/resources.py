"""Resource checks: the Hugging Face cache, free disk and memory."""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import time
from pathlib import Path

from aiforge.doctor.installs import expand_home, glob_sorted, read_text
from aiforge.doctor.model import Env, Finding, Status, gib, human_size

DISK_WARN_BYTES = 10 * 2**30  # a couple of checkpoints plus the HF cache
DISK_FAIL_BYTES = 1 * 2**30  # pip installs and checkpoint writes start failing
MEM_WARN_BYTES = 2 * 2**30  # a base-size transformer in fp32 plus tokenizers
HF_WALK_MAX_ENTRIES = 50_000  # keep `doctor` fast on huge caches: report a lower bound
HF_WALK_MAX_SECONDS = 1.0
TRUTHY = {"1", "true", "yes", "on"}


def hf_cache_dir(env: Env) -> tuple[Path, str]:
    """The hub cache in effect and which setting chose it (same precedence as huggingface_hub)."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "TRANSFORMERS_CACHE"):
        if env.getenv(var):
            return expand_home(env, env.getenv(var)), var
    if env.getenv("HF_HOME"):
        return expand_home(env, env.getenv("HF_HOME")) / "hub", "HF_HOME"
    xdg = env.getenv("XDG_CACHE_HOME")
    base = env.path(xdg) if xdg else env.home / ".cache"
    return base / "huggingface" / "hub", "XDG_CACHE_HOME" if xdg else "default"


def dir_size(
    path: Path, max_entries: int = HF_WALK_MAX_ENTRIES, max_seconds: float = HF_WALK_MAX_SECONDS
) -> tuple[int, bool]:
    """Bytes of regular files under path (symlinks not followed: the hub's snapshots link to blobs).

    Returns (size, complete); complete is False when a cap stopped the walk.
    """
    total, seen, deadline = 0, 0, time.monotonic() + max_seconds
    stack = [path]
    while stack:
        try:
            entries = list(os.scandir(stack.pop()))
        except OSError:
            continue
        for entry in entries:
            seen += 1
            if seen > max_entries or time.monotonic() > deadline:
                return total, False
            try:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                elif entry.is_file(follow_symlinks=False):
                    total += entry.stat(follow_symlinks=False).st_size
            except OSError:
                continue
    return total, True


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return path


def _writable(path: Path) -> bool:
    """Really create a file: os.access lies on network shares and read-only bind mounts."""
    target = _nearest_existing(path)
    try:
        fd, name = tempfile.mkstemp(prefix=".aiforge-doctor-", dir=target)
    except OSError:
        return False
    os.close(fd)
    with contextlib.suppress(OSError):
        os.unlink(name)
    return True


def check_hf_cache(env: Env) -> Finding:
    cache, source = hf_cache_dir(env)
    offline_vars = [v for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if env.getenv(v).lower() in TRUTHY]
    exists = cache.is_dir()
    size, complete = dir_size(cache) if exists else (0, True)
    models = len(glob_sorted(cache, "models--*")) if exists else 0
    writable = _writable(cache)
    details = {
        "path": str(cache),
        "source": source,
        "exists": exists,
        "size_bytes": size,
        "size_complete": complete,
        "models": models,
        "offline": bool(offline_vars),
        "writable": writable,
    }
    size_text = ("" if complete else ">= ") + human_size(size)
    offline = f"offline ({', '.join(offline_vars)})" if offline_vars else "online"
    message = (
        f"{cache} ({source}): {size_text}, {models} model(s), {offline}, "
        f"{'writable' if writable else 'NOT writable'}"
        if exists
        else f"{cache} ({source}) does not exist yet, {offline}, "
        f"{'can be created' if writable else 'parent NOT writable'}"
    )
    if not writable and not offline_vars:
        return Finding(
            "hf-cache",
            "fail",
            message,
            fix=f"Point the cache to a writable folder: `export HF_HOME=$HOME/hf` (Windows: "
            f"`setx HF_HOME %USERPROFILE%\\hf`), or fix the permissions of {cache}.",
            code="AF-HF-001",
            details=details,
        )
    if offline_vars and models == 0:
        return Finding(
            "hf-cache",
            "warn",
            message + ": offline mode with no cached models, nothing can load",
            fix=f"Download models first with network access (unset {' '.join(offline_vars)}), or "
            "point HF_HOME at a cache that has them.",
            code="AF-HF-001",
            details=details,
        )
    return Finding("hf-cache", "ok", message, details=details)


def check_disk(env: Env) -> list[Finding]:
    cache, _ = hf_cache_dir(env)
    findings, seen = [], set()
    for label, path in (("cwd", env.cwd), ("hf-cache", cache)):
        target = _nearest_existing(path)
        try:
            dev = os.stat(target).st_dev
            free, total = env.disk_usage(target)
        except OSError as exc:
            findings.append(
                Finding(
                    f"disk:{label}",
                    "warn",
                    f"cannot read free space at {target}: {exc}",
                    fix="Check that the path is mounted.",
                    code="AF-DISK-001",
                )
            )
            continue
        if dev in seen:
            continue  # same filesystem as an earlier line
        seen.add(dev)
        details = {"path": str(target), "free_bytes": free, "total_bytes": total}
        message = f"{gib(free)} free of {gib(total)} at {target}"
        status: Status = "fail" if free < DISK_FAIL_BYTES else "warn" if free < DISK_WARN_BYTES else "ok"
        if status == "ok":
            findings.append(Finding(f"disk:{label}", "ok", message, details=details))
        else:
            findings.append(
                Finding(
                    f"disk:{label}",
                    status,
                    message + f" (< {gib(DISK_WARN_BYTES)})",
                    fix="Free space: `pip cache purge`, `conda clean --all`, `hf cache delete`, "
                    "or move the Hugging Face cache to a bigger disk with HF_HOME.",
                    code="AF-DISK-001",
                    details=details,
                )
            )
    return findings


def memory_info(env: Env) -> tuple[int, int] | None:
    """(available, total) bytes: psutil when installed; /proc/meminfo on Linux; otherwise unknown."""
    try:
        psutil = env.import_module("psutil")
        vm = psutil.virtual_memory()
        return int(vm.available), int(vm.total)
    except ImportError:
        pass
    if env.platform != "linux":
        return None
    text = read_text(env.meminfo_path) or ""
    values = {m.group(1): int(m.group(2)) * 1024 for m in re.finditer(r"^(\w+):\s+(\d+) kB", text, re.M)}
    if "MemTotal" not in values:
        return None
    return values.get("MemAvailable", values.get("MemFree", 0)), values["MemTotal"]


def check_memory(env: Env) -> Finding:
    info = memory_info(env)
    if info is None:
        return Finding(
            "memory",
            "ok",
            f"free memory unknown on {env.platform} without psutil (`pip install psutil` to check it)",
        )
    available, total = info
    details = {"available_bytes": available, "total_bytes": total}
    message = f"{gib(available)} available of {gib(total)}"
    if available < MEM_WARN_BYTES:
        return Finding(
            "memory",
            "warn",
            message + f" (< {gib(MEM_WARN_BYTES)})",
            fix="Close other programs, use a smaller model / batch size, or add swap.",
            code="AF-MEM-001",
            details=details,
        )
    return Finding("memory", "ok", message, details=details)
