"""Every number that enters from outside passes here, where it enters: a job's environment,
cgroup and proc files, NVML, HTTP bodies, the work API. A value that is not a finite number in
its range is rejected with a message naming where it came from, so nothing non-finite or absurd
can ever reach a running total or the ledger.
"""

from __future__ import annotations

import logging
import math

from wattwise.errors import BadNumber
from wattwise.statelog import ProblemLog

U64_MAX = 2**64 - 1


def number(value: object, origin: str, low: float = 0.0, high: float = 1e18) -> float:
    """A number given as a number (JSON, a vendor library): int or float, never bool or text,
    finite and within [low, high]."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadNumber(f"{origin}: {_shown(value)} is not a number")
    return _in_range(value, origin, low, high)


def parse_number(text: str, origin: str, low: float = 0.0, high: float = 1e18) -> float:
    """A number written as text (an environment variable, a file)."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise BadNumber(f"{origin}: {_shown(text)} is not a number") from None
    return _in_range(value, origin, low, high)


def _in_range(value: int | float, origin: str, low: float, high: float) -> float:
    try:
        result = float(value)
    except OverflowError:  # an integer beyond any float, e.g. 10**400 from JSON
        raise BadNumber(f"{origin}: {_shown(value)} is out of range {low:g}..{high:g}") from None
    if math.isnan(result):
        raise BadNumber(f"{origin}: NaN is not a number")
    if not low <= result <= high:
        raise BadNumber(f"{origin}: {result:g} is out of range {low:g}..{high:g}")
    return result


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


class Rejections(ProblemLog):
    """Logs each origin's rejected value once, until that origin gives a good value again."""

    def __init__(self, logger: logging.Logger, limit: int = 1024) -> None:
        super().__init__(logger, "%s gives usable values again", limit)

    def reject(self, origin: str, why: str, once: bool = False) -> None:
        self.problem(origin, f"rejected {why}", once)

    def accept(self, origin: str) -> None:
        self.clear(origin)
