"""CPU and platform energy from hwmon sensors, for nodes without RAPL: amd_energy's socket
counters, AMD HSMP's socket power, NVIDIA Grace's power telemetry (GH200, GB200: four ACPI
power meters per socket, told apart by power1_oem_info, from NVIDIA's edk2 firmware tables) and
the ACPI power meter of a server's BMC.

Each sensor is given a domain by what it covers, so that no joule is counted twice
(Documentation/hwmon/sysfs-interface.rst: energyN_input in microjoules, powerN_average and
powerN_input in microwatts):

- a CPU socket's own energy or power is domain `package` and goes into the node total, unless
  RAPL already measures the CPU (then it is skipped);
- a Grace module's power (CPU + GPU + memory of the superchip) is domain `module`, exported
  but never summed: the GPU's share of it is NVML's;
- parts of a socket (Grace's CPU rail and SysIO; amd_energy's cores) are not read;
- an ACPI power meter measures the whole node at its input: domain `platform`, never summed,
  like the BMC's wall power;
- GPU drivers' sensors (amdgpu, nouveau, i915, xe) are skipped: NVML or amdsmi read GPUs.

Readings of acpi_power_meter are cached by the driver for its averaging interval (50 ms on
Grace, in milliwatt steps).

Power sensors are integrated over ticks into a counter, as NVML's polled power is.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from wattwise.model import (
    HWMON,
    CounterKey,
    CounterReading,
    Finding,
    SourceReadout,
    SourceStatus,
)
from wattwise.sources.sysfs import CounterFileError, read_text, read_uint

GPU_DRIVERS = frozenset({"amdgpu", "nouveau", "i915", "xe", "nvidia"})
# Grace's telemetry names what each sensor covers in powerN_oem_info, "<what> Power Socket N".
_GRACE = re.compile(r"^(Module|Grace|CPU|SysIO) Power Socket (\d+)$")
_GRACE_DOMAINS = {"Module": ("module", False), "Grace": ("package", True)}
_AMD_SOCKET = re.compile(r"^Esocket(\d+)$")
MAX_POWER_UW = 10**11  # 100 kW: above any node's sensor


@dataclass(slots=True)
class Sensor:
    key: CounterKey
    path: str  # energyN_input (a counter) or powerN_average / powerN_input (integrated)
    counter: bool
    in_node_total: bool
    origin: str  # hwmonN (name): what probe shows
    energy_uj: float = 0.0  # integrated, for a power sensor
    last_s: float | None = None
    driver: str = ""  # the hwmon device's name: amd_energy, amd_hsmp_hwmon, power_meter, ...


def discover(sysfs_root: Path, cpu_measured: bool) -> list[Sensor]:
    """Every sensor wattwise reads; `cpu_measured`: RAPL measures the CPU already."""
    sensors: list[Sensor] = []
    for device in sorted((sysfs_root / "class" / "hwmon").glob("hwmon*")):
        # acpi_power_meter registers its attributes, name included, on the ACPI device.
        folder = device if (device / "name").is_file() else device / "device"
        name = read_text(folder / "name") or ""
        if name in GPU_DRIVERS or name.startswith(("i915_", "xe_")):
            continue
        origin = f"{device.name} ({name})"
        if name == "power_meter":
            found = _power_meter(folder, cpu_measured, sensors)
        elif name in ("amd_energy", "zenergy"):
            found = [] if cpu_measured else _amd_energy(folder)
        elif name == "amd_hsmp_hwmon" and not cpu_measured:
            index = sum(s.key.domain == "package" for s in sensors)
            found = _power(folder, "1", CounterKey("package", str(index), HWMON), True)
        else:
            found = []
        sensors += [Sensor(*sensor, origin, driver=name) for sensor in found]
    if any(s.counter and s.key.domain == "package" for s in sensors):
        # amd_energy's counters and HSMP's power measure the same sockets: one of them only.
        sensors = [s for s in sensors if s.driver != "amd_hsmp_hwmon"]
    return sensors


def _power_meter(folder: Path, cpu_measured: bool, sensors: list[Sensor]) -> list[tuple]:
    """A Grace socket's meters name what they cover in power1_oem_info; any other ACPI power
    meter measures the whole node at its input."""
    grace = _GRACE.match(read_text(folder / "power1_oem_info") or "")
    if grace is None:
        index = sum(s.key.domain == "platform" for s in sensors)
        return _power(folder, "1", CounterKey("platform", str(index), HWMON), False)
    what, socket = grace.groups()
    if what not in _GRACE_DOMAINS:
        return []  # CPU and SysIO are parts of the Grace socket's own meter
    domain, summed = _GRACE_DOMAINS[what]
    if summed and cpu_measured:
        return []
    return _power(folder, "1", CounterKey(domain, socket, HWMON), summed)


def _amd_energy(folder: Path) -> list[tuple]:
    """The out-of-tree amd_energy (and zenergy): Esocket<N> counters, in microjoules; the
    Ecore<NNN> ones are parts of their socket."""
    found: list[tuple] = []
    for label in sorted(folder.glob("energy*_label")):
        socket = _AMD_SOCKET.match(read_text(label) or "")
        if socket is not None:
            counter = str(label).removesuffix("_label") + "_input"
            found.append((CounterKey("package", socket.group(1), HWMON), counter, True, True))
    return found


def _power(folder: Path, number: str, key: CounterKey, summed: bool) -> list[tuple]:
    for suffix in ("average", "input"):
        path = folder / f"power{number}_{suffix}"
        if path.is_file():
            return [(key, str(path), False, summed)]
    return []


class HwmonSource:
    name = HWMON

    def __init__(self, sysfs_root: Path, cpu_measured: bool) -> None:
        self.sensors = discover(sysfs_root, cpu_measured)

    @property
    def measures_cpu(self) -> str | None:
        """The sensors that measure the CPU (and so replace the estimate), if any."""
        cpu = [s.origin for s in self.sensors if s.key.domain == "package"]
        return ", ".join(sorted(set(cpu))) or None

    def read(self) -> SourceReadout:
        readings = [_reading(sensor, time.monotonic()) for sensor in self.sensors]
        up = sum(r.error is None for r in readings)
        status = SourceStatus(HWMON, up > 0, f"{up} of {len(readings)} hwmon sensors read")
        return SourceReadout(counters=tuple(readings), status=(status,) if readings else ())

    def probe(self) -> list[Finding]:
        findings = []
        for sensor in self.sensors:
            covers = {
                "package": "a CPU socket: in the node total, split among jobs",
                "module": "a Grace module (CPU + GPU + memory): exported, never summed",
                "platform": "the whole node at its input: exported, never summed",
            }[sensor.key.domain]
            item = f"{sensor.key.domain}-{sensor.key.device}"
            findings.append(Finding(HWMON, item, sensor.path, True, f"{sensor.origin}: {covers}"))
        return findings

    def close(self) -> None:
        """Nothing is held open."""


def _reading(sensor: Sensor, now: float) -> CounterReading:
    error = None
    try:
        value = read_uint(sensor.path)
        if not sensor.counter and value > MAX_POWER_UW:
            error = f"{sensor.path}: {value} uW is no power reading"
    except CounterFileError as exc:
        error = f"{sensor.path}: {exc}"
    if error is not None:
        sensor.last_s = None  # the gap is not integrated: nothing is known of it
        return CounterReading(sensor.key, None, None, now, sensor.in_node_total, error)
    if not sensor.counter:
        if sensor.last_s is not None:
            sensor.energy_uj += value * (now - sensor.last_s)  # uW x s = uJ
        sensor.last_s = now
        value = int(sensor.energy_uj)
    return CounterReading(sensor.key, value, None, now, sensor.in_node_total)
