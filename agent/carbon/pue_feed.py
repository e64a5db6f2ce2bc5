"""The measured PUE from a `wattwise facility` daemon, for the node agent's carbon.

Its /metrics is fetched off the tick, every 30 s, and parsed with prometheus_client's own
parser. When the facility cannot be reached, or its PUE for the chosen window is not valid, the
last good value serves for up to `stale_after_s`, then the configured static PUE does.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families

log = logging.getLogger(__name__)

REFRESH_S = 30.0
FACILITY, CONFIG = "facility", "config"


class FacilityPue:
    def __init__(
        self,
        url: str,
        window: str,
        fallback_ratio: float,
        stale_after_s: float = 600.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url, self.window = url, window
        self.fallback_ratio = fallback_ratio
        self.stale_after_s = stale_after_s
        self.http = http or httpx.Client(timeout=5.0, transport=httpx.HTTPTransport(retries=2))
        self._good: tuple[float, float] | None = None  # (ratio, when)
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def current(self, now_unix_s: float | None = None) -> tuple[float, str]:
        """(PUE, where it came from)."""
        now = time.time() if now_unix_s is None else now_unix_s
        good = self._good
        if good is not None and now - good[1] <= self.stale_after_s:
            return good[0], FACILITY
        return self.fallback_ratio, CONFIG

    def refresh(self) -> None:
        try:
            ratio = self._fetch()
        except (httpx.HTTPError, ValueError) as exc:
            self._note(f"{self.url}: {exc}")
            return
        if ratio is None:
            self._note(f"{self.url} has no valid PUE for window {self.window}")
            return
        self._good = (ratio, time.time())
        self._note(None)

    def _fetch(self) -> float | None:
        response = self.http.get(self.url)
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            if family.name != "wattwise_facility_pue":
                continue
            for sample in family.samples:
                if sample.labels.get("window") == self.window and sample.value >= 1.0:
                    return sample.value
        return None

    def _note(self, error: str | None) -> None:
        if error != self.error:
            if error:
                log.warning("measured PUE unavailable: %s", error)
            else:
                log.info("measured PUE from %s (window %s)", self.url, self.window)
            self.error = error

    def start(self) -> None:
        self.refresh()
        self._thread = threading.Thread(target=self._run, daemon=True, name="facility-pue")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(REFRESH_S):
            self.refresh()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
