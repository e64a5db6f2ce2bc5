"""The whole PUE chain with a real Prometheus: a real `wattwise run` on fixture trees, scraped by
Debian's prometheus; `wattwise facility` reads the IT energy through Prometheus' HTTP API and a
facility meter, and a node agent takes the measured PUE back from it."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import command, free_port, wattwise
from tests.support.fixtures.trees import make_v2, proc_stat, set_energy, two_socket_server
from tests.support.prometheus import needs_prometheus, prometheus_has, running_prometheus

pytestmark = needs_prometheus

STEP_J = 1000  # IT energy added per step, on package-0
FACILITY_RATIO = 1.5


def start(args: list[str], env: dict[str, str], url: str) -> Agent:
    process = subprocess.Popen(
        args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    return Agent(process, url, Path("/nonexistent"), Path("/nonexistent"))


def stop(agent: Agent) -> str:
    agent.process.send_signal(signal.SIGTERM)
    _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    return stderr


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[tuple[str, int]]:
    """A real Prometheus scraping a node agent's port (chosen here, started by the test)."""
    node_port = free_port()
    with running_prometheus(tmp_path, {"wattwise": node_port}) as url:
        yield url, node_port


def once_with_pue_url(
    sysfs: Path, procfs: Path, cgroups: Path, facility_port: int, window: str
) -> subprocess.CompletedProcess:
    """`wattwise once` charging carbon, taking its PUE from the facility (1.2 as fallback)."""
    roots = ["--sysfs-root", str(sysfs), "--procfs-root", str(procfs)]
    return wattwise(
        "once",
        "--interval",
        "0.2",
        *roots,
        "--cgroup-root",
        str(cgroups),
        env=subprocess_env(
            None,
            WATTWISE_JOBS__ENABLED="true",
            WATTWISE_NVML__ENABLED="false",
            WATTWISE_CARBON__PUE_URL=f"http://127.0.0.1:{facility_port}/metrics",
            WATTWISE_CARBON__PUE_WINDOW=window,
            WATTWISE_CARBON__PUE_RATIO="1.2",
        ),
    )


def test_measured_pue_from_a_real_prometheus(tmp_path: Path, prometheus: tuple[str, int]) -> None:
    prom_url, node_port = prometheus
    sysfs, cgroups, procfs = tmp_path / "sys", tmp_path / "cg", tmp_path / "proc"
    two_socket_server(sysfs)
    make_v2(cgroups, {})
    proc_stat(procfs, user=1_000, idle=1_000)
    node = start(
        command("run", "--listen", f"127.0.0.1:{node_port}", "--sysfs-root", str(sysfs)),
        subprocess_env(None, WATTWISE_INTERVAL_S="0.2", WATTWISE_NVML__ENABLED="false"),
        f"http://127.0.0.1:{node_port}/metrics",
    )
    meter = tmp_path / "facility-meter.json"
    facility_j = 7.2e9  # the meter's own lifetime counter: only its increase matters
    meter.write_text(json.dumps({"energy_j": facility_j}))
    facility_port = free_port()
    config = tmp_path / "facility.yaml"
    config.write_text(
        "facility:\n"
        "  interval_s: 0.5\n"
        f"  meter: {{kind: json, path: {meter}}}\n"
        f"  it: {{kind: prometheus, url: '{prom_url}', "
        "query: wattwise_node_total_energy_joules_total}\n"
    )
    facility = None
    try:
        deadline = time.monotonic() + DEADLINE_S
        while not prometheus_has(prom_url, "wattwise_node_total_energy_joules_total"):
            assert time.monotonic() < deadline, "prometheus never scraped the node agent"
            time.sleep(0.2)
        facility = start(
            command("facility", "--config", str(config), "--listen", f"127.0.0.1:{facility_port}"),
            subprocess_env(None),
            f"http://127.0.0.1:{facility_port}/metrics",
        )
        # A baseline pair, before any energy moves.
        facility.wait_for(
            lambda m: m.get(("wattwise_facility_pue_span_seconds", ("window", "5m")), 0) > 0
        )
        package_uj = 1_000_000
        for _ in range(3):
            package_uj += STEP_J * 1_000_000
            set_energy(sysfs, "intel-rapl:0", package_uj)
            facility_j += FACILITY_RATIO * STEP_J
            meter.write_text(json.dumps({"energy_j": facility_j}))
            time.sleep(0.3)
        m = facility.wait_for(
            lambda m: (
                m.get(("wattwise_facility_energy_joules_total", ("scope", "it"))) == 3 * STEP_J
            )
        )
        assert m[("wattwise_facility_energy_joules_total", ("scope", "facility"))] == 4500.0
        assert m[("wattwise_facility_pue", ("window", "5m"))] == pytest.approx(FACILITY_RATIO)
        assert m[("wattwise_facility_pue_valid", ("window", "24h"))] == 1
        category = ("wattwise_facility_pue_category_info", ("category", "none"))
        assert m[(*category, ("it_measured_at", "components"))] == 1
        assert m[("wattwise_facility_meter_up", ("meter", "it"))] == 1

        # A node agent charging carbon takes the measured PUE for its window.
        result = once_with_pue_url(sysfs, procfs, cgroups, facility_port, "5m")
        assert result.returncode == 0, result.stderr
        assert 'wattwise_pue_ratio{source="facility"} 1.5' in result.stdout

        # The meter goes away: its last value ages, the window stops being a PUE once stale.
        meter.unlink()
        m = facility.wait_for(
            lambda m: m[("wattwise_facility_meter_up", ("meter", "facility"))] == 0
        )
        assert m[("wattwise_facility_meter_age_seconds", ("meter", "facility"))] > 0
    finally:
        if facility is not None:
            stderr = stop(facility)
            assert "facility meter failed" in stderr and "No such file" in stderr
        stop(node)

    # Without the facility, the node agent falls back to its configured PUE, and says so.
    result = once_with_pue_url(sysfs, procfs, cgroups, facility_port, "1h")
    assert result.returncode == 0, result.stderr
    assert 'wattwise_pue_ratio{source="config"} 1.2' in result.stdout
    assert "measured PUE unavailable" in result.stderr
