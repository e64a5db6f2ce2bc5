"""Issue 15: the fleet's report from Prometheus equals the sum of the nodes' ledgers. Three real
`wattwise run` agents as three nodes (their own fixture trees and ledgers), one Slurm job
spanning two of them, a node without RAPL whose CPU energy is estimated, one agent restarted
in the middle, and a real Prometheus scraping all three with a `cluster` label."""

from __future__ import annotations

import contextlib
import json
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_jobs import STEP, Node
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import wattwise
from tests.support.fixtures.trees import (
    add_process,
    h100,
    make_v2,
    proc_stat,
    set_energy,
    two_socket_server,
    write_nvml_state,
)
from tests.support.prometheus import (
    needs_prometheus,
    needs_victoriametrics,
    query,
    relabel,
    running_prometheus,
    running_victoriametrics,
    wait_until_prometheus_has,
)

pytestmark = needs_prometheus

JOBS = {  # node -> (Slurm job id, user, account)
    "a": ("12", "alice", "nlp"),
    "b": ("12", "alice", "nlp"),  # job 12 spans nodes a and b
    "c": ("13", "bob", "cv"),  # node c has no RAPL: its CPU energy is estimated
}


def make_node(root: Path, name: str) -> Node:
    node = Node(root, root / "sys", root / "cg", root / "proc", root / "nvml.json", root / "l.db")
    if name != "c":
        two_socket_server(node.sysfs)
    else:
        node.sysfs.mkdir(parents=True)
    job_id, user, account = JOBS[name]
    step = STEP.replace("job_12", f"job_{job_id}")
    make_v2(node.cgroups, {step: 1_000_000})
    proc_stat(node.procfs, user=1_000, idle=1_000)
    add_process(node.procfs, 4242, f"{step}/user/task_0")
    (node.cgroups / step.lstrip("/") / "cgroup.procs").write_text("4242\n")
    (node.procfs / "4242" / "environ").write_bytes(
        f"SLURM_JOB_ID={job_id}\0SLURM_JOB_NAME=train\0SLURM_JOB_USER={user}\0"
        f"SLURM_JOB_ACCOUNT={account}\0".encode()
    )
    write_nvml_state(node.nvml, [h100(0, energy_mj=1_000_000, pids=[4242])])
    return node


class Busy:
    """Moves every node's counters as a busy node would, until stopped."""

    def __init__(self, nodes: dict[str, Node]) -> None:
        self.nodes, self.step = nodes, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.step += 1
            for name, node in self.nodes.items():
                step = STEP.replace("job_12", f"job_{JOBS[name][0]}")
                if name != "c":
                    for zone in ("intel-rapl:0", "intel-rapl:1"):
                        set_energy(node.sysfs, zone, 1_000_000 + self.step * 20_000_000)
                gpu = h100(0, energy_mj=1_000_000 + self.step * 60_000, pids=[4242])
                write_nvml_state(node.nvml, [gpu])
                make_v2(node.cgroups, {step: 1_000_000 + self.step * 150_000})
                proc_stat(node.procfs, user=1_000 + self.step * 20, idle=1_000 + self.step * 20)

    def __enter__(self) -> Busy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def start(node: Node, port: int = 0) -> Agent:
    env = {"WATTWISE_LEDGER__CLUSTER": "east", "WATTWISE_LEDGER__NODE": node.root.name}
    agent = node.start(port=port, **env)
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert agent.process.poll() is None, agent.process.stderr.read()
        try:
            if "wattwise_last_tick_timestamp_seconds" in httpx.get(agent.url, timeout=2).text:
                return agent
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, "the agent never served /metrics"
        time.sleep(0.1)


def stop(agent: Agent) -> None:
    agent.process.send_signal(signal.SIGTERM)
    agent.process.wait(timeout=DEADLINE_S)


def port_of(agent: Agent) -> int:
    return int(agent.url.rsplit(":", 1)[1].split("/")[0])


def scraped_total(agents: Iterator[Agent]) -> float:
    total = 0.0
    for agent in agents:
        for line in httpx.get(agent.url, timeout=5).text.splitlines():
            if line.startswith("wattwise_job_energy_joules_total{"):
                total += float(line.rsplit(" ", 1)[1])
    return total


def report(*args: str) -> dict:
    result = wattwise("report", "--format", "json", *args, env=subprocess_env(None))
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture(
    params=[
        "prometheus",
        pytest.param("victoriametrics", marks=needs_victoriametrics),
    ]
)
def fleet(request, tmp_path: Path) -> Iterator[tuple[str, dict[str, Node], float, float]]:
    """Yields the store's query URL, the nodes and a window holding all they did, once every
    counter stopped and the store holds its last value; the agents are stopped by then (their
    ledgers closed). The store is Prometheus itself, or VictoriaMetrics fed by Prometheus'
    remote_write."""
    nodes = {name: make_node(tmp_path / name, name) for name in JOBS}
    began = (time.time() // 60 - 1) * 60  # the ledger's report counts whole minutes
    agents = {name: start(node) for name, node in nodes.items()}
    targets = {f"node-{name}": port_of(agent) for name, agent in agents.items()}
    with contextlib.ExitStack() as stack:
        store, extra = None, []
        if request.param == "victoriametrics":
            store = stack.enter_context(running_victoriametrics(tmp_path))
            extra = [
                "remote_write:",
                f"  - url: {store}/api/v1/write",
                "    queue_config: {batch_send_deadline: 200ms}",
            ]
        try:
            yield from _run_fleet(tmp_path, nodes, agents, targets, began, extra, store)
        finally:
            for agent in agents.values():
                if agent.process.poll() is None:
                    agent.process.kill()


def _run_fleet(
    tmp_path: Path,
    nodes: dict[str, Node],
    agents: dict[str, Agent],
    targets: dict[str, int],
    began: float,
    extra: list[str],
    store: str | None,
) -> Iterator[tuple[str, dict[str, Node], float, float]]:
    # Scraped directly, the cluster is a target label; remote-written, Prometheus' external
    # label, as docs/fleet.md sets it (its own series then have none).
    on_targets = {} if store else {"cluster": "east"}
    external = {"cluster": "east"} if store else None
    with running_prometheus(
        tmp_path, targets, labels=on_targets, extra=extra, external_labels=external
    ) as prom:
        store = store or prom
        with Busy(nodes) as busy:
            # Node b's job counted and scraped before its restart, so that it has a series to
            # go on from.
            b = f'{ENERGY}{{instance="127.0.0.1:{targets["node-b"]}",job_id="12"}} > 100'
            wait_until_prometheus_has(prom, b, alive=agents.values())
            # A restart in the middle, as a rolled DaemonSet pod: the counters go on from the
            # ledger, under a new `pod` label (a new series to Prometheus).
            stop(agents["b"])
            relabel(tmp_path, prom, "node-b", {**on_targets, "pod": "wattwise-b-2"})
            agents["b"] = start(nodes["b"], port=targets["node-b"])
            restarted_at = busy.step
            while busy.step < restarted_at + 15:
                time.sleep(0.2)
        # Counters stopped: wait for the store to hold what the agents serve now.
        deadline = time.monotonic() + DEADLINE_S
        while True:
            served = scraped_total(iter(agents.values()))
            # One value per counter, whichever `pod` label it was scraped under.
            per_counter = f"max by (instance, job_id, domain, source, state) ({ENERGY})"
            result = query(store, f"sum(last_over_time({per_counter}[5m:1s]))")
            if result and abs(float(result[0]["value"][1]) - served) < 1e-6 and served > 0:
                break
            assert time.monotonic() < deadline, (result, served)
            time.sleep(0.3)
        until = (time.time() // 60 + 1) * 60
        for agent in agents.values():
            stop(agent)
        yield store, nodes, began, until


ENERGY = "wattwise_job_energy_joules_total"


def ledger_sums(nodes: dict[str, Node], began: float, until: float, group_by: str) -> dict:
    """Each group's energy, measured and estimated, summed over the nodes' ledgers."""
    sums: dict[str, dict[str, float]] = {}
    window = ("--since", str(began), "--until", str(until), "--group-by", group_by)
    for node in nodes.values():
        answer = report(*window, "--ledger", str(node.ledger))
        # Each ledger names the intensity its carbon was charged at (the bundled table here).
        assert any(n.startswith("carbon intensity: table zone") for n in answer["notes"])
        for row in answer["rows"]:
            entry = sums.setdefault(str(row[group_by]), {"energy_j": 0.0, "estimated_j": 0.0})
            entry["energy_j"] += row["energy_j"]
            entry["estimated_j"] += row["estimated_j"]
    return sums


def test_the_fleet_report_equals_the_sum_of_the_nodes_ledgers(fleet) -> None:
    prom, nodes, began, until = fleet
    window = ("--since", str(began), "--until", str(until), "--prometheus", prom)
    jobs = {row["job"]: row for row in report(*window, "--group-by", "job")["rows"]}
    ledgers = ledger_sums(nodes, began, until, "job")
    assert set(jobs) == set(ledgers) == {"slurm:12", "slurm:13"}
    for key, row in jobs.items():
        assert row["cluster"] == "east"
        assert row["energy_j"] == pytest.approx(ledgers[key]["energy_j"], abs=1e-3), key
        assert row["estimated_j"] == pytest.approx(ledgers[key]["estimated_j"], abs=1e-3), key
    assert jobs["slurm:12"]["nodes"] == 2 and jobs["slurm:12"]["estimated_j"] == 0
    assert jobs["slurm:13"]["estimated_j"] > 0  # node c's CPU: the estimate
    assert jobs["slurm:13"]["measured_j"] > 0  # its GPU: NVML
    teams = {row["team"]: row for row in report(*window, "--group-by", "team")["rows"]}
    assert teams["nlp"]["energy_j"] == pytest.approx(ledgers["slurm:12"]["energy_j"], abs=1e-3)
    assert teams["cv"]["estimated_j"] == pytest.approx(ledgers["slurm:13"]["estimated_j"], abs=1e-3)
    users = {row["user"]: row for row in report(*window, "--group-by", "user")["rows"]}
    assert users["alice"]["energy_j"] == pytest.approx(ledgers["slurm:12"]["energy_j"], abs=1e-3)
    assert users["bob"]["estimated_j"] == pytest.approx(
        ledgers["slurm:13"]["estimated_j"], abs=1e-3
    )
    clusters = report(*window, "--group-by", "cluster")
    (cluster,) = clusters["rows"]
    total = sum(entry["energy_j"] for entry in ledgers.values())
    assert cluster["energy_j"] == pytest.approx(total, abs=1e-3)
    assert cluster["nodes"] == 3 and cluster["jobs"] == 2
    # The intensity the carbon was charged at, as each ledger names it, here on all 3 nodes.
    assert any(
        n.startswith("carbon intensity: table zone") and n.endswith("on 3 node(s)")
        for n in clusters["notes"]
    ), clusters["notes"]
    # --per day: the days (one, or two across midnight UTC) add up to the window, per team.
    days: dict[str, float] = {}
    for row in report(*window, "--group-by", "team", "--per", "day")["rows"]:
        assert row["period"] == time.strftime("%Y-%m-%d", time.gmtime(began)) or row["period"] == (
            time.strftime("%Y-%m-%d", time.gmtime(until - 1))
        )
        days[row["team"]] = days.get(row["team"], 0.0) + row["energy_j"]
    assert days == {team: pytest.approx(row["energy_j"], abs=1e-3) for team, row in teams.items()}
    # SCI's R: an hour of job 12 is one job-hour, not one per node. Its runtime counters went
    # on after the last scrape the store holds, so they may trail the ledgers by a few seconds.
    window = ("--since", str(began), "--until", str(until), "--sci", "--group-by", "job")
    hours = [
        row["job_hours"]
        for node in nodes.values()
        for row in report(*window, "--ledger", str(node.ledger))["rows"]
        if row["job"] == "slurm:12"
    ]
    twelve = jobs["slurm:12"]
    assert len(hours) == 2 and twelve["job_hours"] == pytest.approx(max(hours), abs=10 / 3600)
    assert twelve["sci_g_per_job_hour"] == pytest.approx(twelve["carbon_g"] / twelve["job_hours"])
