"""UK Carbon Intensity API shapes (api.carbonintensity.org.uk) against a local server."""

from __future__ import annotations

import pytest

from tests.support.providers import Script, serve
from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import ProviderError
from wattwise.carbon.table import TableProvider
from wattwise.carbon.ukgrid import UkGridProvider
from wattwise.net.http import HttpClient

NOW = 1_795_435_500.0  # 2026-11-23T12:05Z


def national(actual: float | None, forecast: float = 180) -> dict:
    return {
        "data": [
            {
                "from": "2026-11-23T12:00Z",
                "to": "2026-11-23T12:30Z",
                "intensity": {"forecast": forecast, "actual": actual, "index": "moderate"},
            }
        ]
    }


REGIONAL = {
    "data": [
        {
            "regionid": 13,
            "dnoregion": "UKPN London",
            "shortname": "London",
            "data": [
                {
                    "from": "2026-11-23T12:00Z",
                    "to": "2026-11-23T12:30Z",
                    "intensity": {"forecast": 142, "index": "low"},
                    "generationmix": [],
                }
            ],
        }
    ]
}


def test_national_actual_then_forecast_while_the_half_hour_is_open() -> None:
    script = Script(body=national(171))
    with serve(script) as url:
        value = UkGridProvider(url).fetch(NOW)
        assert (value.grams_per_kwh, value.zone, value.signal, value.basis) == (
            171.0,
            "GB",
            "average",
            "direct",  # UK factors count combustion only: operational, not lifecycle
        )
        assert value.valid_at_unix_s == NOW - 300
        script.body = national(None, forecast=190)
        assert UkGridProvider(url).fetch(NOW).grams_per_kwh == 190.0
    assert script.requests[0][0] == "/intensity"


def test_regional() -> None:
    script = Script(body=REGIONAL)
    with serve(script) as url:
        value = UkGridProvider(url, region_id=13).fetch(NOW)
    assert (value.grams_per_kwh, value.zone) == (142.0, "GB-region-13")
    assert script.requests[0][0] == "/regional/regionid/13"


@pytest.mark.parametrize(
    ("script", "message"),
    [
        (Script(status=500, body={"error": "x"}), "HTTP 500"),
        (Script(status=429, body={}), "rate limited"),
        (Script(body=b"<html>maintenance</html>"), "not JSON"),
        (Script(body={"data": []}), "unexpected response shape"),
        (
            Script(
                body={
                    "data": [
                        {
                            "from": "2026-11-23T12:00Z",
                            "to": "2026-11-23T12:30Z",
                            "intensity": {"forecast": "high", "actual": None},
                        }
                    ]
                }
            ),
            "not a number",
        ),
        (
            Script(
                body={
                    "data": [
                        {
                            "from": "2026-11-22T12:00Z",
                            "to": "2026-11-22T12:30Z",
                            "intensity": {"forecast": 100, "actual": 100},
                        }
                    ]
                }
            ),
            "stale data",
        ),
        (Script(body=national(171), delay_s=4.0), "did not answer within 1 s"),
    ],
)
def test_failures_are_clear_errors(script: Script, message: str) -> None:
    # Only the slow case is about the deadline: the others get one no loaded CI machine misses.
    http = HttpClient(deadline_s=1.0 if script.delay_s else 10.0)
    with serve(script) as url, pytest.raises(ProviderError, match=message):
        UkGridProvider(url, http=http).fetch(NOW)


def test_an_outage_switches_to_the_fallback_and_back() -> None:
    script = Script(body=national(171))
    with serve(script) as url:
        grid = GridIntensity([UkGridProvider(url), TableProvider("WORLD")], stale_after_s=3600)
        assert grid.refresh(NOW).provider == "ukgrid"
        script.status = 500
        # The last good value ages from the end of its half hour (12:30), not from the fetch.
        assert grid.refresh(NOW + 1800).provider == "ukgrid"  # 12:35: its period ended 5 min ago
        assert grid.refresh(NOW + 5000).provider == "ukgrid"  # 13:28: 58 min
        assert grid.refresh(NOW + 5200).provider == "table"  # 13:31: stale, the table answers
        script.status = 200
        script.body = {
            "data": [
                {
                    "from": "2026-11-23T13:30Z",
                    "to": "2026-11-23T14:00Z",
                    "intensity": {"forecast": 150, "actual": 150},
                }
            ]
        }
        back = grid.refresh(NOW + 5500)
        assert (back.provider, back.grams_per_kwh) == ("ukgrid", 150.0)
