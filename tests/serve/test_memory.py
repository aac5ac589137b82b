"""The server caps glibc's malloc arenas and hands freed pages back (serve/memory.py)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from aiforge.serve.memory import limit_malloc_arenas, trim_freed_memory

pytestmark = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc arenas")

# twelve threads allocating at once, then glibc's own per-arena report (malloc_stats, on stderr)
THREADS_THEN_ARENAS = """
import ctypes, sys, threading
from aiforge.serve.memory import limit_malloc_arenas
print(limit_malloc_arenas())
barrier = threading.Barrier(12)
def work():
    barrier.wait()
    kept = [bytearray(1000) for _ in range(20000)]
threads = [threading.Thread(target=work) for _ in range(12)]
[t.start() for t in threads]
[t.join() for t in threads]
sys.stdout.flush()
ctypes.CDLL("libc.so.6").malloc_stats()
"""


def arenas_after_threads(env: dict[str, str]) -> tuple[str, int]:
    done = subprocess.run(
        [sys.executable, "-c", THREADS_THEN_ARENAS], capture_output=True, text=True, env=env, check=True
    )
    return done.stdout.strip(), done.stderr.count("Arena ")


def test_threads_started_after_the_cap_share_two_arenas():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_ARENA_MAX"}
    capped, arenas = arenas_after_threads(env)
    assert capped == "True"
    assert arenas <= 2
    # an explicit MALLOC_ARENA_MAX is the operator's choice: left alone (glibc applied it at start)
    left, arenas_default = arenas_after_threads({**env, "MALLOC_ARENA_MAX": "8"})
    assert left == "False"
    assert arenas_default > 2  # the same threads without the cap spread over more arenas


def test_an_explicit_setting_wins(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("MALLOC_ARENA_MAX", "4")
    assert limit_malloc_arenas() is False


# 200 MB of small blocks, every 64th kept alive: the freed pages sit between live blocks, where glibc
# never returns them by itself (the heap's top is not free)
FRAGMENTED_THEN_TRIMMED = """
import gc, sys
from aiforge.serve.memory import release_freed_memory
def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20
blocks = [bytearray(2000) for _ in range(100_000)]
kept = blocks[::64]
del blocks
gc.collect()
before = rss_mb()
released = release_freed_memory()
print(before, rss_mb(), released)
"""


def test_freed_pages_between_live_blocks_go_back_to_the_system():
    done = subprocess.run(
        [sys.executable, "-c", FRAGMENTED_THEN_TRIMMED], capture_output=True, text=True, check=True
    )
    before, after, released = done.stdout.split()
    assert released == "True"
    assert float(before) - float(after) > 120  # measured: 231 -> 48 MB


def test_the_trimming_thread_runs_until_stopped():
    import threading

    stop = trim_freed_memory(every_s=0.01)
    assert stop is not None
    assert any(t.name == "aiforge-malloc-trim" for t in threading.enumerate())
    stop.set()
    for thread in threading.enumerate():
        if thread.name == "aiforge-malloc-trim":
            thread.join(timeout=2)
    assert not any(t.name == "aiforge-malloc-trim" for t in threading.enumerate())
