from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import GOLDEN
from wattwise.exporters.prometheus import SnapshotCollector
from wattwise.model import CounterKey, DomainEnergy, GpuStatus, Snapshot, SourceStatus


def domain(name: str, device: str, source: str, energy: float, power: float | None, **kw):
    defaults = dict(up=True, error=None, in_node_total=name in ("package", "dram", "gpu"))
    defaults.update(kw)
    return DomainEnergy(
        CounterKey(name, device, source), energy, power, wraps=0, resets=0, **defaults
    )


SNAPSHOT = Snapshot(
    taken_at_unix_s=1_790_000_000.0,
    interval_s=1.0,
    tick_duration_s=0.0005,
    domains=(
        domain("package", "0", "rapl", 240422.366267, 95.5),
        domain("core", "0", "rapl", 1000.0, 60.0),
        domain("dram", "0", "rapl", 500.0, 10.25),
        domain("package", "1", "rapl", 0.0, None, up=False, error="energy_uj: empty file"),
        domain("gpu", "0", "nvml", 5000.0, 350.0),
        domain("gpu", "1", "nvml_power", 20.0, None, up=False, error="GPU is lost"),
    ),
    gpus=(
        GpuStatus(
            0,
            "GPU-0",
            "NVIDIA H100 80GB HBM3",
            True,
            None,
            "nvml",
            350.0,
            700.0,
            0.87,
            4.0e10,
            8.0e10,
            55.0,
            1.98e9,
        ),
        GpuStatus(1, "GPU-1", "Tesla P100-PCIE-16GB", False, "GPU is lost", "nvml_power"),
    ),
    sources=(SourceStatus("rapl", True, "3 of 4"), SourceStatus("nvml", True, "1 of 2")),
)


def exposition(snapshot: Snapshot | None) -> str:
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    return generate_latest(registry).decode()


def samples(text: str) -> dict[tuple[str, frozenset], float]:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_exposition_values_parse_back() -> None:
    parsed = samples(exposition(SNAPSHOT))
    labels = frozenset({"domain": "package", "device": "0", "source": "rapl"}.items())
    assert parsed[("wattwise_node_energy_joules_total", labels)] == 240422.366267
    assert parsed[("wattwise_node_power_watts", labels)] == 95.5
    down = frozenset({"domain": "package", "device": "1", "source": "rapl"}.items())
    assert parsed[("wattwise_node_energy_up", down)] == 0
    assert ("wattwise_node_energy_joules_total", down) not in parsed  # never read: no value
    # package + dram only; core is inside the package.
    rapl_total = frozenset({"source": "rapl"}.items())
    assert parsed[("wattwise_node_total_energy_joules_total", rapl_total)] == 240422.366267 + 500
    assert parsed[("wattwise_node_total_power_watts", rapl_total)] == 95.5 + 10.25
    gpu = frozenset({"gpu": "0", "uuid": "GPU-0", "model": "NVIDIA H100 80GB HBM3"}.items())
    assert parsed[("wattwise_gpu_power_watts", gpu)] == 350.0
    assert parsed[("wattwise_gpu_utilization_ratio", gpu)] == 0.87
    lost = frozenset({"gpu": "1", "uuid": "GPU-1", "model": "Tesla P100-PCIE-16GB"}.items())
    assert parsed[("wattwise_gpu_up", lost)] == 0
    assert ("wattwise_gpu_power_watts", lost) not in parsed
    assert parsed[("wattwise_source_up", frozenset({"source": "rapl"}.items()))] == 1


def test_no_label_is_named_job_and_every_name_has_the_prefix() -> None:
    for family in text_string_to_metric_families(exposition(SNAPSHOT)):
        assert family.name.startswith("wattwise_")
        for sample in family.samples:
            assert "job" not in sample.labels


def test_before_the_first_tick_only_build_info_is_served() -> None:
    names = {f.name for f in text_string_to_metric_families(exposition(None))}
    assert names == {"wattwise_build_info"}


def test_golden_exposition(update_golden: bool) -> None:
    text = exposition(SNAPSHOT)
    # The build line carries versions that change with every release and interpreter.
    text = "\n".join(line for line in text.splitlines() if "wattwise_build_info{" not in line)
    golden = GOLDEN / "metrics.prom"
    if update_golden:
        golden.write_text(text + "\n")
    assert text + "\n" == golden.read_text(), "exposition changed: rerun with --update-golden"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_check_metrics(tmp_path: Path) -> None:
    result = subprocess.run(
        ["promtool", "check", "metrics"],
        input=exposition(SNAPSHOT),
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
