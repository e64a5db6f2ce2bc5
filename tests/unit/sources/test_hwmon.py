"""hwmon sensors on fixture trees shaped as the kernel lays them out
(Documentation/hwmon/sysfs-interface.rst): each sensor gets the domain of what it covers, and
nothing already measured elsewhere is summed twice."""

from __future__ import annotations

from pathlib import Path

from tests.support.fixtures.trees import grace, hwmon, two_socket_server
from wattwise.accounting import EnergyCounters
from wattwise.model import Snapshot
from wattwise.sources.hwmon import HwmonSource


def keys(source: HwmonSource) -> dict[str, bool]:
    return {f"{s.key.domain}-{s.key.device}": s.in_node_total for s in source.sensors}


def test_grace_socket_power_is_the_cpu_and_the_module_is_exported_but_never_summed(
    tmp_path: Path,
) -> None:
    grace(tmp_path)
    source = HwmonSource(tmp_path, cpu_measured=False)
    assert keys(source) == {"module-0": False, "package-0": True}
    assert source.measures_cpu == "hwmon1 (power_meter)"
    counters = EnergyCounters()
    counters.update(source.read().counters)
    (tmp_path / "class/hwmon/hwmon1/device/power1_average").write_text("260000000\n")
    domains = {d.key.domain: d for d in counters.update(source.read().counters)}
    assert domains["package"].up and domains["package"].interval_energy_j > 0
    snapshot = Snapshot(0.0, 1.0, 0.0, tuple(domains.values()), (), ())
    (total,) = snapshot.node_totals
    assert total.energy_j == domains["package"].energy_j  # the module is not added on top


def test_amd_energy_sockets_count_only_where_rapl_does_not_measure_the_cpu(tmp_path: Path) -> None:
    hwmon(
        tmp_path,
        0,
        "amd_energy",
        energy1_label="Ecore000",
        energy1_input="123456",
        energy129_label="Esocket0",
        energy129_input="987654321",
    )
    alone = HwmonSource(tmp_path, cpu_measured=False)
    assert keys(alone) == {"package-0": True}
    (reading,) = alone.read().counters
    assert reading.raw_uj == 987654321 and reading.in_node_total
    two_socket_server(tmp_path)  # RAPL measures the CPU: amd_energy would count it twice
    assert HwmonSource(tmp_path, cpu_measured=True).sensors == []


def test_gpu_drivers_are_skipped_and_an_acpi_power_meter_is_the_platform(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "amdgpu", power1_average="150000000")
    hwmon(tmp_path, 1, "power_meter", on_device=True, power1_average="1200000000")
    hwmon(tmp_path, 2, "i915_gt0", energy1_input="5")
    source = HwmonSource(tmp_path, cpu_measured=False)
    assert keys(source) == {"platform-0": False}
    assert source.measures_cpu is None  # the estimate stays: the meter is not the CPU


def test_a_garbage_or_absurd_reading_costs_that_sensor_and_its_gap_is_not_integrated(
    tmp_path: Path,
) -> None:
    grace(tmp_path)
    source = HwmonSource(tmp_path, cpu_measured=False)
    source.read()
    (tmp_path / "class/hwmon/hwmon1/device/power1_average").write_text("lots\n")
    package = {r.key.domain: r for r in source.read().counters}["package"]
    assert package.raw_uj is None and "power1_average" in package.error
    (tmp_path / "class/hwmon/hwmon1/device/power1_average").write_text(f"{10**15}\n")
    package = {r.key.domain: r for r in source.read().counters}["package"]
    assert package.raw_uj is None and "no power reading" in package.error
    (tmp_path / "class/hwmon/hwmon1/device/power1_average").write_text("250000000\n")
    before = {r.key.domain: r for r in source.read().counters}["package"].raw_uj
    after = {r.key.domain: r for r in source.read().counters}["package"].raw_uj
    assert before is not None and after is not None and after >= before


def test_two_grace_sockets_and_amd_hsmp_socket_power(tmp_path: Path) -> None:
    grace(tmp_path, sockets=2)
    assert keys(HwmonSource(tmp_path, cpu_measured=False)) == {
        "module-0": False,
        "package-0": True,
        "module-1": False,
        "package-1": True,
    }
    hsmp = tmp_path / "amd"
    hwmon(hsmp, 0, "amd_hsmp_hwmon", power1_input="180000000", power1_cap="400000000")
    assert keys(HwmonSource(hsmp, cpu_measured=False)) == {"package-0": True}
    assert HwmonSource(hsmp, cpu_measured=True).sensors == []


def test_amd_energy_and_hsmp_on_one_node_count_each_socket_once(tmp_path: Path) -> None:
    hwmon(tmp_path, 0, "amd_energy", energy129_label="Esocket0", energy129_input="5")
    hwmon(tmp_path, 1, "amd_hsmp_hwmon", power1_input="180000000")
    assert keys(HwmonSource(tmp_path, cpu_measured=False)) == {"package-0": True}
    (only,) = HwmonSource(tmp_path, cpu_measured=False).sensors
    assert only.counter
