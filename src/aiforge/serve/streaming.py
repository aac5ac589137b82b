"""Run a blocking token iterator (``TextGeneration.stream_tokens``) in its own thread and read it from
the event loop, so a slow generation never blocks other requests.

Closing the stream (client gone, timeout, stop sequence seen) sets a flag the pump checks after each
piece; the pump then closes the iterator, which stops the generation (stream_tokens cancels its
``generate()`` thread on close).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class TokenStream:
    """``await stream.next(timeout)`` -> ("piece", str) | ("error", exc) | ("end", None)."""

    def __init__(self, make_iterator: Callable[[], Iterator[str]]) -> None:
        self._make = make_iterator
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._pump, name="aiforge-token-stream", daemon=True)
        self._thread.start()

    def _pump(self) -> None:
        iterator: Iterator[str] | None = None
        try:
            iterator = self._make()
            for piece in iterator:
                self._put(("piece", piece))
                if self._stop.is_set():
                    break
        except Exception as exc:  # handed to the reader, who turns it into an error event
            self._put(("error", exc))
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()
            self._put(("end", None))

    def _put(self, item: tuple[str, Any]) -> None:
        with contextlib.suppress(RuntimeError):  # the event loop is gone (server shut down): nobody reads
            self._loop.call_soon_threadsafe(self._queue.put_nowait, item)

    async def next(self, timeout_s: float | None) -> tuple[str, Any]:
        return await asyncio.wait_for(self._queue.get(), timeout_s)

    def close(self) -> None:
        self._stop.set()

    async def finished(self) -> None:
        """Wait until the iterator has ended and been closed (what it reported is then final)."""
        while (await self._queue.get())[0] != "end":
            pass
