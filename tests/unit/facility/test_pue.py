"""PUE as a ratio of energies over windows, from meters read together."""

from __future__ import annotations

import pytest

from wattwise.facility.pue import PueTracker
from wattwise.model import MeterReading

WINDOWS = {"5m": 300.0, "1h": 3600.0}


def energy(t: float, joules: float) -> MeterReading:
    return MeterReading(t, energy_j=joules)


def power(t: float, watts: float) -> MeterReading:
    return MeterReading(t, power_w=watts)


def test_ratio_of_energies_over_each_window() -> None:
    tracker = PueTracker(WINDOWS)
    # Facility power 150 kW for the first hour's first 55 min, then 130 kW; IT a steady 100 kW.
    for t in range(0, 3601, 60):
        watts = 150_000 if t <= 3300 else 130_000
        tracker.observe(t, power(t, watts), energy(t, 100_000.0 * t))
    hour = tracker.window(3600, 3600)
    assert hour.span_s == 3600
    # Trapezoids: 55 min at 150 kW, one minute ramping to 130 kW, 4 min at 130 kW.
    expected_facility_j = 3300 * 150_000 + 60 * 140_000 + 240 * 130_000
    assert hour.facility_j == pytest.approx(expected_facility_j)
    assert hour.ratio == pytest.approx(expected_facility_j / 360e6)
    last_5_min = (60 * 140_000 + 240 * 130_000) / (300 * 100_000)  # the ramp is inside it
    assert tracker.window(300, 3600).ratio == pytest.approx(last_5_min)
    assert tracker.facility_w == pytest.approx(130_000) and tracker.it_w == pytest.approx(100_000)


def test_counter_resets_are_counted_as_new_counters_per_series() -> None:
    tracker = PueTracker(WINDOWS)
    it = lambda t, a, b: MeterReading(t, energy_j=a + b, energy_series_j={"a": a, "b": b})  # noqa: E731
    tracker.observe(0, energy(0, 1000.0), it(0, 500.0, 500.0))
    tracker.observe(60, energy(60, 2500.0), it(60, 1000.0, 1000.0))
    # Node a restarted: its counter fell to 200 J, all of it new. Node b goes on.
    tracker.observe(120, energy(120, 3790.0), it(120, 200.0, 1660.0))
    assert tracker.it_j == pytest.approx(500 + 500 + 200 + 660)
    assert tracker.window(300, 120).ratio == pytest.approx(2790 / 1860)


def test_it_above_facility_is_flagged_not_exported() -> None:
    tracker = PueTracker(WINDOWS)
    tracker.observe(0, energy(0, 0.0), energy(0, 0.0))
    tracker.observe(60, energy(60, 900.0), energy(60, 1000.0))
    window = tracker.window(300, 60)
    assert window.ratio is None and "IT energy exceeds the facility's" in (window.problem or "")


def test_no_data_and_no_it_energy_are_not_a_pue() -> None:
    tracker = PueTracker(WINDOWS)
    assert tracker.window(300, 0).problem == "not enough readings yet"
    tracker.observe(0, energy(0, 0.0), energy(0, 5.0))
    tracker.observe(60, energy(60, 100.0), energy(60, 5.0))
    assert tracker.window(300, 60).problem == "no IT energy"


def test_a_gap_longer_than_stale_is_not_bridged() -> None:
    tracker = PueTracker(WINDOWS, stale_after_s=300)
    tracker.observe(0, power(0, 150.0), power(0, 100.0))
    tracker.observe(60, power(60, 150.0), power(60, 100.0))
    # Ten minutes without a pair: integrating across would invent energy on both sides.
    tracker.observe(660, power(660, 300.0), power(660, 100.0))
    assert tracker.facility_j == pytest.approx(60 * 150.0)
    tracker.observe(720, power(720, 300.0), power(720, 100.0))
    assert tracker.window(3600, 720).ratio == pytest.approx(3.0)  # only since the new baseline
