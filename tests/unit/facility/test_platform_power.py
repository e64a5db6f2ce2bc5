"""Node wall power from the server's BMC, through a real `wattwise run` and a local Redfish."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

from tests.conftest import subprocess_env
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import command, free_port
from tests.support.fixtures.trees import set_energy, two_socket_server
from tests.support.providers import Script, serve
from tests.unit.facility.test_meters import POWER


def test_wall_power_and_its_ratio_to_the_measured_components(tmp_path: Path) -> None:
    sysfs = tmp_path / "sys"
    two_socket_server(sysfs)
    with serve(Script(body=POWER)) as url:
        port = free_port()
        platform = {"kind": "redfish", "url": f"{url}/redfish/v1/Chassis/1U/Power"}
        process = subprocess.Popen(
            command("run", "--listen", f"127.0.0.1:{port}", "--sysfs-root", str(sysfs)),
            env=subprocess_env(
                None,
                WATTWISE_INTERVAL_S="0.2",
                WATTWISE_NVML__ENABLED="false",
                WATTWISE_PLATFORM=json.dumps(platform),
                WATTWISE_PLATFORM_INTERVAL_S="1",
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        agent = Agent(process, f"http://127.0.0.1:{port}/metrics", sysfs, tmp_path)
        energy_uj = 1_000_000
        try:

            def moving(m: dict) -> bool:
                nonlocal energy_uj
                energy_uj += 20_000_000  # package-0 keeps drawing power between scrapes
                set_energy(sysfs, "intel-rapl:0", energy_uj)
                return ("wattwise_node_platform_to_components_ratio",) in m

            m = agent.wait_for(moving)
        finally:
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=DEADLINE_S)
    assert m[("wattwise_node_platform_watts",)] == 344.0
    components_w = sum(
        v
        for k, v in m.items()
        if k[0] == "wattwise_node_total_power_watts" and ("source", "rapl") in k
    )
    assert m[("wattwise_node_platform_to_components_ratio",)] == 344.0 / components_w
