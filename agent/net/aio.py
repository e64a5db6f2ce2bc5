"""The one asyncio event loop, on a thread of its own, where all network I/O happens: the
listeners (/metrics, the work socket) and the outgoing HTTP requests, whose total deadlines are
enforced by cancelling them. The sampling tick never runs here, so no client, however slow or
numerous, can delay it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None


def io_loop() -> asyncio.AbstractEventLoop:
    """The process's I/O loop, started on first use; it lives as long as the process (a daemon
    thread), shared by every listener and client, so a CLI command that never does network I/O
    never starts it."""
    global _loop
    with _lock:
        if _loop is None or _loop.is_closed():
            loop = asyncio.new_event_loop()
            started = threading.Event()

            def run() -> None:
                asyncio.set_event_loop(loop)
                loop.call_soon(started.set)
                loop.run_forever()

            threading.Thread(target=run, name="io-loop", daemon=True).start()
            started.wait()
            _loop = loop
        return _loop


def run_on_loop(coroutine: Coroutine[Any, Any, T], timeout_s: float | None = None) -> T:
    """Runs a coroutine on the I/O loop from any other thread and waits for its result. The
    coroutine carries its own deadline; `timeout_s` only guards against a wedged loop."""
    future = asyncio.run_coroutine_threadsafe(coroutine, io_loop())
    try:
        return future.result(timeout_s)
    except concurrent.futures.TimeoutError:
        future.cancel()
        raise TimeoutError("the I/O loop did not answer in time") from None
