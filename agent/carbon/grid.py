"""The current grid intensity from a chain of providers, refreshed off the tick.

Each provider is asked again only when its own period has passed (5 min WattTime, 30 min UK,
hourly Electricity Maps). When it fails, its last good value is kept until its data is older
than `stale_after_s` (age from the data's own timestamp, judged when the tick asks, so a
refresher that fails or stalls cannot keep a stale value in use); then the next provider in the
chain answers. The last provider is normally the table or a static value, which never fails.
Startup asks only the providers that need no network; the others answer on the refresher's
thread. The tick only reads `current()`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, replace

from wattwise.carbon.intensity import Intensity, Provider, ProviderError, checked
from wattwise.service import Service

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
        self._lock = threading.Lock()
        self.service: Service | None = None

    def refresh(self, now_unix_s: float | None = None, local_only: bool = False) -> Intensity:
        """Asks the providers that are due, then picks the value to use. Does I/O. With
        `local_only`, only providers that read no network (table, static, file)."""
        now = time.time() if now_unix_s is None else now_unix_s
        for provider in self.providers:
            if local_only and not getattr(provider, "local", False):
                continue
            if now >= self._next_ask.get(provider.name, 0.0):
                self._ask(provider, now)
            value = self._good.get(provider.name)
            if value is not None and value.age_s(now) <= self.stale_after_s:
                break  # a fresh value from this provider: none below it is needed now
        chosen = self.current(now)
        if chosen is None:
            raise ProviderError("no carbon intensity provider has given a value yet")
        return chosen

    def _ask(self, provider: Provider, now: float) -> None:
        try:
            value = checked(provider.fetch(now))
        except Exception as exc:  # a provider's bug must not stop the others
            why = str(exc) if isinstance(exc, ProviderError) else f"{type(exc).__name__}: {exc}"
            self._note(provider.name, why)
            self._next_ask[provider.name] = now + min(provider.period_s, RETRY_S)
            return
        self._next_ask[provider.name] = now + provider.period_s
        if not getattr(provider, "local", False):
            # Whatever period an answer claims, it is current for one of the provider's own
            # periods from now at most: a date far in the future must not keep it fresh forever.
            latest_end = now + provider.period_s
            if (value.valid_until_unix_s or value.valid_at_unix_s) > latest_end:
                value = replace(value, valid_until_unix_s=latest_end)
        with self._lock:
            self._good[provider.name] = value
        self._note(provider.name, None)

    def current(self, now_unix_s: float | None = None) -> Intensity | None:
        """The value to charge now: the first provider's whose data is fresh (its age counted
        from the data's own timestamp, whatever state the refresher is in), else the newest
        anyone gave (its large age exported), else None before any answer."""
        now = time.time() if now_unix_s is None else now_unix_s
        with self._lock:
            good = dict(self._good)
        for provider in self.providers:
            value = good.get(provider.name)
            if value is not None and value.age_s(now) <= self.stale_after_s:
                return value
        return min(good.values(), key=lambda v: v.age_s(now), default=None)

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
        """Asks the local providers now (no network: startup never waits on one), then the
        rest on a thread of its own. By default as often as the finest provider's data
        changes, at most once a second and at least once a minute."""
        self._refresh_quietly(local_only=True)
        if every_s is None:
            every_s = min(max(min(p.period_s for p in self.providers), 1.0), 60.0)
        self.service = Service("carbon-intensity", self._refresh_quietly, every_s).start()

    def _refresh_quietly(self, local_only: bool = False) -> None:
        """A refresh for the background: each provider's failure is already noted and logged;
        having no value at all yet is not the refresher's failure."""
        with contextlib.suppress(ProviderError):
            self.refresh(local_only=local_only)

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
