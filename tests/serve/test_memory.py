"""The server caps glibc's malloc arenas (serve/memory.py): threads started afterwards share two."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

from aiforge.serve.memory import limit_malloc_arenas

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
