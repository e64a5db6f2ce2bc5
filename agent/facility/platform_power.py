"""The server's wall (input) power from its own BMC, over Redfish or IPMI DCMI, read on a thread
of its own every `interval_s`: a BMC answers in hundreds of milliseconds, too slow for a tick.

Exported beside the measured components, their difference is what RAPL and NVML cannot see:
fans, PSU losses, NICs, drives.
"""

from __future__ import annotations

import logging
import time

from wattwise.facility.meters import MeterError, build_meter
from wattwise.model import MeterReading
from wattwise.service import Service
from wattwise.statelog import ProblemLog

log = logging.getLogger(__name__)
PLATFORM = "node platform power"  # what the log calls it


class PlatformPower:
    def __init__(self, config, interval_s: float = 10.0) -> None:
        self.meter = build_meter(config)
        self.interval_s = interval_s
        self.latest: MeterReading | None = None
        self._previous: MeterReading | None = None
        self.error: str | None = None
        self._problems = ProblemLog(log, "%s is read again")
        self.service: Service | None = None

    def watts(self) -> float | None:
        """The latest input power; from an energy counter, the mean since the previous read."""
        latest, previous = self.latest, self._previous
        if latest is None:
            return None
        if latest.power_w is not None:
            return latest.power_w
        if latest.energy_j is not None and previous is not None and previous.energy_j is not None:
            span_s = latest.at_unix_s - previous.at_unix_s
            if span_s > 0 and latest.energy_j >= previous.energy_j:
                return (latest.energy_j - previous.energy_j) / span_s
        return None

    def age_s(self) -> float | None:
        return None if self.latest is None else time.time() - self.latest.at_unix_s

    def refresh(self) -> None:
        try:
            reading = self.meter.read()
        except MeterError as exc:
            self.error = str(exc)
            self._problems.problem(PLATFORM, f"{PLATFORM} unavailable: {exc}")
            return
        self._problems.clear(PLATFORM)
        self.error = None
        self._previous, self.latest = self.latest, reading

    def start(self) -> None:
        self.service = Service("platform-power", self.refresh, self.interval_s).start()

    def stop(self) -> None:
        if self.service is not None:
            self.service.stop()
