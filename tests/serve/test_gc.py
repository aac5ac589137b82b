"""The server keeps its loaded objects out of the garbage collector's full passes (serve/memory.py)."""

from __future__ import annotations

import gc
import subprocess
import sys

from aiforge.serve.memory import GcPauses

# a cycle alive at the freeze (a loaded model's objects), dropped later (a hot-swapped-out version)
FREEZE_THEN_SWAP = """
import gc, weakref
from aiforge.serve.memory import freeze_heap

class Node:
    pass

loaded = Node()
loaded.me = loaded
alive = weakref.ref(loaded)
print(freeze_heap() > 0)
del loaded
gc.collect()
print(alive() is not None)  # frozen: a full pass does not walk it, so its cycle stays
freeze_heap()  # the next swap unfreezes first
print(alive() is None)
"""


def test_frozen_objects_are_skipped_by_full_passes_until_the_next_swap_lets_them_go() -> None:
    command = [sys.executable, "-c", FREEZE_THEN_SWAP]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True", "True", "True"]


def test_gc_pauses_counts_and_times_each_generation() -> None:
    pauses = GcPauses()
    pauses.start()
    pauses.start()  # twice is once
    try:
        gc.collect()
        gc.collect(0)
    finally:
        pauses.stop()
    assert pauses not in gc.callbacks
    assert pauses.passes[2] == 1 and pauses.passes[0] >= 1
    assert pauses.seconds[2] > 0
    gc.collect()
    assert pauses.passes[2] == 1, "stopped: no longer counting"
