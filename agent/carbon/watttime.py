"""WattTime API v3: a marginal signal (co2_moer) in lbs CO2 per MWh, converted to g/kWh.

GET /login with HTTP basic auth gives a bearer token valid for 30 minutes; it is renewed before
it expires and once more when a data call answers 401. The current value is the first point of
GET /v3/forecast?region=..&signal_type=co2_moer. Five-minute data: asked at most every 5 min.
"""

from __future__ import annotations

import time
from typing import Any

from wattwise.carbon.intensity import (
    ANY_G,
    DIRECT,
    LBS_PER_MWH_TO_G_PER_KWH,
    MARGINAL,
    Intensity,
    ProviderError,
)
from wattwise.checks import BadNumber, number
from wattwise.net.http import HttpClient, get_json, parse_time

TOKEN_LIFETIME_S = 30 * 60
RENEW_BEFORE_S = 60


class WattTimeProvider:
    name = "watttime"
    period_s = 300.0

    def __init__(
        self,
        username: str,
        password: str,
        region: str,
        base_url: str = "https://api.watttime.org",
        http: HttpClient | None = None,
    ) -> None:
        if not (username and password):
            raise ProviderError("watttime needs carbon.watttime_username and _password")
        self.auth = (username, password)
        self.region = region
        self.base_url = base_url.rstrip("/")
        self.http = http or HttpClient()
        self._token: str | None = None
        self._token_until = 0.0

    def _login(self) -> str:
        if self._token is None or time.monotonic() >= self._token_until - RENEW_BEFORE_S:
            body = get_json(
                self.http, f"{self.base_url}/login", error=ProviderError, auth=self.auth
            )
            token = body.get("token") if isinstance(body, dict) else None
            if not isinstance(token, str) or not token:
                raise ProviderError("watttime /login answered without a token")
            self._token, self._token_until = token, time.monotonic() + TOKEN_LIFETIME_S
        return self._token

    def fetch(self, now_unix_s: float) -> Intensity:
        url = f"{self.base_url}/v3/forecast"
        params = {"region": self.region, "signal_type": "co2_moer", "horizon_hours": "0"}
        try:
            body = self._forecast(url, params)
        except ProviderError as exc:
            if "HTTP 401" not in str(exc):
                raise
            self._token = None  # expired early: log in again, once
            body = self._forecast(url, params)
        try:
            point = body["data"][0]
            units = body["meta"]["units"]
            value, valid_at = point["value"], parse_time(point["point_time"], ProviderError)
        except (KeyError, IndexError, TypeError, AttributeError) as exc:
            raise ProviderError(f"{url}: unexpected response shape ({exc!r})") from None
        if units != "lbs_co2_per_mwh":
            raise ProviderError(f"{url}: expected a number in lbs_co2_per_mwh, got {units!r:.40}")
        try:
            lbs_per_mwh = number(value, f"{url} value", -ANY_G, ANY_G)
        except BadNumber as exc:
            raise ProviderError(f"{exc} (lbs_co2_per_mwh)") from None
        grams = lbs_per_mwh * LBS_PER_MWH_TO_G_PER_KWH
        point_end = valid_at + self.period_s  # a five-minute point
        return Intensity(
            grams, self.region, self.name, MARGINAL, DIRECT, valid_at, now_unix_s, point_end
        )

    def _forecast(self, url: str, params: dict[str, str]) -> Any:
        headers = {"Authorization": f"Bearer {self._login()}"}
        return get_json(self.http, url, error=ProviderError, params=params, headers=headers)
