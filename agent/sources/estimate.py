"""CPU power estimated from utilisation, for machines without a readable RAPL zone.

power = sockets x TDP x (idle_ratio + (1 - idle_ratio) x utilisation), the linear min/max model
Cloud Carbon Footprint uses. It is integrated into a synthetic counter with source="estimate"
and never mixed with measured series.
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path

import psutil

from wattwise.checks import Rejections, number
from wattwise.config import EstimateConfig
from wattwise.model import (
    ESTIMATE,
    CounterKey,
    CounterReading,
    Finding,
    SourceReadout,
    SourceStatus,
)

log = logging.getLogger(__name__)

KEY = CounterKey("package", "all", ESTIMATE)


def count_sockets(sysfs_root: Path) -> int:
    cpu_dir = sysfs_root / "devices" / "system" / "cpu"
    packages = set()
    for path in cpu_dir.glob("cpu[0-9]*/topology/physical_package_id"):
        try:
            packages.add(path.read_text().strip())
        except OSError:
            continue
    return max(len(packages), 1)


class EstimateSource:
    name = ESTIMATE

    def __init__(self, config: EstimateConfig, sysfs_root: Path, procfs_root: Path, why: str):
        psutil.PROCFS_PATH = str(procfs_root)  # psutil's documented hook for another /proc
        self.config = config
        self.sockets = count_sockets(sysfs_root)
        self.why = why
        self._energy_uj = 0.0
        self._last_monotonic_s: float | None = None
        self._bad_values = Rejections(log)
        with contextlib.suppress(Exception):  # a garbled /proc/stat is reported by read()
            psutil.cpu_percent(interval=None)  # primes psutil's busy-time baseline

    def power_w(self, utilization_ratio: float) -> float:
        idle = self.config.cpu_idle_ratio
        return self.sockets * self.config.cpu_tdp_w * (idle + (1 - idle) * utilization_ratio)

    def read(self) -> SourceReadout:
        now = time.monotonic()
        origin = f"CPU utilisation from {psutil.PROCFS_PATH}/stat"
        try:
            utilization = number(psutil.cpu_percent(interval=None), origin, 0, 100) / 100.0
            self._bad_values.accept(origin)
        except Exception as exc:  # psutil's parse of a garbled /proc/stat raises anything
            # The idle floor still burns: estimated as idle rather than left out.
            self._bad_values.reject(origin, f"{origin}: {exc}; estimated as idle")
            utilization = 0.0
        if self._last_monotonic_s is not None:
            self._energy_uj += self.power_w(utilization) * (now - self._last_monotonic_s) * 1e6
        self._last_monotonic_s = now
        reading = CounterReading(KEY, int(self._energy_uj), None, now, True)
        return SourceReadout(counters=(reading,), status=(SourceStatus(ESTIMATE, True, self.why),))

    def describe(self) -> str:
        return (
            f"{self.sockets} socket(s) x {self.config.cpu_tdp_w:g} W TDP, idle at "
            f"{self.config.cpu_idle_ratio:.0%} of TDP, scaled by CPU utilisation"
        )

    def probe(self) -> list[Finding]:
        detail = f"in use: {self.why}; {self.describe()}"
        fix = "set estimate.cpu_tdp_w to your CPU's TDP; grant RAPL access for measured figures"
        return [Finding(ESTIMATE, "cpu", "package/all", True, detail, fix)]

    def close(self) -> None:
        pass
