"""Logging a problem when it starts, changes or clears, never once a tick: a meter that stays
down, or a sensor returning NaN every tick, is one log line."""

from __future__ import annotations

import logging
from collections import OrderedDict


class ProblemLog:
    """Each origin's current problem, logged as a warning when it starts or its message changes
    and at info (`cleared`, with the origin) when it clears. Remembers a bounded number of
    origins, so callers that name new origins cannot grow it."""

    def __init__(
        self, logger: logging.Logger, cleared: str = "%s works again", limit: int = 1024
    ) -> None:
        self._log = logger
        self._cleared = cleared
        self._limit = limit
        self._open: OrderedDict[str, str] = OrderedDict()

    def problem(self, origin: str, message: str, once: bool = False) -> None:
        """Logs `message` unless it is this origin's current problem; with `once`, unless the
        origin has any problem now (for messages a caller could vary to flood the log)."""
        if self._open.get(origin) == message or (once and origin in self._open):
            return
        self._log.warning("%s", message)
        self._open[origin] = message
        self._open.move_to_end(origin)
        while len(self._open) > self._limit:
            self._open.popitem(last=False)

    def clear(self, origin: str) -> None:
        if self._open.pop(origin, None) is not None:
            self._log.info(self._cleared, origin)

    def current(self, origin: str) -> str | None:
        return self._open.get(origin)
