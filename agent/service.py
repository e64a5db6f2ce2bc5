"""The background loop every helper thread runs: carbon intensity, the facility's PUE, the BMC's
wall power, the kubelet's pod names, jobs' work counters, NVML power polling.

A step that raises does not end the thread: the error is logged (with its traceback once per
distinct error), counted, and the step is tried again after a pause that doubles from one
second to five minutes; a step that succeeds resets the pause. Each service's state is exported
(wattwise_service_up, wattwise_service_failures_total), and whoever uses a service's results
judges their age itself, so a service that fails or stalls can never keep a stale value in use.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from wattwise.model import ServiceState

log = logging.getLogger(__name__)

BACKOFF_FIRST_S = 1.0
BACKOFF_MAX_S = 300.0


class Service:
    def __init__(
        self,
        name: str,
        step: Callable[[], object],
        interval_s: float,
        first_delay_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.interval_s = name, interval_s
        self._step, self._first_delay_s, self._clock = step, first_delay_s, clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failures = 0
        self._error: str | None = None
        self._backoff_s = 0.0

    def run_once(self) -> bool:
        """One step, its failure caught; True when it succeeded. The pause before the next."""
        try:
            self._step()
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}"
            if message != self._error:
                log.error("%s failed, retrying with backoff: %s", self.name, message, exc_info=exc)
            self._error = message
            self._failures += 1
            self._backoff_s = min(max(self._backoff_s * 2, BACKOFF_FIRST_S), BACKOFF_MAX_S)
            return False
        if self._error is not None:
            log.info("%s works again", self.name)
        self._error, self._backoff_s = None, 0.0
        return True

    def next_pause_s(self) -> float:
        return max(self.interval_s, self._backoff_s)

    def state(self) -> ServiceState:
        return ServiceState(self.name, self._error is None, self._failures, self._error)

    def start(self) -> Service:
        self._thread = threading.Thread(target=self._run, daemon=True, name=self.name)
        self._thread.start()
        return self

    def _run(self) -> None:
        if self._stop.wait(self._first_delay_s):
            return
        while True:
            started = self._clock()
            self.run_once()
            pause = self.next_pause_s() - (self._clock() - started)
            if self._stop.wait(max(pause, 0.0)):
                return

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=timeout_s)
