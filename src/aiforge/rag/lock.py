"""The single-writer lock of an embedded index: an OS file lock plus a note naming the holder.

Why an OS lock (``flock`` / ``msvcrt.locking``) and not a "lock file exists" check: the kernel
releases it when the holding process dies, so a crashed ingest never leaves a stale lock. The
note (pid, host, command, start time) is written into the same file after the lock is taken, so
the error another process gets names who holds it and what it runs.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from aiforge.errors import AiforgeError


def holder_note() -> dict[str, Any]:
    """Who we are, as written into a lock we hold."""
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": " ".join(sys.argv)[:300],
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def describe_holder(note: dict[str, Any] | None) -> str:
    if not note:
        return "another process (it left no note)"
    return (
        f"pid {note.get('pid')} on {note.get('host')} since {note.get('since')}, "
        f"running: {note.get('command') or '?'}"
    )


def locked_error(index: str, note: dict[str, Any] | None) -> AiforgeError:
    return AiforgeError(
        "AF-RAG-004",
        f"index '{index}' is being written by {describe_holder(note)}",
        "wait for that ingest to finish (or stop that process); searching and asking work meanwhile",
        status=409,
    )


def _try_lock(handle: BinaryIO) -> bool:
    if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
        import msvcrt

        try:
            msvcrt.locking(handle.fileno(), msvcrt.LK_NBLCK, 1)
            return True
        except OSError:
            return False
    import fcntl

    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _unlock(handle: BinaryIO) -> None:
    if sys.platform == "win32":  # pragma: no cover
        import msvcrt

        handle.seek(0)
        msvcrt.locking(handle.fileno(), msvcrt.LK_UNLCK, 1)
        return
    import fcntl

    fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class WriterLock:
    """``with WriterLock(path, index_name):`` - exclusive, non-blocking; AF-RAG-004 names the holder."""

    def __init__(self, path: Path, index: str) -> None:
        self.path = path
        self.index = index
        self._handle: BinaryIO | None = None

    def __enter__(self) -> WriterLock:
        handle = open(self.path, "a+b")  # noqa: SIM115 - held open for the lock's lifetime
        if not _try_lock(handle):
            handle.seek(0)
            raw = handle.read()
            handle.close()
            raise locked_error(self.index, _read_note(raw))
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(holder_note()).encode())
        handle.flush()
        self._handle = handle
        return self

    def __exit__(self, *exc: object) -> None:
        if self._handle is None:
            return
        self._handle.seek(0)
        self._handle.truncate()
        self._handle.flush()
        _unlock(self._handle)
        self._handle.close()
        self._handle = None


def _read_note(raw: bytes) -> dict[str, Any] | None:
    try:
        note = json.loads(raw.decode() or "null")
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    return note if isinstance(note, dict) else None
