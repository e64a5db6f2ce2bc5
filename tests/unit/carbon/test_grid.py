from __future__ import annotations

import pytest

from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import AVERAGE, LIFECYCLE, Intensity, ProviderError
from wattwise.carbon.table import ANNUAL_AVERAGES, StaticProvider, TableProvider


class Scripted:
    """A provider whose answers a test sets: a number, or an error message."""

    def __init__(self, name: str, period_s: float, answers: list[float | str]) -> None:
        self.name, self.period_s, self.answers, self.asked = name, period_s, answers, 0

    def fetch(self, now_unix_s: float) -> Intensity:
        answer = self.answers[min(self.asked, len(self.answers) - 1)]
        self.asked += 1
        if isinstance(answer, str):
            raise ProviderError(answer)
        return Intensity(answer, "GB", self.name, AVERAGE, LIFECYCLE, now_unix_s, now_unix_s)


def test_table_rows_are_plausible_and_unknown_zones_fall_back_loudly(caplog) -> None:
    assert all(0 < g < 1000 and year >= 2023 and src for g, year, src in ANNUAL_AVERAGES.values())
    assert TableProvider("fr").fetch(0).grams_per_kwh == 56.0
    assert TableProvider("CN").fetch(0).grams_per_kwh == 530.6
    fallback = TableProvider("XX").fetch(0)
    assert (fallback.zone, fallback.grams_per_kwh) == ("WORLD", 481.0)
    assert "not in the bundled table" in caplog.text


def test_the_preferred_provider_wins_and_is_asked_once_per_period() -> None:
    live = Scripted("live", 1800, [200.0])
    grid = GridIntensity([live, TableProvider("DE")])
    assert grid.refresh(0).grams_per_kwh == 200.0
    grid.refresh(600)
    assert live.asked == 1  # still current: not asked again inside its period
    grid.refresh(1800)
    assert live.asked == 2


def test_failure_keeps_the_last_good_value_then_falls_back_then_comes_back() -> None:
    live = Scripted("live", 1800, [200.0, "HTTP 500", "HTTP 500", "HTTP 500", 150.0])
    grid = GridIntensity([live, StaticProvider(400.0)], stale_after_s=3600)
    assert grid.refresh(0).grams_per_kwh == 200.0
    kept = grid.refresh(1800)  # fails; its last good value is 30 min old: kept
    assert (kept.provider, kept.grams_per_kwh) == ("live", 200.0)
    assert not grid.states()[0].up and grid.states()[0].error == "HTTP 500"
    grid.refresh(2100)  # retried after 5 min, fails again
    fallback = grid.refresh(3900)  # fails; 65 min old: stale, the static value answers
    assert (fallback.provider, fallback.grams_per_kwh) == ("static", 400.0)
    back = grid.refresh(4200)
    assert (back.provider, back.grams_per_kwh) == ("live", 150.0)
    assert grid.states()[0].up


@pytest.mark.parametrize("absurd", [-5.0, 2500.0])
def test_negative_or_absurd_values_are_rejected_and_the_fallback_used(
    absurd: float, caplog: pytest.LogCaptureFixture
) -> None:
    grid = GridIntensity([Scripted("live", 300, [absurd]), StaticProvider(300.0)])
    assert grid.refresh(0).provider == "static"
    assert "rejected" in caplog.text


def test_the_refresher_thread_fills_current_before_the_first_tick() -> None:
    grid = GridIntensity([TableProvider("SE")])
    grid.start(every_s=3600)
    try:
        assert grid.current().grams_per_kwh == 40.7
    finally:
        grid.stop()
