"""Electricity Maps API v3: GET /v3/carbon-intensity/latest with an `auth-token` header.

By zone (zone=DE) or position (lat=..&lon=..); emissionFactorType lifecycle (default) or
direct. Hourly data: asked at most once an hour. The answer carries carbonIntensity (gCO2eq/kWh),
datetime and emissionFactorType.
"""

from __future__ import annotations

from wattwise.carbon.intensity import (
    ANY_G,
    AVERAGE,
    DIRECT,
    LIFECYCLE,
    Intensity,
    ProviderError,
)
from wattwise.checks import BadNumber, number
from wattwise.net.http import HttpClient, get_json, parse_time


class ElectricityMapsProvider:
    name = "electricitymaps"
    period_s = 3600.0

    def __init__(
        self,
        token: str,
        zone: str | None = None,
        lat_lon: tuple[float, float] | None = None,
        basis: str = LIFECYCLE,
        base_url: str = "https://api.electricitymap.org",
        http: HttpClient | None = None,
    ) -> None:
        if not token:
            raise ProviderError("electricitymaps needs an API token (carbon.electricitymaps_token)")
        if basis not in (LIFECYCLE, DIRECT):
            raise ProviderError(f"emission factor basis must be lifecycle or direct, not {basis}")
        self.token, self.zone, self.lat_lon, self.basis = token, zone, lat_lon, basis
        self.base_url = base_url.rstrip("/")
        self.http = http or HttpClient()

    def fetch(self, now_unix_s: float) -> Intensity:
        params: dict[str, str] = {"emissionFactorType": self.basis}
        if self.zone:
            params["zone"] = self.zone
        elif self.lat_lon:
            params["lat"], params["lon"] = (str(v) for v in self.lat_lon)
        url = f"{self.base_url}/v3/carbon-intensity/latest"
        body = get_json(
            self.http, url, error=ProviderError, params=params, headers={"auth-token": self.token}
        )
        try:
            grams = number(body["carbonIntensity"], f"{url} carbonIntensity", -ANY_G, ANY_G)
            valid_at = parse_time(body["datetime"], ProviderError)
            zone = str(body.get("zone") or self.zone or "?")
            basis = body.get("emissionFactorType") or self.basis
        except (KeyError, TypeError, AttributeError) as exc:
            raise ProviderError(f"{url}: unexpected response shape ({exc!r})") from None
        except BadNumber as exc:
            raise ProviderError(str(exc)) from None
        if basis not in (LIFECYCLE, DIRECT):
            raise ProviderError(
                f"{url}: emissionFactorType {basis!r:.40} is not lifecycle or direct"
            )
        hour_end = valid_at + self.period_s  # the value describes the hour from `datetime`
        return Intensity(
            grams, zone[:64], self.name, AVERAGE, basis, valid_at, now_unix_s, hour_end
        )
