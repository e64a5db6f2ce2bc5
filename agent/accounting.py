"""Turns raw energy counter readings into monotonic joules, across wraps and resets.

The exported counter equals the hardware reading at the first sample plus every corrected delta
since, kept in integer microjoules so that no rounding accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from wattwise.model import CounterKey, CounterReading, DomainEnergy

UJ_PER_J = 1_000_000


class Step(Enum):
    NORMAL = "normal"
    WRAP = "wrap"  # RAPL: the counter passed max_energy_range_uj and restarted at zero
    RESET = "reset"  # NVML: the driver was reloaded and the counter restarted at zero


def counter_delta(previous_uj: int, current_uj: int, wrap_uj: int | None) -> tuple[int, Step]:
    """Energy between two readings of one counter, in microjoules.

    A counter with a modulus (RAPL) that goes down has wrapped: it rose to the modulus and on
    from zero. A counter without one (NVML) that goes down was reset, and what it reads now is
    all that was consumed since the reset; what happened between the last read and the reset is
    unknowable and is lost, as Prometheus' rate() assumes too.
    """
    if current_uj >= previous_uj:
        return current_uj - previous_uj, Step.NORMAL
    if wrap_uj is not None:
        return wrap_uj - previous_uj + current_uj, Step.WRAP
    return current_uj, Step.RESET


@dataclass(slots=True)
class _CounterState:
    last_raw_uj: int
    last_monotonic_s: float
    total_uj: int
    in_node_total: bool
    power_w: float | None = None
    delta_uj: int = 0  # added by the latest reading
    wraps: int = 0
    resets: int = 0


class EnergyCounters:
    """Per-counter state between ticks. Not thread-safe: only the tick calls it."""

    def __init__(self) -> None:
        self._state: dict[CounterKey, _CounterState] = {}
        self._keys: tuple[CounterKey, ...] = ()  # the last tick's keys, and their sorted order
        self._ranks: list[int] = []

    def update(self, readings: tuple[CounterReading, ...]) -> tuple[DomainEnergy, ...]:
        """Folds one tick's readings in; returns every counter ever seen, down ones included."""
        seen: dict[CounterKey, DomainEnergy] = {}
        for reading in readings:
            seen[reading.key] = self._fold(reading)
        # A counter that vanished this tick (a GPU that fell off the bus) keeps its total.
        for key, state in self._state.items():
            if key not in seen:
                seen[key] = _render(key, state, up=False, error="not reported")
        keys = tuple(seen)  # the same key objects tick after tick: compared by identity
        if keys != self._keys:
            ranks = sorted(range(len(keys)), key=lambda i: _sort_key(keys[i]))
            self._keys, self._ranks = keys, ranks
        rendered = list(seen.values())
        return tuple(rendered[i] for i in self._ranks)

    def _fold(self, reading: CounterReading) -> DomainEnergy:
        state = self._state.get(reading.key)
        error = reading.error
        raw = reading.raw_uj
        if raw is not None and reading.wrap_uj is not None and raw > reading.wrap_uj:
            error, raw = f"reading {raw} uJ is above max_energy_range_uj {reading.wrap_uj}", None
        if raw is None:
            if state is not None:
                state.delta_uj = 0  # whatever it used shows up in the next good reading
            if state is None:
                in_total = reading.in_node_total
                return DomainEnergy(
                    reading.key, 0.0, None, False, error, in_total, 0, 0, read=False
                )
            return _render(reading.key, state, up=False, error=error)
        if state is None:
            state = _CounterState(raw, reading.monotonic_s, raw, reading.in_node_total)
            self._state[reading.key] = state
            return _render(reading.key, state, up=True, error=None)

        delta_uj, step = counter_delta(state.last_raw_uj, raw, reading.wrap_uj)
        elapsed_s = reading.monotonic_s - state.last_monotonic_s
        state.total_uj += delta_uj
        state.delta_uj = delta_uj
        state.power_w = delta_uj / UJ_PER_J / elapsed_s if elapsed_s > 0 else state.power_w
        state.last_raw_uj = raw
        state.last_monotonic_s = reading.monotonic_s
        state.wraps += step is Step.WRAP
        state.resets += step is Step.RESET
        return _render(reading.key, state, up=True, error=None)


def _render(key: CounterKey, state: _CounterState, *, up: bool, error: str | None) -> DomainEnergy:
    return DomainEnergy(
        key=key,
        energy_j=state.total_uj / UJ_PER_J,
        power_w=state.power_w if up else None,
        up=up,
        error=error,
        in_node_total=state.in_node_total,
        wraps=state.wraps,
        resets=state.resets,
        interval_energy_j=state.delta_uj / UJ_PER_J if up else 0.0,
    )


def _sort_key(key: CounterKey) -> tuple[str, str, int, str]:
    device_number = int(key.device) if key.device.isdigit() else -1
    return (key.source, key.domain, device_number, key.device)
