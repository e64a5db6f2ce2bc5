"""The agent's two clocks, injected so that tests and benchmarks can run months of ticks in
minutes: wall time (unix seconds: minutes, hours, reports) and monotonic time (intervals)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Clock:
    wall: Callable[[], float] = time.time
    monotonic: Callable[[], float] = time.monotonic


SYSTEM = Clock()


class SteppedClock:
    """A clock that moves only when told: each step adds `step_s` to both times."""

    def __init__(self, start_unix_s: float, step_s: float = 1.0) -> None:
        self.now = start_unix_s
        self.step_s = step_s

    def advance(self, seconds: float | None = None) -> None:
        self.now += self.step_s if seconds is None else seconds

    @property
    def clock(self) -> Clock:
        return Clock(wall=lambda: self.now, monotonic=lambda: self.now)


def unix_s_from_iso(text: str) -> float:
    """ISO 8601 ('2026-11-23T12:00Z', '...+00:00') to unix seconds; a time without an offset is
    UTC. Raises ValueError."""
    moment = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
