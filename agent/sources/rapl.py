"""CPU package, core, uncore, DRAM and platform (psys) energy from Linux powercap RAPL zones.

Zones are every directory of <sysfs-root>/class/powercap with a `name` file. Names are split as
node_exporter and procfs do: `package-1` is domain `package`, index 1; a name without a number
(`dram`, `core`) is indexed by how often it occurred before, in sorted directory order.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

from wattwise.model import RAPL, CounterKey, CounterReading, Finding, SourceReadout, SourceStatus
from wattwise.sources.sysfs import (
    CounterFileError,
    HeldFile,
    parse_uint,
    read_bytes,
    read_text,
    read_uint,
)

MMIO_PREFIX = "intel-rapl-mmio"

# core (PP0) and uncore (PP1) are parts of the package; they are exported but never summed on top
# of it. dram is a child zone in sysfs yet measures memory outside the package (Intel SDM vol. 3B,
# 15.10), so it is summed. psys covers the whole platform, package and memory included, and
# replaces both in the node total where a kernel exposes it.
SUMMED_DOMAINS = ("package", "dram")

PERMISSION_FIX = (
    "energy_uj is readable by root only since CVE-2020-8694: run the agent as root, install "
    "deploy/udev/99-wattwise-rapl.rules to give the wattwise group read access, or use "
    "deploy/systemd/wattwise.service"
)
NO_POWERCAP_FIX = (
    "load the RAPL driver (modprobe intel_rapl_msr; AMD Zen needs Linux >= 5.8); a VM or a "
    "container without /sys/class/powercap has no RAPL, and the estimate is used instead"
)


@dataclass(frozen=True, slots=True)
class RaplZone:
    path: Path
    domain: str
    index: int
    max_energy_range_uj: int | None
    in_node_total: bool
    problem: str | None  # why the zone cannot be measured at all (no max range)

    @property
    def key(self) -> CounterKey:
        return CounterKey(self.domain, str(self.index), RAPL)

    @property
    def label(self) -> str:
        return f"{self.domain}-{self.index}"


def split_zone_name(name: str, seen: dict[str, int]) -> tuple[str, int]:
    """`package-0` -> ("package", 0); `dram` -> ("dram", times dram was seen before)."""
    base, sep, number = name.rpartition("-")
    if sep and base and number.isdigit():
        domain, index = base, int(number)
    else:
        domain, index = name, seen.get(name, 0)
    seen[domain] = index + 1
    return domain, index


def discover_zones(sysfs_root: Path) -> list[RaplZone]:
    """Every measurable zone, with intel-rapl-mmio duplicates of MSR packages dropped."""
    powercap = sysfs_root / "class" / "powercap"
    try:
        entries = sorted(p for p in powercap.iterdir() if (p / "name").is_file())
    except OSError:
        return []
    msr = [p for p in entries if not p.name.startswith(MMIO_PREFIX)]
    mmio = [p for p in entries if p.name.startswith(MMIO_PREFIX)]
    zones = _zones_of(msr)
    known = {(z.domain, z.index) for z in zones}
    zones += [z for z in _zones_of(mmio) if (z.domain, z.index) not in known]
    if any(z.domain == "psys" for z in zones):
        zones = [replace(z, in_node_total=z.domain == "psys") for z in zones]
    return zones


def _zones_of(directories: list[Path]) -> list[RaplZone]:
    seen: dict[str, int] = {}
    zones = []
    for directory in directories:
        name = read_text(directory / "name")
        if not name:
            continue
        domain, index = split_zone_name(name, seen)
        problem = None
        try:
            max_uj: int | None = read_uint(directory / "max_energy_range_uj")
        except CounterFileError as exc:
            max_uj, problem = None, f"max_energy_range_uj: {exc}, so wraps cannot be corrected"
        zones.append(RaplZone(directory, domain, index, max_uj, domain in SUMMED_DOMAINS, problem))
    return zones


class RaplSource:
    name = RAPL

    def __init__(self, sysfs_root: Path) -> None:
        self.sysfs_root = sysfs_root
        self.zones = discover_zones(sysfs_root)
        # Made once, and the files kept open: each tick reads every zone.
        self._read_as = [
            (zone, zone.key, HeldFile(f"{zone.path}/energy_uj")) for zone in self.zones
        ]

    def read_zone(self, zone: RaplZone) -> CounterReading:
        return self._read(zone, zone.key, f"{zone.path}/energy_uj")

    def _read(self, zone: RaplZone, key: CounterKey, energy: HeldFile | str) -> CounterReading:
        now = time.monotonic()
        if zone.problem:
            return CounterReading(key, None, None, now, zone.in_node_total, zone.problem)
        try:
            raw = energy.read(64) if isinstance(energy, HeldFile) else read_bytes(energy, 64)
            value = parse_uint(raw)
        except CounterFileError as exc:
            error = f"energy_uj: {exc}"
            return CounterReading(key, None, None, now, zone.in_node_total, error)
        return CounterReading(key, value, zone.max_energy_range_uj, now, zone.in_node_total)

    def read(self) -> SourceReadout:
        readings = tuple(self._read(*zone) for zone in self._read_as)
        up = sum(r.raw_uj is not None for r in readings)
        detail = f"{up} of {len(readings)} zones readable" if readings else "no RAPL zones"
        return SourceReadout(counters=readings, status=(SourceStatus(RAPL, up > 0, detail),))

    def why_not_measuring_cpu(self) -> str | None:
        """None when a package or psys zone can be read now; otherwise the reason."""
        zones = [z for z in self.zones if z.domain in ("package", "psys")]
        if not zones:
            return f"no RAPL package zone under {self.sysfs_root / 'class' / 'powercap'}"
        errors = [self.read_zone(z).error for z in zones]
        if any(error is None for error in errors):
            return None
        return f"RAPL package zones unreadable ({errors[0]})"

    def probe(self) -> list[Finding]:
        powercap = self.sysfs_root / "class" / "powercap"
        if not self.zones:
            what = "no zone with a name file" if powercap.is_dir() else "directory missing"
            return [Finding(RAPL, "-", str(powercap), False, what, NO_POWERCAP_FIX)]
        findings = []
        for zone in self.zones:
            reading = self.read_zone(zone)
            max_text = f"max {zone.max_energy_range_uj} uJ" if zone.max_energy_range_uj else ""
            if reading.raw_uj is not None:
                summed = "in node total" if zone.in_node_total else "part of its parent"
                detail = f"readable, {max_text}, {summed}"
                findings.append(Finding(RAPL, zone.label, str(zone.path), True, detail))
            else:
                error = reading.error or "unreadable"
                fix = PERMISSION_FIX if "permission denied" in error else ""
                detail = f"{error}; {max_text}".rstrip("; ")
                findings.append(Finding(RAPL, zone.label, str(zone.path), False, detail, fix))
        domains = {zone.domain for zone in self.zones}
        if "package" in domains and not domains & {"dram", "psys"}:
            detail = (
                "no dram zone (AMD's RAPL has none): the rapl node total covers the CPU "
                "packages only, and memory energy is not measured"
            )
            findings.append(Finding(RAPL, "dram", str(powercap), True, detail))
        return findings

    def close(self) -> None:
        for _, _, held in self._read_as:
            held.close()
