"""Electricity Maps v3 and WattTime v3 in their documented shapes, against local servers."""

from __future__ import annotations

import base64

import pytest

from tests.support.providers import Script, serve
from wattwise.carbon.electricitymaps import ElectricityMapsProvider
from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import ProviderError
from wattwise.carbon.table import TableProvider
from wattwise.carbon.watttime import WattTimeProvider
from wattwise.net.http import HttpClient

NOW = 1_795_435_500.0
EM_LATEST = {
    "zone": "DE",
    "carbonIntensity": 302,
    "datetime": "2026-11-23T12:00:00.000Z",
    "updatedAt": "2026-11-23T11:50:51.734Z",
    "createdAt": "2026-11-20T12:53:47.341Z",
    "emissionFactorType": "lifecycle",
    "isEstimated": True,
    "estimationMethod": "TIME_SLICER",
}
WT_FORECAST = {
    "data": [
        {"point_time": "2026-11-23T12:05:00+00:00", "value": 900.0},
        {"point_time": "2026-11-23T12:10:00+00:00", "value": 950.0},
    ],
    "meta": {
        "region": "CAISO_NORTH",
        "signal_type": "co2_moer",
        "units": "lbs_co2_per_mwh",
        "generated_at": "2026-11-23T12:05:00+00:00",
        "model": {"date": "2026-03-01"},
    },
}


def test_electricitymaps_by_zone_sends_the_token_and_reads_the_latest() -> None:
    script = Script(body=EM_LATEST)
    with serve(script) as url:
        value = ElectricityMapsProvider("secret", zone="DE", base_url=url).fetch(NOW)
    assert (value.grams_per_kwh, value.zone, value.basis, value.signal) == (
        302.0,
        "DE",
        "lifecycle",
        "average",
    )
    path, headers = script.requests[0]
    assert path.startswith("/v3/carbon-intensity/latest?") and "zone=DE" in path
    assert "emissionFactorType=lifecycle" in path and headers["auth-token"] == "secret"


def test_electricitymaps_by_position_and_direct_basis() -> None:
    script = Script(body={**EM_LATEST, "emissionFactorType": "direct"})
    with serve(script) as url:
        value = ElectricityMapsProvider(
            "k", lat_lon=(52.5, 13.4), basis="direct", base_url=url
        ).fetch(NOW)
    assert value.basis == "direct"
    assert "lat=52.5" in script.requests[0][0] and "lon=13.4" in script.requests[0][0]


@pytest.mark.parametrize(
    ("status", "body", "message"),
    [
        (401, {"message": "no"}, "API key or login was refused"),
        (429, {}, "rate limited"),
        (500, {}, "HTTP 500"),
        (200, {"zone": "DE"}, "unexpected response shape"),
        (200, {**EM_LATEST, "carbonIntensity": None}, "not a number"),
    ],
)
def test_electricitymaps_failures(status: int, body: dict, message: str) -> None:
    with (
        serve(Script(status=status, body=body)) as url,
        pytest.raises(ProviderError, match=message),
    ):
        ElectricityMapsProvider("k", zone="DE", base_url=url).fetch(NOW)


def test_a_missing_key_is_a_clear_error() -> None:
    with pytest.raises(ProviderError, match="needs an API token"):
        ElectricityMapsProvider("", zone="DE")
    with pytest.raises(ProviderError, match="watttime_username"):
        WattTimeProvider("", "", "CAISO_NORTH")


def test_watttime_logs_in_with_basic_auth_and_converts_lbs_per_mwh() -> None:
    script = Script(routes={"/login": (200, {"token": "tok1"}), "/v3/forecast": (200, WT_FORECAST)})
    with serve(script) as url:
        provider = WattTimeProvider("ada", "pw", "CAISO_NORTH", base_url=url)
        value = provider.fetch(NOW)
        provider.fetch(NOW + 300)  # the token is reused within its 30 minutes
    assert value.grams_per_kwh == pytest.approx(900.0 * 0.45359237)  # 408.2 g/kWh
    assert (value.signal, value.zone, value.provider) == ("marginal", "CAISO_NORTH", "watttime")
    paths = [p for p, _ in script.requests]
    assert paths.count("/login") == 1 and sum(p.startswith("/v3/forecast") for p in paths) == 2
    login_headers = script.requests[0][1]
    assert login_headers["Authorization"] == "Basic " + base64.b64encode(b"ada:pw").decode()
    data_headers = script.requests[1][1]
    assert data_headers["Authorization"] == "Bearer tok1"
    assert "signal_type=co2_moer" in script.requests[1][0]


def test_watttime_logs_in_again_when_the_token_is_refused() -> None:
    script = Script(routes={"/login": (200, {"token": "t"}), "/v3/forecast": (401, {})})
    with serve(script) as url:
        provider = WattTimeProvider("a", "b", "CAISO_NORTH", base_url=url)
        with pytest.raises(ProviderError, match="HTTP 401"):
            provider.fetch(NOW)
    assert [p for p, _ in script.requests].count("/login") == 2  # tried once more, then gave up


def test_watttime_wrong_units_and_login_refused() -> None:
    bad = {**WT_FORECAST, "meta": {**WT_FORECAST["meta"], "units": "kg_co2_per_mwh"}}
    wrong_units = Script(routes={"/login": (200, {"token": "t"}), "/v3/forecast": (200, bad)})
    with serve(wrong_units) as url, pytest.raises(ProviderError, match="lbs_co2_per_mwh"):
        WattTimeProvider("a", "b", "R", base_url=url).fetch(NOW)
    refused = Script(routes={"/login": (403, {})})
    with serve(refused) as url, pytest.raises(ProviderError, match="HTTP 403"):
        WattTimeProvider("a", "b", "R", base_url=url, http=HttpClient(deadline_s=10)).fetch(NOW)


def test_an_absurd_marginal_value_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    absurd = {
        **WT_FORECAST,
        "data": [{"point_time": "2026-11-23T12:05:00+00:00", "value": 9000.0}],
    }  # 4,082 g/kWh
    with serve(
        Script(routes={"/login": (200, {"token": "t"}), "/v3/forecast": (200, absurd)})
    ) as url:
        grid = GridIntensity(
            [WattTimeProvider("a", "b", "R", base_url=url), TableProvider("WORLD")]
        )
        assert grid.refresh(NOW).provider == "table"
    assert "rejected" in caplog.text
