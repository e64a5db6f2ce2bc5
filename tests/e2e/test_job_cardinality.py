"""With 50 jobs on 8 GPUs a node serves fewer than 2,000 series."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.fixtures.trees import add_process, h100, make_v2, proc_stat, set_energy
from tests.support.fixtures.trees import two_socket_server as server
from wattwise.app.daemon import Agent
from wattwise.config import load_config
from wattwise.exporters.prometheus import SnapshotCollector

JOBS = 50


def cgroup(job: int) -> str:
    return f"/kubepods.slice/kubepods-pod{job:08x}_0000_0000_0000_000000000000.slice"


def test_fifty_jobs_on_eight_gpus_stay_under_two_thousand_series(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    server(tmp_path / "sys")
    proc_stat(tmp_path / "proc", user=1_000, idle=1_000)
    make_v2(tmp_path / "cg", {cgroup(j): 1_000 for j in range(JOBS)})
    for pid in range(1, 25):  # 3 processes of different jobs on each GPU
        add_process(tmp_path / "proc", pid, f"{cgroup(pid)}/cri-containerd-{'a' * 64}.scope")
    gpus = [h100(i, pids=[3 * i + 1, 3 * i + 2, 3 * i + 3]) for i in range(8)]
    fake_nvml.configure({"gpus": gpus})
    config = load_config(
        None,
        {
            "sysfs_root": tmp_path / "sys",
            "procfs_root": tmp_path / "proc",
            "cgroup_root": tmp_path / "cg",
            "ledger": {"path": str(tmp_path / "ledger.db")},
            "work": {"socket_path": str(tmp_path / "wattwise.sock")},
        },
    )
    agent = Agent(config)
    try:
        agent.tick()
        make_v2(tmp_path / "cg", {cgroup(j): 1_000 + 10_000 * (j + 1) for j in range(JOBS)})
        proc_stat(tmp_path / "proc", user=1_500, idle=1_500)
        set_energy(tmp_path / "sys", "intel-rapl:0", 5_000_000)
        set_energy(tmp_path / "sys", "intel-rapl:0:2", 900_000)
        for gpu in gpus:
            gpu["energy_mj"] += 50_000
        agent.tick()
        registry = CollectorRegistry()
        registry.register(SnapshotCollector(lambda: agent.latest))
        families = list(text_string_to_metric_families(generate_latest(registry).decode()))
    finally:
        agent.close()
    series = sum(len(f.samples) for f in families)
    jobs = {s.labels["job_id"] for f in families for s in f.samples if "job_id" in s.labels}
    assert len(jobs) == JOBS
    assert series < 2_000, series
