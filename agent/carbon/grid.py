"""The current grid intensity from a chain of providers, refreshed off the tick.

Each provider is asked again only when its own period has passed (5 min WattTime, 30 min UK,
hourly Electricity Maps). When it fails, its last good value is kept, with its age, until it is
older than `stale_after_s`; then the next provider in the chain answers. The last provider is
normally the table or a static value, which never fails. The tick only reads `current()`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from agent.carbon.intensity import Intensity, Provider, ProviderError, checked

log = logging.getLogger(__name__)

RETRY_S = 300.0  # a failing provider is asked again after this, or its period if shorter


@dataclass(frozen=True, slots=True)
class ProviderState:
    name: str
    up: bool  # the last attempt succeeded
    error: str | None
    last_good: Intensity | None


class GridIntensity:
    def __init__(self, providers: list[Provider], stale_after_s: float = 3 * 3600) -> None:
        if not providers:
            raise ValueError("at least one carbon intensity provider is needed")
        self.providers = providers
        self.stale_after_s = stale_after_s
        self._good: dict[str, Intensity] = {}
        self._errors: dict[str, str | None] = {p.name: None for p in providers}
        self._next_ask: dict[str, float] = {}
        self._current: Intensity | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self, now_unix_s: float | None = None) -> Intensity:
        """Asks the providers that are due, then picks the value to use. Does I/O."""
        now = time.time() if now_unix_s is None else now_unix_s
        for provider in self.providers:
            if now < self._next_ask.get(provider.name, 0.0):
                if provider is self.providers[0] and self._errors[provider.name] is None:
                    break  # the preferred value is still current: nothing below is needed
                continue
            try:
                value = checked(provider.fetch(now))
            except ProviderError as exc:
                self._note(provider.name, str(exc))
                self._next_ask[provider.name] = now + min(provider.period_s, RETRY_S)
                continue
            self._next_ask[provider.name] = now + provider.period_s
            self._good[provider.name] = value
            self._note(provider.name, None)
            if provider is self.providers[0]:
                break  # the preferred provider answered: nothing below it is needed now
        chosen = self._choose(now)
        with self._lock:
            self._current = chosen
        return chosen

    def _choose(self, now: float) -> Intensity:
        for provider in self.providers:
            value = self._good.get(provider.name)
            if value is not None and now - value.fetched_at_unix_s <= self.stale_after_s:
                return value
        # Nothing fresh anywhere: the newest value anyone gave, with its (large) age exported.
        values = list(self._good.values())
        if not values:
            raise ProviderError("no carbon intensity provider has given a value yet")
        return max(values, key=lambda v: v.fetched_at_unix_s)

    def current(self) -> Intensity | None:
        with self._lock:
            return self._current

    def states(self) -> list[ProviderState]:
        return [
            ProviderState(
                p.name, self._errors[p.name] is None, self._errors[p.name], self._good.get(p.name)
            )
            for p in self.providers
        ]

    def _note(self, name: str, error: str | None) -> None:
        if error != self._errors[name]:
            if error:
                log.warning("carbon intensity from %s failed: %s", name, error)
            else:
                log.info("carbon intensity from %s is available", name)
            self._errors[name] = error

    def start(self, every_s: float | None = None) -> None:
        """Refreshes on a thread of its own; the first refresh happens before returning. By
        default as often as the finest provider's data changes, at most once a second and at
        least once a minute."""
        try:
            self.refresh()
        except ProviderError as exc:
            log.error("%s", exc)
        if every_s is None:
            every_s = min(max(min(p.period_s for p in self.providers), 1.0), 60.0)
        self._thread = threading.Thread(
            target=self._run, args=(every_s,), daemon=True, name="carbon-intensity"
        )
        self._thread.start()

    def _run(self, every_s: float) -> None:
        while not self._stop.wait(every_s):
            try:
                self.refresh()
            except ProviderError as exc:
                log.error("%s", exc)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=2)
