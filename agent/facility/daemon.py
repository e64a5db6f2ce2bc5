"""`wattwise facility`: one per site. Reads the facility meter and the IT energy together, keeps
PUE over windows, and serves it on /metrics, where node agents (carbon.pue_url) and Grafana
read it."""

from __future__ import annotations

import logging
import time
from pathlib import Path

from wattwise.config import PUE_WINDOWS_S, FacilityConfig, parse_listen
from wattwise.errors import ConfigError
from wattwise.exporters.facility import FacilityCollector
from wattwise.facility.meters import MeterError, build_meter
from wattwise.facility.pue import CATEGORIES, PueTracker
from wattwise.model import FacilitySnapshot, MeterReading, MeterState, PueWindow
from wattwise.net.listen import bind_tcp
from wattwise.net.pool import descriptor_budget
from wattwise.net.webconfig import WebConfig
from wattwise.runtime import run
from wattwise.statelog import ProblemLog

log = logging.getLogger(__name__)


class Facility:
    def __init__(self, config: FacilityConfig) -> None:
        if config.meter is None:
            raise ConfigError(
                "facility.meter is not set: configure the facility's meter (prometheus, "
                "redfish, ipmi or json) to run `wattwise facility`"
            )
        self.config = config
        self.meters = {"facility": build_meter(config.meter), "it": build_meter(config.it)}
        self.tracker = PueTracker(PUE_WINDOWS_S, config.stale_after_s)
        self._last_good: dict[str, MeterReading] = {}
        self._errors: dict[str, str | None] = {name: None for name in self.meters}
        self._problems = ProblemLog(log, "%s meter answers again")
        self.latest: FacilitySnapshot | None = None

    def close(self) -> None:
        """Nothing is held open: each meter read is a request of its own."""

    def tick(self, now_unix_s: float | None = None) -> FacilitySnapshot:
        now = time.time() if now_unix_s is None else now_unix_s
        readings: dict[str, MeterReading] = {}
        for name, meter in self.meters.items():
            try:
                readings[name] = meter.read()
            except MeterError as exc:
                self._note(name, str(exc))
                continue
            except Exception as exc:  # a meter's bug costs its reading, never the daemon
                self._note(name, f"{type(exc).__name__}: {exc}")
                continue
            self._note(name, None)
            self._last_good[name] = readings[name]
        if len(readings) == len(self.meters):
            self.tracker.observe(now, readings["facility"], readings["it"])
        stale = any(s.stale for s in self._meter_states(now))
        windows = self.tracker.windows(now)
        if stale:  # a meter silent too long: no PUE is better than a wrong one
            windows = [
                (name, PueWindow(w.window_s, w.span_s, w.facility_j, w.it_j, None, "stale meter"))
                for name, w in windows
            ]
        snapshot = FacilitySnapshot(
            self.tracker.facility_j,
            self.tracker.it_j,
            self.tracker.facility_w,
            self.tracker.it_w,
            tuple(windows),
            tuple(self._meter_states(now)),
            self.config.it_measured_at,
            CATEGORIES[self.config.it_measured_at],
        )
        self.latest = snapshot
        return snapshot

    def _meter_states(self, now: float) -> list[MeterState]:
        states = []
        for name in self.meters:
            good = self._last_good.get(name)
            age = now - good.at_unix_s if good else None
            stale = age is None or age > self.config.stale_after_s
            states.append(
                MeterState(name, self._errors[name] is None, self._errors[name], age, stale)
            )
        return states

    def _note(self, name: str, error: str | None) -> None:
        self._errors[name] = error
        if error:
            self._problems.problem(name, f"{name} meter failed: {error}")
        else:
            self._problems.clear(name)


def serve_facility(config: FacilityConfig, web_config_file: Path | None = None) -> None:
    """Runs until SIGINT or SIGTERM, on the runtime `wattwise run` uses."""
    web = WebConfig(web_config_file) if web_config_file else None
    host, port = parse_listen(config.listen)
    sock = bind_tcp(host or "0.0.0.0", port)  # before any meter is opened
    run(
        sock,
        lambda: Facility(config),
        lambda snapshot: FacilityCollector(lambda: snapshot),
        config.interval_s,
        descriptor_budget(listeners=1),
        web,
        f"facility: serving http://{config.listen}/metrics every {config.interval_s:g} s",
    )
