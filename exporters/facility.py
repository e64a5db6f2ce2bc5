"""The `wattwise facility` daemon's /metrics: a custom collector over its latest snapshot."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from wattwise.model import FacilitySnapshot


class FacilityCollector(Collector):
    def __init__(self, latest: Callable[[], FacilitySnapshot | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        snap = self._latest()
        if snap is not None:
            yield from _energy_families(snap)
            yield from _pue_families(snap)
            yield from _meter_families(snap)


def _energy_families(snap: FacilitySnapshot) -> Iterator[Metric]:
    energy = CounterMetricFamily(
        "wattwise_facility_energy",
        "Energy over the spans where both meters were read: scope facility (the meter) or "
        "it (IT equipment)",
        labels=["scope"],
        unit="joules",
    )
    energy.add_metric(["facility"], snap.facility_j)
    energy.add_metric(["it"], snap.it_j)
    yield energy
    power = GaugeMetricFamily(
        "wattwise_facility_power_watts",
        "Mean power since the previous reading",
        labels=["scope"],
    )
    for scope, watts in (("facility", snap.facility_w), ("it", snap.it_w)):
        if watts is not None:
            power.add_metric([scope], watts)
    yield power


def _pue_families(snap: FacilitySnapshot) -> Iterator[Metric]:
    pue = GaugeMetricFamily(
        "wattwise_facility_pue",
        "PUE = facility energy / IT energy over the window; absent while not valid",
        labels=["window"],
    )
    valid = GaugeMetricFamily(
        "wattwise_facility_pue_valid",
        "1 if the window's PUE is exported; 0 when there is too little data, no IT energy, "
        "IT above facility (PUE < 1: a meter is wrong) or a stale meter",
        labels=["window"],
    )
    span = GaugeMetricFamily(
        "wattwise_facility_pue_span_seconds",
        "How much of the window has readings",
        labels=["window"],
    )
    for name, window in snap.windows:
        if window.ratio is not None:
            pue.add_metric([name], window.ratio)
        valid.add_metric([name], 1 if window.ratio is not None else 0)
        span.add_metric([name], window.span_s)
    yield from (pue, valid, span)
    category = GaugeMetricFamily(
        "wattwise_facility_pue_category_info",
        "ISO/IEC 30134-2 category implied by where IT energy is measured (none: component "
        "sums, which leave out fans and PSU losses)",
        labels=["category", "it_measured_at"],
    )
    category.add_metric([snap.pue_category, snap.it_measured_at], 1)
    yield category


def _meter_families(snap: FacilitySnapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "wattwise_facility_meter_up", "1 if the meter's last read succeeded", labels=["meter"]
    )
    age = GaugeMetricFamily(
        "wattwise_facility_meter_age_seconds",
        "Age of the meter's last good reading",
        labels=["meter"],
    )
    stale = GaugeMetricFamily(
        "wattwise_facility_meter_stale",
        "1 once the meter has been silent longer than facility.stale_after_s",
        labels=["meter"],
    )
    for state in snap.meters:
        up.add_metric([state.name], 1 if state.up else 0)
        if state.age_s is not None:
            age.add_metric([state.name], state.age_s)
        stale.add_metric([state.name], 1 if state.stale else 0)
    yield from (up, age, stale)
