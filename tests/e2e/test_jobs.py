"""Per-job energy through the real `wattwise run`: fixture sysfs, cgroup and procfs trees, a
fake GPU with a job's process on it, a real SQLite ledger, HTTP scrapes, and a SIGKILL."""

from __future__ import annotations

import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import command, free_port
from tests.support.fixtures.trees import (
    add_process,
    h100,
    make_v2,
    proc_stat,
    set_energy,
    two_socket_server,
    write_nvml_state,
)

STEP = "/system.slice/slurmstepd.scope/job_12/step_0"
CTR = "ef" * 32
DOCKER = f"/system.slice/docker-{CTR}.scope"


@dataclass
class Node:
    root: Path
    sysfs: Path
    cgroups: Path
    procfs: Path
    nvml: Path
    ledger: Path

    def start(
        self, preexec_fn: Callable[[], None] | None = None, port: int = 0, **extra_env: str
    ) -> Agent:
        port = port or free_port()
        env = subprocess_env(
            self.nvml,
            WATTWISE_INTERVAL_S="0.2",
            WATTWISE_LEDGER__COMMIT_INTERVAL_S="0.2",
            WATTWISE_JOBS__ENABLED="true",
            WATTWISE_LEDGER__PATH=str(self.ledger),
            **extra_env,
        )
        process = subprocess.Popen(
            command(
                "run",
                "--listen",
                f"127.0.0.1:{port}",
                "--sysfs-root",
                str(self.sysfs),
                "--procfs-root",
                str(self.procfs),
                "--cgroup-root",
                str(self.cgroups),
            ),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=preexec_fn,
        )
        return Agent(process, f"http://127.0.0.1:{port}/metrics", self.sysfs, self.nvml)


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(
        tmp_path,
        tmp_path / "sys",
        tmp_path / "cg",
        tmp_path / "proc",
        tmp_path / "nvml.json",
        tmp_path / "ledger.db",
    )
    two_socket_server(n.sysfs)
    make_v2(n.cgroups, {STEP: 1_000_000, DOCKER: 1_000_000})
    proc_stat(n.procfs, user=1_000, idle=1_000)
    add_process(n.procfs, 4242, f"{STEP}/user/task_0")
    (n.cgroups / STEP.lstrip("/") / "cgroup.procs").write_text("4242\n")
    (n.procfs / "4242" / "environ").write_bytes(
        b"SLURM_JOB_ID=12\0SLURM_JOB_NAME=llama\0SLURM_JOB_USER=alice\0SLURM_JOB_ACCOUNT=nlp\0"
    )
    write_nvml_state(n.nvml, [h100(0, energy_mj=1_000_000, pids=[4242]), h100(1)])
    yield n


def job_energy(m: dict, job_id: str, domain: str, state: str, source: str) -> float:
    return sum(
        v
        for k, v in m.items()
        if k[0] == "wattwise_job_energy_joules_total"
        and ("job_id", job_id) in k
        and ("domain", domain) in k
        and ("state", state) in k
        and ("source", source) in k
    )


def node_energy(m: dict, domain: str) -> float:
    return sum(
        v
        for k, v in m.items()
        if k[0] == "wattwise_node_energy_joules_total"
        and ("domain", domain) in k
        and ("source", "rapl") in k
    )


def job_carbon(m: dict, scope: str) -> dict[tuple[str, str], float]:
    """Grams per (job id, domain) of one scope, from a scrape."""
    return {
        (dict(k[1:])["job_id"], dict(k[1:])["domain"]): v
        for k, v in m.items()
        if k[0] == "wattwise_job_carbon_grams_total" and ("scope", scope) in k
    }


def charged(m: dict, domain: str) -> float:
    jobs = sum(
        v
        for k, v in m.items()
        if k[0] == "wattwise_job_energy_joules_total" and ("domain", domain) in k
    )
    rest = sum(
        v
        for k, v in m.items()
        if k[0] == "wattwise_unattributed_energy_joules_total" and ("domain", domain) in k
    )
    return jobs + rest


def test_jobs_are_charged_energy_is_conserved_and_survives_sigkill(node: Node) -> None:
    agent = node.start()
    try:
        start = agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        assert start[("wattwise_jobs", ("scheduler", "docker"))] == 1
        # Work happens in two rounds, each: 10 J per package, 1 J per DRAM, 100 J on the
        # job's GPU. A tick can fall between the CPU files and RAPL being written (CPU time
        # then meets no energy, and the energy no CPU time): two rounds make a job's share
        # zero only if both are torn so.
        for k in (1, 2):
            make_v2(node.cgroups, {STEP: 1_000_000 + 2_000_000 * k, DOCKER: 1_000_000 * (1 + k)})
            proc_stat(node.procfs, user=1_000 + 400 * k, idle=1_000 + 400 * k)
            for socket in (0, 1):
                set_energy(node.sysfs, f"intel-rapl:{socket}:2", 200_000 + 1_000_000 * k)
            gpu0 = h100(0, energy_mj=1_000_000 + 100_000 * k, pids=[4242])
            write_nvml_state(node.nvml, [gpu0, h100(1)])
            for socket in (0, 1):
                set_energy(node.sysfs, f"intel-rapl:{socket}", 1_000_000 + 10_000_000 * k)
            m = agent.wait_for(lambda m, k=k: node_energy(m, "package") == 2.0 + 20.0 * k)
        m = agent.wait_for(lambda m: job_energy(m, "12", "gpu", "active", "nvml") == 200.0)
        m = agent.wait_for(lambda m: charged(m, "package") == pytest.approx(40.0, rel=1e-9))
        # Every joule the node measured since the agent started is charged or unattributed.
        assert charged(m, "dram") == pytest.approx(4.0, rel=1e-9)
        assert job_energy(m, "12", "package", "active", "rapl") > 0
        assert job_energy(m, CTR[:12], "package", "active", "rapl") > 0
        assert charged(m, "gpu") == pytest.approx(200.0, rel=1e-9)  # GPU 1 did not move
        before_kill = job_energy(m, "12", "gpu", "active", "nvml")
        slurm_package = job_energy(m, "12", "package", "active", "rapl")
        assert m[("wattwise_ledger_up",)] == 1
        names = {dict(k[1:]).get("job_name") for k in m if k[0] == "wattwise_job_power_watts"}
        assert names == {"llama", ""}  # the docker job has no name
        owners = {
            (d["job_id"], d["user"], d["team"])
            for k in m
            if k[0] == "wattwise_job_info" and (d := dict(k[1:]))
        }
        assert owners == {("12", "alice", "nlp"), (CTR[:12], "", "")}  # no process of it to read
    finally:
        agent.process.send_signal(signal.SIGKILL)
        agent.process.wait(timeout=DEADLINE_S)

    # While the agent is down the container ends.
    for directory in sorted((node.cgroups / DOCKER.lstrip("/")).rglob("*"), reverse=True):
        directory.unlink()
    (node.cgroups / DOCKER.lstrip("/")).rmdir()

    restarted = node.start()
    try:
        m = restarted.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        # The counters continue from the ledger instead of restarting at zero.
        assert job_energy(m, "12", "gpu", "active", "nvml") == before_kill
        assert job_energy(m, "12", "package", "active", "rapl") >= slurm_package
        assert ("wattwise_jobs", ("scheduler", "docker")) not in m
        restarted.process.send_signal(signal.SIGTERM)
        restarted.process.communicate(timeout=DEADLINE_S)
    finally:
        if restarted.process.poll() is None:
            restarted.process.kill()
    db = sqlite3.connect(node.ledger)
    ended = dict(db.execute("SELECT job_key, ended_unix_s IS NOT NULL FROM jobs WHERE id != 0"))
    assert ended == {"slurm:12": 0, f"docker:{CTR[:12]}": 1}
    assert db.execute("SELECT name, user FROM jobs WHERE job_key='slurm:12'").fetchone() == (
        "llama",
        "alice",
    )
    (gpu_j,) = db.execute(
        "SELECT amount FROM totals t JOIN jobs j ON j.id = t.job JOIN series s ON s.id = t.series "
        "WHERE j.job_key = 'slurm:12' AND s.measure = 'energy' AND s.a = 'gpu'"
    ).fetchone()
    assert gpu_j == before_kill


def test_an_unreadable_ledger_is_left_alone_and_measurement_goes_on(node: Node) -> None:
    node.ledger.write_bytes(b"not a database" * 100)
    agent = node.start()
    try:
        m = agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        assert m[("wattwise_ledger_up",)] == 0
        assert node_energy(m, "package") == 2.0
    finally:
        agent.process.send_signal(signal.SIGTERM)
        _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert node.ledger.read_bytes() == b"not a database" * 100
    assert "is not an SQLite file" in stderr and "Measuring without a ledger" in stderr


def test_operational_carbon_is_energy_times_pue_times_intensity(node: Node) -> None:
    agent = node.start(
        WATTWISE_CARBON__PROVIDERS='["static"]',
        WATTWISE_CARBON__STATIC_G_PER_KWH="400",
        WATTWISE_CARBON__PUE_RATIO="1.5",
    )
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        write_nvml_state(node.nvml, [h100(0, energy_mj=1_360_000, pids=[4242]), h100(1)])
        m = agent.wait_for(lambda m: job_energy(m, "12", "gpu", "active", "nvml") == 360.0)
        text = httpx.get(agent.url, timeout=5).text
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)
    carbon = job_carbon(m, "operational")
    # 360 J of GPU work at PUE 1.5 and 400 g/kWh: 360 / 3.6e6 x 1.5 x 400 = 0.06 g.
    assert carbon[("12", "gpu")] == pytest.approx(0.06, rel=1e-9)
    jobs_g = sum(carbon.values())
    rest_j = sum(v for k, v in m.items() if k[0] == "wattwise_unattributed_energy_joules_total")
    node_g = m[("wattwise_node_carbon_grams_total", ("scope", "operational"))]
    assert node_g == pytest.approx(jobs_g + rest_j / 3.6e6 * 1.5 * 400, rel=1e-9)
    intensity = (
        "wattwise_grid_carbon_intensity_grams_per_kwh",
        ("basis", "lifecycle"),
        ("provider", "static"),
        ("signal", "average"),
        ("zone", "WORLD"),
    )
    assert m[intensity] == 400.0 and m[("wattwise_pue_ratio", ("source", "config"))] == 1.5
    if shutil.which("promtool"):
        result = subprocess.run(
            ["promtool", "check", "metrics"],
            input=text,
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_a_live_provider_feeds_the_running_agent(node: Node) -> None:
    from tests.support.providers import Script, serve

    body = {
        "data": [
            {
                "from": "2026-01-01T00:00Z",
                "to": "2099-01-01T00:00Z",
                "intensity": {"forecast": 180, "actual": 171, "index": "moderate"},
            }
        ]
    }
    gauge = (
        "wattwise_grid_carbon_intensity_grams_per_kwh",
        ("basis", "direct"),
        ("provider", "ukgrid"),
        ("signal", "average"),
        ("zone", "GB"),
    )
    with serve(Script(body=body)) as url:
        agent = node.start(
            WATTWISE_CARBON__PROVIDERS='["ukgrid", "table"]', WATTWISE_CARBON__UKGRID_URL=url
        )
        try:
            # Startup does not wait for the network: the table answers until the UK API does.
            m = agent.wait_for(lambda m: gauge in m)
        finally:
            agent.process.send_signal(signal.SIGTERM)
            agent.process.communicate(timeout=DEADLINE_S)
    assert m[gauge] == 171.0
    assert m[("wattwise_carbon_provider_up", ("provider", "ukgrid"))] == 1


def test_embodied_carbon_follows_the_hardware_each_job_holds(node: Node) -> None:
    agent = node.start()
    try:
        m = agent.wait_for(
            lambda m: (
                m.get(("wattwise_node_embodied_grams_per_second", ("state", "reserved")), 0) > 0
                and m.get(("wattwise_node_carbon_grams_total", ("scope", "embodied")), 0) > 0
            )
        )
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)
    embodied = job_carbon(m, "embodied")
    unreserved = {
        dict(k[1:])["component"]: v
        for k, v in m.items()
        if k[0] == "wattwise_node_embodied_unreserved_carbon_grams_total"
    }
    # Job 12 runs on GPU 0 every interval; GPU 1 is nobody's: the same grams, one each side.
    assert embodied[("12", "gpu")] == pytest.approx(unreserved["gpu"], rel=1e-9)
    node_g = m[("wattwise_node_carbon_grams_total", ("scope", "embodied"))]
    assert node_g == pytest.approx(sum(embodied.values()) + sum(unreserved.values()), rel=1e-9)
    rates = sum(v for k, v in m.items() if k[0] == "wattwise_node_embodied_grams_per_second")
    four_years_s = 4 * 365.25 * 86400
    assert rates == pytest.approx((1_300_000 + 2 * 164_000) / four_years_s, rel=1e-9)


def test_carbon_follows_the_intensity_when_it_changes_mid_job(node: Node) -> None:
    series = node.root / "utility.csv"

    def write_series(switch_at: float, before: float, after: float) -> None:
        # One row a second around now: the file provider is then asked every second.
        start = int(time.time()) - 60
        rows = [f"{t},{before if t < switch_at else after}" for t in range(start, start + 1200)]
        series.write_text("timestamp,grams_per_kwh\n" + "\n".join(rows) + "\n")

    def gpu_carbon(m: dict) -> float:
        return job_carbon(m, "operational").get(("12", "gpu"), 0.0)

    def intensity(m: dict) -> float | None:
        return next(
            (v for k, v in m.items() if k[0] == "wattwise_grid_carbon_intensity_grams_per_kwh"),
            None,
        )

    write_series(float("inf"), 100.0, 100.0)
    agent = node.start(
        WATTWISE_CARBON__PROVIDERS='["file", "table"]',
        WATTWISE_CARBON__FILE_PATH=str(series),
    )
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        write_nvml_state(node.nvml, [h100(0, energy_mj=1_360_000, pids=[4242]), h100(1)])
        agent.wait_for(lambda m: job_energy(m, "12", "gpu", "active", "nvml") == 360.0)
        write_series(time.time(), 100.0, 500.0)  # the utility's new half-hour is dirtier
        agent.wait_for(lambda m: intensity(m) == 500.0)
        write_nvml_state(node.nvml, [h100(0, energy_mj=2_080_000, pids=[4242]), h100(1)])
        m = agent.wait_for(lambda m: job_energy(m, "12", "gpu", "active", "nvml") == 1080.0)
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)
    # 360 J at 100 g/kWh, then 720 J at 500 g/kWh: 0.01 g + 0.1 g.
    assert gpu_carbon(m) == pytest.approx(360 / 3.6e6 * 100 + 720 / 3.6e6 * 500, rel=1e-9)
    average_times_total = (100 + 500) / 2 * 1080 / 3.6e6  # 0.09 g: not what is charged
    assert gpu_carbon(m) != pytest.approx(average_times_total)
