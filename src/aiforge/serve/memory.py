"""Keep the server's resident memory from creeping: fewer glibc malloc arenas.

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
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

log = logging.getLogger("aiforge.serve")

SERVER_MALLOC_ARENAS = 2
_M_ARENA_MAX = -8  # glibc's mallopt parameter number (malloc.h)


def limit_malloc_arenas(arenas: int = SERVER_MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for the threads started from now on; True when the cap was set."""
    if "MALLOC_ARENA_MAX" in os.environ or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        done = bool(libc.mallopt(_M_ARENA_MAX, arenas))
    except (OSError, AttributeError):
        return False
    if done:
        log.debug("malloc arenas capped at %d", arenas)
    return done
