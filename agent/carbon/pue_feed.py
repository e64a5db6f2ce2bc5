"""The measured PUE from a `wattwise facility` daemon, for the node agent's carbon.

Its /metrics is fetched off the tick, every 30 s, and parsed with prometheus_client's own
parser. When the facility cannot be reached, or its PUE for the chosen window is not valid, the
last good value serves for up to `stale_after_s`, then the configured static PUE does.
"""

from __future__ import annotations

import logging
import time

from wattwise.checks import BadNumber, number
from wattwise.errors import FeedError
from wattwise.net.http import HttpClient
from wattwise.service import Service

log = logging.getLogger(__name__)

REFRESH_S = 30.0
FACILITY, CONFIG = "facility", "config"
MAX_PUE = 5.0  # as carbon.pue_ratio: above any real data centre
MAX_PAGE_BYTES = 1 << 20  # the facility's /metrics is a few kB


class FacilityPue:
    def __init__(
        self,
        url: str,
        window: str,
        fallback_ratio: float,
        stale_after_s: float = 600.0,
        http: HttpClient | None = None,
    ) -> None:
        self.url, self.window = url, window
        self.fallback_ratio = fallback_ratio
        self.stale_after_s = stale_after_s
        self.http = http or HttpClient(deadline_s=5.0, max_bytes=MAX_PAGE_BYTES)
        self._good: tuple[float, float] | None = None  # (ratio, when)
        self.error: str | None = None
        self.service: Service | None = None

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
        except FeedError as exc:
            self._note(str(exc))
            return
        self._good = (ratio, time.time())
        self._note(None)

    def _fetch(self) -> float:
        text = self.http.get(self.url, error=FeedError).text
        try:
            from prometheus_client.parser import text_string_to_metric_families  # ~35 ms

            for family in text_string_to_metric_families(text):
                if family.name != "wattwise_facility_pue":
                    continue
                for sample in family.samples:
                    if sample.labels.get("window") == self.window:
                        return number(sample.value, f"{self.url} PUE", 1.0, MAX_PUE)
        except ValueError as exc:  # the parser's word for a page that is not exposition format
            raise FeedError(f"{self.url} is not Prometheus text format: {exc}") from None
        except BadNumber as exc:
            raise FeedError(f"{exc}: not used") from None
        raise FeedError(f"{self.url} has no valid PUE for window {self.window}")

    def _note(self, error: str | None) -> None:
        if error != self.error:
            if error:
                log.warning("measured PUE unavailable: %s", error)
            else:
                log.info("measured PUE from %s (window %s)", self.url, self.window)
            self.error = error

    def start(self) -> None:
        """Fetches on a thread of its own, the first time at once: startup never waits."""
        self.service = Service("facility-pue", self.refresh, REFRESH_S).start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.http.close()
