"""Great Britain's grid from the Carbon Intensity API (National Grid ESO): no key needed.

National: GET /intensity, data[0].intensity.actual (or forecast while the half-hour is open).
Regional: GET /regional/regionid/<id>, data[0].data[0].intensity.forecast. Half-hourly, an
average of generation. Its published factors count combustion only (nuclear, wind, solar and
hydro are 0 g/kWh), so the basis is direct, not lifecycle.
"""

from __future__ import annotations

from typing import Any

from wattwise.carbon.intensity import (
    ANY_G,
    AVERAGE,
    DIRECT,
    Intensity,
    ProviderError,
)
from wattwise.checks import BadNumber, number
from wattwise.net.http import HttpClient, get_json, parse_time

STALE_S = 3600.0  # a half-hour period that ended more than an hour ago is not "now"


class UkGridProvider:
    name = "ukgrid"
    period_s = 1800.0

    def __init__(
        self,
        base_url: str = "https://api.carbonintensity.org.uk",
        region_id: int | None = None,
        http: HttpClient | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.region_id = region_id
        self.http = http or HttpClient()
        self.zone = f"GB-region-{region_id}" if region_id else "GB"

    def fetch(self, now_unix_s: float) -> Intensity:
        if self.region_id:
            url = f"{self.base_url}/regional/regionid/{self.region_id}"
        else:
            url = f"{self.base_url}/intensity"
        body = get_json(self.http, url, error=ProviderError)
        try:
            period = body["data"][0]
            if self.region_id:
                period = period["data"][0]
            values: dict[str, Any] = period["intensity"]
            grams = values.get("actual")
            if grams is None:
                grams = values["forecast"]
            start = parse_time(period["from"], ProviderError)
            end = parse_time(period["to"], ProviderError)
            grams = number(grams, f"{url} intensity", -ANY_G, ANY_G)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(f"{url}: unexpected response shape ({exc!r})") from None
        except BadNumber as exc:
            raise ProviderError(str(exc)) from None
        if now_unix_s - end > STALE_S:
            raise ProviderError(f"{url}: stale data, its period ended {now_unix_s - end:.0f} s ago")
        return Intensity(grams, self.zone, self.name, AVERAGE, DIRECT, start, now_unix_s, end)
