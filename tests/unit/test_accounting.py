from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from wattwise.accounting import EnergyCounters, Step, counter_delta
from wattwise.model import CounterKey, CounterReading

MAX_UJ = 262_143_328_850
KEY = CounterKey("package", "0", "rapl")
GPU = CounterKey("gpu", "0", "nvml")


def reading(raw: int | None, t: float, key: CounterKey = KEY, error: str | None = None):
    wrap = MAX_UJ if key.source == "rapl" else None
    return CounterReading(key, raw, wrap, t, True, error)


def test_delta_normal_wrap_and_reset() -> None:
    assert counter_delta(100, 350, MAX_UJ) == (250, Step.NORMAL)
    assert counter_delta(MAX_UJ - 1_000, 500, MAX_UJ) == (1_500, Step.WRAP)
    assert counter_delta(9_000, 2_000, None) == (2_000, Step.RESET)


def test_first_sample_exports_the_hardware_reading_exactly() -> None:
    accounts = EnergyCounters()
    (domain,) = accounts.update((reading(240_422_366_267, 0.0),))
    assert domain.energy_j == 240422.366267
    assert domain.up and domain.power_w is None


def test_wrap_keeps_rising_by_max_minus_previous_plus_current() -> None:
    accounts = EnergyCounters()
    accounts.update((reading(MAX_UJ - 2_000_000, 0.0),))
    (domain,) = accounts.update((reading(1_000_000, 1.0),))
    assert domain.energy_j == (MAX_UJ - 2_000_000 + 3_000_000) / 1e6
    assert domain.wraps == 1
    assert domain.power_w == 3.0


def test_reset_counts_the_new_reading_as_energy_since_the_reset() -> None:
    accounts = EnergyCounters()
    accounts.update((reading(5_000_000_000, 0.0, GPU),))
    (domain,) = accounts.update((reading(2_000_000, 1.0, GPU),))
    assert domain.energy_j == 5_002.0
    assert domain.resets == 1 and domain.wraps == 0


def test_garbage_marks_down_keeps_total_and_resumes_from_the_last_good_value() -> None:
    accounts = EnergyCounters()
    accounts.update((reading(1_000_000, 0.0),))
    (down,) = accounts.update((reading(None, 1.0, error="energy_uj: empty file"),))
    assert not down.up and down.error == "energy_uj: empty file"
    assert down.energy_j == 1.0 and down.power_w is None
    (back,) = accounts.update((reading(4_000_000, 2.0),))
    assert back.up and back.energy_j == 4.0
    assert back.power_w == 1.5  # 3 J over the two seconds since the last good reading


def test_a_reading_above_the_counter_range_is_rejected() -> None:
    accounts = EnergyCounters()
    accounts.update((reading(1_000_000, 0.0),))
    (domain,) = accounts.update((reading(MAX_UJ + 5, 1.0),))
    assert not domain.up and "above max_energy_range_uj" in (domain.error or "")
    assert domain.energy_j == 1.0


def test_never_read_counter_is_down_with_its_reason() -> None:
    (domain,) = EnergyCounters().update((reading(None, 0.0, error="energy_uj: permission denied"),))
    assert not domain.up and domain.energy_j == 0.0
    assert domain.error == "energy_uj: permission denied"


def test_a_counter_that_stops_being_reported_keeps_its_total() -> None:
    accounts = EnergyCounters()
    accounts.update((reading(1_000_000, 0.0), reading(7_000_000, 0.0, GPU)))
    domains = accounts.update((reading(2_000_000, 1.0),))
    gpu = next(d for d in domains if d.key == GPU)
    assert not gpu.up and gpu.energy_j == 7.0


@given(
    start=st.integers(0, MAX_UJ - 1),
    increments=st.lists(st.integers(0, MAX_UJ - 1), min_size=1, max_size=50),
)
def test_wrapping_counter_total_equals_start_plus_true_increments(
    start: int, increments: list[int]
) -> None:
    accounts = EnergyCounters()
    raw = start
    accounts.update((reading(raw, 0.0),))
    for i, increment in enumerate(increments, 1):
        raw = (raw + increment) % MAX_UJ
        (domain,) = accounts.update((reading(raw, float(i)),))
    # Integer microjoules inside, so the sum is exact before the single division.
    assert domain.energy_j == (start + sum(increments)) / 1e6


def test_interval_energy_is_the_latest_delta_and_zero_when_first_or_down() -> None:
    accounts = EnergyCounters()
    (first,) = accounts.update((reading(1_000_000, 0.0),))
    (second,) = accounts.update((reading(3_500_000, 1.0),))
    (down,) = accounts.update((reading(None, 2.0, error="x"),))
    (back,) = accounts.update((reading(4_000_000, 3.0),))
    assert [d.interval_energy_j for d in (first, second, down, back)] == [0.0, 2.5, 0.0, 0.5]


def test_a_zone_not_read_yet_leaves_its_source_total_out_rather_than_lower() -> None:
    """Found by test_restarts: the agent restarted while a DRAM zone read failed, and the node's
    RAPL total came back lower than before the restart (a reset to Prometheus' increase())."""
    from wattwise.model import Snapshot

    dram = CounterKey("dram", "0", "rapl")
    accounts = EnergyCounters()
    first = accounts.update((reading(3_000_000, 0.0), reading(None, 0.0, dram, "empty file")))
    assert Snapshot(0.0, 1.0, 0.0, first, (), ()).node_totals == ()
    both = accounts.update((reading(4_000_000, 1.0), reading(2_000_000, 1.0, dram)))
    assert [(t.source, t.energy_j) for t in Snapshot(1.0, 1.0, 0.0, both, (), ()).node_totals] == [
        ("rapl", 6.0)
    ]
    down = accounts.update((reading(5_000_000, 2.0), reading(None, 2.0, dram, "empty file")))
    # Down after a reading: its last total still counts, so the sum never drops.
    assert [t.energy_j for t in Snapshot(2.0, 1.0, 0.0, down, (), ()).node_totals] == [7.0]
