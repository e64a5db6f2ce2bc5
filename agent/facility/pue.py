"""PUE as a ratio of energies over time windows (ISO/IEC 30134-2), from two meters. Pure.

Both meters are read together each facility tick. Energy advances only over spans where both
were read, so the two sides always cover the same time: counters give exact deltas (a counter
that goes down was reset, and its new value is all that was used since), power is integrated
with the trapezoid rule. A gap longer than `stale_after_s` is not bridged: both sides start
again from the next good pair, so a window never compares a meter's gap with the other's data.
"""

from __future__ import annotations

from collections import deque

from wattwise.model import MeterReading, PueWindow

# ISO/IEC 30134-2 categories by where IT energy is measured; component sums (RAPL + GPUs) are
# not a category: they leave out fans and PSU losses, so the PUE they give is too high.
CATEGORIES = {
    "ups_output": "PUE1",
    "pdu_output": "PUE2",
    "it_equipment_input": "PUE3",
    "components": "none",
}


def _counter_delta(previous: float, current: float) -> float:
    return current - previous if current >= previous else current


def _energy_delta(before: MeterReading, after: MeterReading) -> float:
    if after.energy_series_j and before.energy_series_j:
        return sum(
            _counter_delta(before.energy_series_j[key], joules)
            for key, joules in after.energy_series_j.items()
            if key in before.energy_series_j  # a series new since: its baseline is now
        )
    if after.energy_j is not None and before.energy_j is not None:
        return _counter_delta(before.energy_j, after.energy_j)
    if after.power_w is not None and before.power_w is not None:
        return (before.power_w + after.power_w) / 2 * (after.at_unix_s - before.at_unix_s)
    return 0.0


class PueTracker:
    def __init__(self, windows_s: dict[str, float], stale_after_s: float = 300.0) -> None:
        self.windows_s = windows_s
        self.stale_after_s = stale_after_s
        self.facility_j = 0.0
        self.it_j = 0.0
        self.facility_w: float | None = None
        self.it_w: float | None = None
        self._pair: tuple[MeterReading, MeterReading] | None = None
        self._samples: deque[tuple[float, float, float]] = deque()  # (t, facility_j, it_j)

    def observe(self, now_unix_s: float, facility: MeterReading, it: MeterReading) -> None:
        """One tick where both meters answered."""
        if self._pair is not None and now_unix_s - self._pair[0].at_unix_s <= self.stale_after_s:
            before_f, before_i = self._pair
            span_s = max(now_unix_s - before_f.at_unix_s, 1e-9)
            added_f, added_i = _energy_delta(before_f, facility), _energy_delta(before_i, it)
            self.facility_j += added_f
            self.it_j += added_i
            self.facility_w, self.it_w = added_f / span_s, added_i / span_s
        else:  # the first pair, or a gap too long to bridge: a new baseline
            self._samples.clear()
        self._pair = (facility, it)
        self._samples.append((now_unix_s, self.facility_j, self.it_j))
        longest = max(self.windows_s.values(), default=0.0)
        while self._samples and self._samples[0][0] < now_unix_s - longest:
            self._samples.popleft()

    def windows(self, now_unix_s: float) -> list[tuple[str, PueWindow]]:
        return [(name, self.window(w, now_unix_s)) for name, w in self.windows_s.items()]

    def window(self, window_s: float, now_unix_s: float) -> PueWindow:
        inside = [s for s in self._samples if s[0] >= now_unix_s - window_s]
        if len(inside) < 2:
            return PueWindow(window_s, 0.0, 0.0, 0.0, None, "not enough readings yet")
        (t0, f0, i0), (t1, f1, i1) = inside[0], inside[-1]
        facility_j, it_j = f1 - f0, i1 - i0
        span_s = t1 - t0
        if it_j <= 0:
            return PueWindow(window_s, span_s, facility_j, it_j, None, "no IT energy")
        ratio = facility_j / it_j
        if ratio < 1.0:
            problem = f"IT energy exceeds the facility's (ratio {ratio:.3f}): check the meters"
            return PueWindow(window_s, span_s, facility_j, it_j, None, problem)
        return PueWindow(window_s, span_s, facility_j, it_j, ratio, None)
