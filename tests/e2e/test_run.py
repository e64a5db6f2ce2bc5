"""The real `wattwise run` in a subprocess, scraped over HTTP while its counter files change."""

from __future__ import annotations

import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import subprocess_env
from tests.support.cli import command, free_port, wattwise
from tests.support.fixtures.trees import (
    PACKAGE_MAX_UJ,
    h100,
    set_energy,
    two_socket_server,
    write_nvml_state,
)

DEADLINE_S = 30  # generous bound so a slow CI machine never hangs the suite; not a target


@dataclass
class Agent:
    process: subprocess.Popen
    url: str
    sysfs: Path
    nvml_state: Path

    def scrape(self) -> dict[tuple, float]:
        text = httpx.get(self.url, timeout=5).text
        return {
            (s.name, *sorted(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def wait_for(self, condition: Callable[[dict[tuple, float]], bool]) -> dict[tuple, float]:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            assert self.process.poll() is None, self.process.stderr.read()
            try:
                metrics = self.scrape()
                if condition(metrics):
                    return metrics
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        raise AssertionError("condition not met before the deadline")


def energy(domain: str, device: str, source: str) -> tuple:
    return (
        "wattwise_node_energy_joules_total",
        ("device", device),
        ("domain", domain),
        ("source", source),
    )


def labelled(name: str, domain: str, device: str, source: str) -> tuple:
    return (name, ("device", device), ("domain", domain), ("source", source))


def start_agent(sysfs: Path, nvml_state: Path) -> Agent:
    port = free_port()
    process = subprocess.Popen(
        command("run", "--listen", f"127.0.0.1:{port}", "--sysfs-root", str(sysfs)),
        env=subprocess_env(nvml_state, WATTWISE_INTERVAL_S="0.2"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    return Agent(process, f"http://127.0.0.1:{port}/metrics", sysfs, nvml_state)


@pytest.fixture
def agent(tmp_path: Path) -> Iterator[Agent]:
    sysfs, state = tmp_path / "sys", tmp_path / "nvml.json"
    two_socket_server(sysfs)
    set_energy(sysfs, "intel-rapl:1", PACKAGE_MAX_UJ - 1_000_000)  # about to wrap
    write_nvml_state(state, [h100(0, energy_mj=5_000_000), h100(1, energy_mj=7_000_000)])
    running = start_agent(sysfs, state)
    yield running
    if running.process.poll() is None:
        running.process.kill()
        running.process.wait()


def test_exported_deltas_follow_the_counter_files(agent: Agent) -> None:
    first = agent.wait_for(lambda m: energy("package", "0", "rapl") in m)
    assert first[energy("package", "0", "rapl")] == 1.0
    assert first[energy("package", "1", "rapl")] == (PACKAGE_MAX_UJ - 1_000_000) / 1e6
    assert first[energy("gpu", "0", "nvml")] == 5_000.0

    set_energy(agent.sysfs, "intel-rapl:1", 500_000)  # wrapped: +1.5 J
    set_energy(agent.sysfs, "intel-rapl:0:2", 450_000)  # dram 0: +0.25 J
    write_nvml_state(agent.nvml_state, [h100(0, energy_mj=5_004_000), h100(1, energy_mj=7_000_000)])
    set_energy(agent.sysfs, "intel-rapl:0", 3_500_000)  # +2.5 J, written last: the signal

    second = agent.wait_for(lambda m: m[energy("package", "0", "rapl")] == 3.5)
    second = agent.wait_for(lambda m: m[energy("gpu", "0", "nvml")] == 5_004.0)
    assert second[energy("package", "1", "rapl")] == (PACKAGE_MAX_UJ - 1_000_000) / 1e6 + 1.5
    assert second[labelled("wattwise_energy_wraps_total", "package", "1", "rapl")] == 1
    assert second[energy("dram", "0", "rapl")] == 0.45
    assert second[energy("gpu", "1", "nvml")] == 7_000.0
    assert second[("wattwise_source_up", ("source", "rapl"))] == 1
    assert second[("wattwise_tick_duration_seconds",)] > 0


def test_bad_zone_and_lost_gpu_leave_the_rest_exported(agent: Agent) -> None:
    agent.wait_for(lambda m: energy("dram", "1", "rapl") in m)
    set_energy(agent.sysfs, "intel-rapl:1:2", "garbage")
    gpus = [h100(0, energy_mj=5_000_000), h100(1, energy_mj=7_000_000, lost=True)]
    write_nvml_state(agent.nvml_state, gpus)
    up = "wattwise_node_energy_up"
    metrics = agent.wait_for(
        lambda m: (
            m[labelled(up, "dram", "1", "rapl")] == 0 and m[labelled(up, "gpu", "1", "nvml")] == 0
        )
    )
    assert metrics[energy("dram", "1", "rapl")] == 0.2  # last good value kept
    assert metrics[energy("gpu", "1", "nvml")] == 7_000.0
    assert metrics[labelled(up, "dram", "0", "rapl")] == 1
    assert metrics[energy("package", "1", "rapl")] > 0
    gpu1 = (
        "wattwise_gpu_up",
        ("gpu", "1"),
        ("model", "NVIDIA H100 80GB HBM3"),
        ("uuid", h100(1)["uuid"]),
    )
    assert metrics[gpu1] == 0
    agent.process.send_signal(signal.SIGTERM)
    _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert "rapl dram-1 is down: energy_uj: not a non-negative 64-bit integer: 'garbage'" in stderr
    assert "nvml gpu-1 is down: energy counter: GPU is lost (NVML_ERROR_GPU_IS_LOST)" in stderr


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signals_stop_the_agent_cleanly(agent: Agent, signum: signal.Signals) -> None:
    agent.wait_for(lambda m: energy("package", "0", "rapl") in m)
    agent.process.send_signal(signum)
    _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert agent.process.returncode == 0, stderr
    assert f"received {signum.name}, stopping" in stderr
    assert stderr.rstrip().endswith("stopped")
    assert "Traceback" not in stderr


def test_without_rapl_or_gpu_metrics_are_served_on_the_labelled_estimate(tmp_path: Path) -> None:
    state = tmp_path / "nvml.json"
    write_nvml_state(state, [], init_error=12)  # no driver
    bare = start_agent(tmp_path, state)
    process = bare.process
    try:
        metrics = bare.wait_for(
            lambda m: (
                m.get(labelled("wattwise_node_power_watts", "package", "all", "estimate"))
                is not None
            )
        )
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=DEADLINE_S)
    assert metrics[("wattwise_source_up", ("source", "estimate"))] == 1
    assert metrics[("wattwise_source_up", ("source", "rapl"))] == 0
    assert metrics[("wattwise_source_up", ("source", "nvml"))] == 0
    assert not any(
        key[0] == "wattwise_node_energy_joules_total" and ("source", "rapl") in key
        for key in metrics
    )
    assert "CPU energy is estimated, not measured: no RAPL package zone" in stderr


def test_health_tells_a_ticking_agent_from_a_stalled_or_absent_one(
    agent: Agent, tmp_path: Path
) -> None:
    agent.wait_for(lambda m: ("wattwise_last_tick_timestamp_seconds",) in m)
    env = subprocess_env(None)
    result = wattwise("health", "--url", agent.url, env=env)
    assert result.returncode == 0 and "healthy: last tick" in result.stdout, result.stderr
    agent.process.send_signal(signal.SIGSTOP)  # frozen: /metrics cannot answer either
    try:
        result = wattwise("health", "--url", agent.url, env=env)
    finally:
        agent.process.send_signal(signal.SIGCONT)
    assert result.returncode == 1 and "unhealthy" in result.stderr
    result = wattwise("health", "--url", agent.url, "--max-age-s", "0.000001", env=env)
    assert result.returncode == 1 and "last tick" in result.stderr and "s ago" in result.stderr
    result = wattwise("health", "--url", f"http://127.0.0.1:{free_port()}/metrics", env=env)
    assert result.returncode == 1 and "unhealthy" in result.stderr
    # A wrong path is no agent (issue 16: it once said healthy), and a negative age is refused.
    nope = agent.url.replace("/metrics", "/nope")
    result = wattwise("health", "--url", nope, env=env)
    assert result.returncode == 1 and "answered HTTP 404" in result.stderr
    result = wattwise("health", "--url", agent.url, "--max-age-s", "-1", env=env)
    assert result.returncode == 2 and "--max-age-s" in result.stderr
    # Without --url, the agent is found where its configuration has it listen (review: a
    # site that moved the port had a health check that always failed).
    port = agent.url.rsplit(":", 1)[1].split("/")[0]
    config = tmp_path / "agent.yaml"
    config.write_text(f'listen: "0.0.0.0:{port}"\n')
    result = wattwise("health", "--config", str(config), env=env)
    assert result.returncode == 0 and "healthy" in result.stdout, result.stderr
    # A configuration broken while the agent runs is said, and the default address tried:
    # the liveness probe judges the running agent, not its next start.
    config.write_text("listen: [oops\n")
    result = wattwise("health", "--config", str(config), env=env)
    assert "note: " in result.stderr and "trying 0.0.0.0:9877" in result.stderr
    config.write_text('listen: "127.0.0.1:0"\n')
    result = wattwise("health", "--config", str(config), env=env)
    assert result.returncode == 2 and "give --url" in result.stderr
