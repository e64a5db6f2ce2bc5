"""The carbon stage of the tick: the grid intensity and the PUE of this interval, each read once
a tick, and what /metrics and `probe` say about them. `NoCarbon` stands in when carbon is off."""

from __future__ import annotations

import logging
from typing import NamedTuple

from wattwise.carbon.file import FileProvider
from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import Intensity, ProviderError
from wattwise.carbon.operational import grams_per_joule
from wattwise.carbon.pue_feed import CONFIG, FacilityPue
from wattwise.carbon.table import StaticProvider, TableProvider
from wattwise.config import Config
from wattwise.model import CarbonStatus, Finding
from wattwise.service import Service

log = logging.getLogger(__name__)


class Interval(NamedTuple):
    """The carbon terms of one tick: what is charged is what is exported."""

    intensity: Intensity | None
    pue_ratio: float
    pue_source: str

    @property
    def grams_per_joule(self) -> float:
        if self.intensity is None:
            return 0.0
        return grams_per_joule(self.pue_ratio, self.intensity.grams_per_kwh)


class CarbonStage:
    def __init__(self, config: Config) -> None:
        carbon = config.carbon
        providers, self._findings = providers_of(config)
        self.pue_ratio = carbon.pue_ratio
        self.grid = GridIntensity(providers, carbon.stale_after_s)
        self.grid.start()
        self.pue_feed: FacilityPue | None = None
        if carbon.pue_url:
            self.pue_feed = FacilityPue(carbon.pue_url, carbon.pue_window, carbon.pue_ratio)
            self.pue_feed.start()

    def now(self, now_unix_s: float) -> Interval:
        # One read per tick: the intensity charged is the one exported, even if the refresher
        # swaps in a new value meanwhile.
        pue = self.pue_feed.current() if self.pue_feed else (self.pue_ratio, CONFIG)
        return Interval(self.grid.current(now_unix_s), *pue)

    def status(
        self, now_unix_s: float, interval: Interval, node_operational_g: float
    ) -> CarbonStatus | None:
        intensity = interval.intensity
        if intensity is None:
            return None
        return CarbonStatus(
            grams_per_kwh=intensity.grams_per_kwh,
            zone=intensity.zone,
            provider=intensity.provider,
            signal=intensity.signal,
            basis=intensity.basis,
            age_s=intensity.age_s(now_unix_s),  # the data's own age, not the fetch's
            pue_ratio=interval.pue_ratio,
            pue_source=interval.pue_source,
            node_operational_g=node_operational_g,
            providers_up=tuple((s.name, s.up) for s in self.grid.states()),
        )

    def services(self) -> list[Service]:
        owners = (self.grid, self.pue_feed)
        return [s for s in (getattr(o, "service", None) for o in owners) if s is not None]

    def probe(self) -> list[Finding]:
        findings = list(self._findings)
        for state in self.grid.states():
            value = state.last_good
            if value is not None:
                detail = f"{value.grams_per_kwh:g} g/kWh for {value.zone} ({value.signal})"
            else:
                detail = state.error or "no value yet"
            findings.append(Finding("carbon", state.name, "-", state.up, detail))
        if self.pue_ratio == 1.0:
            fix = "set carbon.pue_ratio to your site's PUE"
            findings.append(Finding("carbon", "pue", "-", True, "PUE 1.0: IT energy only", fix))
        return findings

    def close(self) -> None:
        self.grid.stop()
        if self.pue_feed is not None:
            self.pue_feed.stop()


class NoCarbon:
    """Carbon accounting disabled in config: no grams, no intensity on /metrics."""

    def now(self, now_unix_s: float) -> Interval:
        return Interval(None, 1.0, CONFIG)

    def status(self, *_: object) -> None:
        return None

    def services(self) -> list[Service]:
        return []

    def probe(self) -> list[Finding]:
        return [Finding("carbon", "-", "-", True, "carbon accounting disabled in config")]

    def close(self) -> None:
        pass


def providers_of(config: Config) -> tuple[list, list[Finding]]:
    """The configured chain; a provider that cannot be built (a missing key) is left out and
    becomes a probe finding, so the rest of the chain still works. The HTTP providers are
    imported only when configured."""
    carbon = config.carbon

    def secret(value) -> str:
        return value.get_secret_value() if value is not None else ""

    def ukgrid():
        from wattwise.carbon.ukgrid import UkGridProvider

        return UkGridProvider(carbon.ukgrid_url, carbon.ukgrid_region_id)

    def electricitymaps():
        from wattwise.carbon.electricitymaps import ElectricityMapsProvider

        return ElectricityMapsProvider(
            secret(carbon.electricitymaps_token),
            zone=carbon.electricitymaps_zone,
            lat_lon=carbon.electricitymaps_lat_lon,
            basis=carbon.electricitymaps_basis,
            base_url=carbon.electricitymaps_url,
        )

    def watttime():
        from wattwise.carbon.watttime import WattTimeProvider

        return WattTimeProvider(
            carbon.watttime_username or "",
            secret(carbon.watttime_password),
            carbon.watttime_region or "",
            base_url=carbon.watttime_url,
        )

    built = {
        "table": lambda: TableProvider(carbon.zone),
        "static": lambda: StaticProvider(carbon.static_g_per_kwh or 0.0, carbon.zone),
        "file": lambda: FileProvider(carbon.file_path, carbon.zone, carbon.file_signal),
        "ukgrid": ukgrid,
        "electricitymaps": electricitymaps,
        "watttime": watttime,
    }
    providers, problems = [], []
    for name in carbon.providers:
        try:
            providers.append(built[name]())
        except ProviderError as exc:
            log.error("carbon provider %s left out: %s", name, exc)
            problems.append(Finding("carbon", name, "-", False, str(exc), "set it in config"))
    if not providers:  # every configured one failed: the world average keeps carbon going
        providers.append(TableProvider("WORLD"))
    return providers, problems
