"""What is measured on each platform (issue 14), through the real CLI: a Grace Hopper node has
no RAPL, so its CPU comes from Grace's hwmon telemetry (not the estimate), its module power is
exported but not added to the node total, and its GPU comes from NVML. An AMD node reads its
MI300X through amdsmi and says that its RAPL total has no memory in it."""

from __future__ import annotations

import json
from pathlib import Path

from tests.conftest import subprocess_env
from tests.support.cli import wattwise
from tests.support.fakes.amdsmi import mi300x
from tests.support.fixtures.trees import PACKAGE_MAX_UJ, add_zone, grace, h100, write_nvml_state


def test_a_grace_hopper_node_measures_its_cpu_through_hwmon_and_counts_nothing_twice(
    tmp_path: Path,
) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "nvml.json"
    grace(sysfs)
    write_nvml_state(state, [h100(0) | {"name": "NVIDIA GH200 480GB"}])
    env = subprocess_env(state)
    probe = wattwise("probe", "--sysfs-root", str(sysfs), env=env)
    assert probe.returncode == 0, probe.stderr
    assert "not in use: hwmon measures the CPU (hwmon1 (power_meter))" in probe.stdout
    assert "a Grace module (CPU + GPU + memory): exported, never summed" in probe.stdout
    once = wattwise("once", "--interval", "0.3", "--sysfs-root", str(sysfs), env=env)
    assert once.returncode == 0, once.stderr
    out = once.stdout
    assert 'wattwise_node_energy_up{device="0",domain="module",source="hwmon"} 1.0' in out
    assert 'wattwise_node_energy_up{device="0",domain="package",source="hwmon"} 1.0' in out
    assert 'wattwise_node_total_power_watts{source="hwmon"}' in out
    total = [line for line in out.splitlines() if line.startswith("wattwise_node_total_power")]
    hwmon_w = float(next(line for line in total if 'source="hwmon"' in line).split()[-1])
    assert 240.0 < hwmon_w < 260.0  # Grace's 250 W, not the module's 900 W on top
    assert 'source="estimate"' not in out


def test_an_amd_node_reads_its_mi300x_through_amdsmi_and_its_cpu_through_rapl(
    tmp_path: Path,
) -> None:
    sysfs, state = tmp_path / "sys", tmp_path / "amdsmi.json"
    add_zone(sysfs, "intel-rapl:0", "package-0", 1_000_000, PACKAGE_MAX_UJ)  # AMD: no dram
    state.write_text(json.dumps({"gpus": [mi300x()]}))
    env = subprocess_env(tmp_path / "nvml.json", FAKE_AMDSMI_STATE=str(state))
    write_nvml_state(tmp_path / "nvml.json", [])
    once = wattwise("once", "--interval", "0.3", "--sysfs-root", str(sysfs), env=env)
    assert once.returncode == 0, once.stderr
    assert 'wattwise_node_energy_up{device="0",domain="gpu",source="amdsmi"} 1.0' in once.stdout
    assert 'wattwise_gpu_power_watts{gpu="0",model="AMD Instinct MI300X"' in once.stdout
    assert 'wattwise_node_total_covers_info{domains="package",source="rapl"} 1.0' in once.stdout
    probe = wattwise("probe", "--sysfs-root", str(sysfs), env=env)
    assert "no dram zone (AMD's RAPL has none)" in probe.stdout
    assert "AMD Instinct MI300X, energy counter, compute partition SPX" in probe.stdout
