"""SIGINT and SIGTERM as a stop request, for the daemons' main loops."""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

log = logging.getLogger(__name__)


@contextmanager
def stop_requested() -> Iterator[threading.Event]:
    """An Event that SIGINT or SIGTERM sets while inside; the previous handlers come back after."""
    stop = threading.Event()
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("received %s, stopping", signal.Signals(signum).name)
        stop.set()

    try:
        for sig in previous:
            signal.signal(sig, request_stop)
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
