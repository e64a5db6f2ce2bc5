"""SIGINT and SIGTERM as a stop request, for the daemons' main loops."""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An Event that SIGINT or SIGTERM sets while inside; a second one exits at once (a stop
    that hangs on a stuck write can still be forced). The previous handlers come back after.
    Only the main thread can take signals: elsewhere the Event is set by the caller alone."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if stop.is_set():
            log.warning("received %s again, exiting now", name)
            os._exit(128 + signum)
        log.info("received %s, stopping (again to exit at once)", name)
        stop.set()

    try:
        for sig in previous:
            signal.signal(sig, request_stop)
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
