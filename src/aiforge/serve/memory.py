"""Keep the server's resident memory from creeping: fewer glibc malloc arenas, freed pages handed back.

glibc gives threads their own malloc arenas (up to 8 per core) and rarely hands freed arena memory
back to the system. A server's threads (uvicorn's thread pool, the inference workers, torch's and
the tokenizer's pools) each allocate and free tensors and strings in their own arena, so the process
keeps the high-water mark of every arena: in the first 20-minute soak (bench/soak.py, overloaded
shared box) RSS went 1.0 -> 1.43 GB, 442 MB of it in malloc arenas while Python's own heap was flat
(tracemalloc +0.1 MB over 600 requests). Capping the arenas at 2 (what ``MALLOC_ARENA_MAX=2`` does) lets
threads share and reuse the freed memory instead; bench/soak.py's ``--malloc-arena-max`` measures
the difference (figures in README, "Soak").

The cap must be set before the threads start: :func:`limit_malloc_arenas` runs first thing in
``run_server``, before models load. An explicit ``MALLOC_ARENA_MAX`` in the environment wins
(glibc read it at start-up; we leave it alone), and on a C library other than glibc (musl, macOS)
this does nothing.

Fewer arenas slowed the creep but did not stop it (session 15, idle 2-core machine: +8.8 % in 10
minutes with two arenas, against the soak's 5 % in 20). glibc returns memory to the system only from
the top of a heap; a request's freed tensors and token buffers in the middle of one stay resident
until a later request reuses them. ``malloc_trim(0)`` walks every arena and releases whole free pages
wherever they are (``madvise(MADV_DONTNEED)``), so :func:`trim_freed_memory` runs it from one daemon
thread every ``TRIM_EVERY_S`` seconds (what it cost and saved: README, "Soak").

Python's cyclic garbage collector is the other pause: a full (generation 2) pass walks every tracked
object, and a server with its models loaded has hundreds of thousands of them that live as long as
the process (the packaged e5 alone: 258k objects, a full pass 111 ms with the GIL held, which
stalls the event loop and every inference thread). :func:`freeze_heap` moves what is alive once the
models are loaded out of the collector's reach (``gc.freeze``), so later passes walk only what the
requests allocate. ``aiforge_gc_passes_total`` and ``aiforge_gc_pause_seconds_total`` on /metrics
count and time the passes per generation.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import gc
import logging
import os
import platform
import threading
import time

log = logging.getLogger("aiforge.serve")

SERVER_MALLOC_ARENAS = 2
TRIM_EVERY_S = 10.0
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


@functools.cache  # find_library runs `ldconfig -p` in a subprocess: once, not every trim
def _glibc() -> ctypes.CDLL | None:
    if platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    except OSError:
        return None


def limit_malloc_arenas(arenas: int = SERVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; True when the cap was set."""
    libc = _glibc()
    if "MALLOC_ARENA_MAX" in os.environ or libc is None:
        return False
    try:
        done = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except AttributeError:
        return False
    if done:
        log.debug("malloc arenas capped at %d", arenas)
    return done


def release_freed_memory() -> bool:
    """Hand every arena's free pages back to the system now; True when some memory was released."""
    libc = _glibc()
    return bool(libc.malloc_trim(0)) if libc is not None else False


def trim_freed_memory(every_s: float = TRIM_EVERY_S) -> threading.Event | None:
    """Release freed memory every ``every_s`` seconds from a daemon thread, until the returned event
    is set; None (and no thread) off glibc."""
    if _glibc() is None:
        return None
    stop = threading.Event()

    def loop() -> None:
        while not stop.wait(every_s):
            started = time.perf_counter()
            released = release_freed_memory()
            log.debug("malloc_trim: released=%s in %.1f ms", released, 1000 * (time.perf_counter() - started))

    threading.Thread(target=loop, name="aiforge-malloc-trim", daemon=True).start()
    return stop


def freeze_heap() -> int:
    """Collect, then freeze every object alive now (``gc.freeze``): the collector skips them from now
    on. Run once the models are loaded, and again after a hot swap (unfreezing first, so the swapped-out
    version's cycles are collected, not kept forever). Returns how many objects are frozen."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class GcPauses:
    """Counts and times the cyclic collector's passes per generation, from ``gc.callbacks``.

    The callback runs inside the collector, in whichever thread triggered it: it only adds to lists
    (no lock: a metric's lock held by the interrupted thread would deadlock it)."""

    def __init__(self) -> None:
        self.passes = [0, 0, 0]
        self.seconds = [0.0, 0.0, 0.0]
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            generation = info["generation"]
            self.passes[generation] += 1
            self.seconds[generation] += time.perf_counter() - self._started

    def start(self) -> None:
        if self not in gc.callbacks:
            gc.callbacks.append(self)

    def stop(self) -> None:
        if self in gc.callbacks:
            gc.callbacks.remove(self)
