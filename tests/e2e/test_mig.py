"""MIG end to end (issue 14): the real agent in-process on fixture trees and the fake NVML in
MIG mode. A GPU's energy is split among its instances by slices; each instance's part goes to
the jobs with processes on it, else to the job holding it by MIG UUID, else to idle."""

from __future__ import annotations

import time
from pathlib import Path
from types import ModuleType

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from tests.support.dcgm import dcgm_page
from tests.support.fixtures.trees import add_process, h100, make_v2, proc_stat
from tests.support.fixtures.trees import two_socket_server as server
from tests.support.providers import Script, serve
from wattwise.app.daemon import Agent
from wattwise.clock import SteppedClock
from wattwise.config import load_config
from wattwise.exporters.prometheus import SnapshotCollector
from wattwise.model import Snapshot


def pod(n: int) -> tuple[str, str]:
    uid = f"{n:08x}-1a3c-4e5f-9a8b-7c6d5e4f3a2b"
    slice_ = (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{uid.replace('-', '_')}"
    )
    return uid, f"{slice_}.slice/cri-containerd-{n:064x}.scope"


def mig_uuid(gpu: int, n: int) -> str:
    return f"MIG-{gpu:08x}-{n:04x}-4000-8000-000000000000"


class MigNode:
    def __init__(self, root: Path, nvml: ModuleType, gpus: list[dict]) -> None:
        self.sysfs, self.procfs, self.cgroups = root / "sys", root / "proc", root / "cg"
        self.root, self.gpus, self.nvml = root, gpus, nvml
        server(self.sysfs)
        proc_stat(self.procfs, user=1_000, idle=1_000)
        make_v2(self.cgroups, {})
        nvml.configure({"gpus": gpus})
        self.time = SteppedClock(1_800_000_000.0)
        self.settings: dict = {}

    def add_pod(self, n: int, pid: int, visible: str = "") -> str:
        uid, cgroup = pod(n)
        make_v2(self.cgroups, {cgroup: 1_000})
        add_process(self.procfs, pid, cgroup)
        (self.cgroups / cgroup.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
        env = f"HOSTNAME=pod{n}\0NVIDIA_VISIBLE_DEVICES={visible}\0" if visible else ""
        (self.procfs / str(pid) / "environ").write_bytes(env.encode())
        return f"kubernetes:{uid}"

    def start(self) -> MigNode:
        settings = {
            **self.settings,
            "sysfs_root": self.sysfs,
            "procfs_root": self.procfs,
            "cgroup_root": self.cgroups,
            "ledger": {"enabled": False},
            "work": {"socket_path": str(self.root / "wattwise.sock")},
            "jobs": {"schedulers": ["kubernetes"]},
        }
        self.agent = Agent(load_config(None, settings), clock=self.time.clock)
        return self

    def tick(self, gpu_j: float = 700.0) -> Snapshot:
        for gpu in self.gpus:
            gpu["energy_mj"] += int(gpu_j * 1000)
        self.time.advance()
        return self.agent.tick()


def gpu_energy(snapshot: Snapshot) -> dict[tuple[str, str], float]:
    found: dict[tuple[str, str], float] = {}
    for view in snapshot.jobs:
        for domain, _, state, joules in view.totals.energy_j:
            if domain == "gpu":
                found[(view.job_key, state)] = found.get((view.job_key, state), 0.0) + joules
    for domain, _, reason, joules in snapshot.unattributed_j:
        if domain == "gpu":
            found[("unattributed", reason)] = joules
    return found


def test_a_mig_gpu_is_split_by_slices_and_each_instance_by_who_uses_or_holds_it(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    instances = [
        {"gi": 1, "uuid": mig_uuid(0, 1), "slices": 3, "memory_mb": 40_960, "pids": [5001]},
        {"gi": 5, "uuid": mig_uuid(0, 5), "slices": 2, "memory_mb": 20_480, "pids": []},
        {"gi": 9, "uuid": mig_uuid(0, 9), "slices": 1, "memory_mb": 10_240, "pids": [5003]},
    ]
    node = MigNode(tmp_path, fake_nvml, [h100(0, energy_mj=1_000_000, mig=instances)])
    using = node.add_pod(1, 5001, mig_uuid(0, 1))
    holding = node.add_pod(2, 5002, mig_uuid(0, 5))  # holds the 2g instance, runs nothing
    unclaimed = node.add_pod(3, 5003)  # runs on the 1g instance without naming it
    node.start()
    try:
        node.tick()  # the first reading: a baseline
        totals = gpu_energy(node.tick())
        (status,) = node.agent.latest.gpus
    finally:
        node.agent.close()
    assert totals == pytest.approx(
        {
            (using, "active"): 300.0,  # 3 of 7 slices
            (holding, "idle"): 200.0,  # allocated idle: 2 of 7
            (unclaimed, "active"): 100.0,
            ("unattributed", "idle"): 100.0,  # the 7th slice is in no instance
        }
    )
    assert status.mig_slices == 7
    assert [(m.gpu_instance, m.profile, len(m.processes)) for m in status.mig] == [
        (1, "3g.40gb", 1),
        (5, "2g.20gb", 0),
        (9, "1g.10gb", 1),
    ]


def test_probe_says_per_gpu_whether_mig_is_on_and_what_can_be_attributed(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    mig = [{"gi": 1, "uuid": mig_uuid(1, 1), "slices": 7, "memory_mb": 81_920, "pids": [9]}]
    node = MigNode(tmp_path, fake_nvml, [h100(0), h100(1, mig=mig)])
    node.start()
    try:
        findings = {f.item: f for f in node.agent.probe()}
    finally:
        node.agent.close()
    assert "MIG" not in findings["gpu 0"].detail
    detail = findings["gpu 1"].detail
    assert "MIG on: 1 instance(s) using 7 of 7 slices (7g.80gb (GPU instance 1))" in detail
    assert "split by slices" in detail
    # Unprivileged, the parent's process list is refused; each instance's is not.
    assert findings["processes"].ok, findings["processes"].detail


def test_eight_gpus_of_seven_instances_and_56_jobs_stay_under_2500_series(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    gpus = []
    for g in range(8):
        instances = [
            {"gi": 7 + i, "uuid": mig_uuid(g, i), "slices": 1, "memory_mb": 10_240,
             "pids": [10_000 + g * 7 + i]}
            for i in range(7)
        ]  # fmt: skip
        gpus.append(h100(g, mig=instances))
    node = MigNode(tmp_path, fake_nvml, gpus)
    jobs = [node.add_pod(n, 10_000 + n, mig_uuid(n // 7, n % 7)) for n in range(56)]
    node.start()
    try:
        node.tick()
        snapshot = node.tick()
    finally:
        node.agent.close()
    assert {v.job_key for v in snapshot.jobs} == set(jobs)
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    series = [
        line for line in generate_latest(registry).decode().splitlines() if not line.startswith("#")
    ]
    assert len(series) < 2_500, len(series)
    per_instance = [s for s in series if s.startswith("wattwise_gpu_mig_instance_slices")]
    assert len(per_instance) == 56
    assert gpu_energy(snapshot)[(jobs[0], "active")] == pytest.approx(100.0)  # 1 of 7 slices


def test_compute_instances_of_one_gpu_instance_share_its_slices(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    """A 3g GPU instance split into three compute instances, beside a 4g one: 3/7 and 4/7,
    never 13 of 7 (found by review)."""
    instances = [
        {"gi": 1, "ci": c, "uuid": mig_uuid(0, c), "slices": 3, "memory_mb": 40_960, "pids": []}
        for c in range(3)
    ] + [{"gi": 2, "uuid": mig_uuid(0, 9), "slices": 4, "memory_mb": 40_960, "pids": [5001]}]
    node = MigNode(tmp_path, fake_nvml, [h100(0, energy_mj=1_000_000, mig=instances)])
    four = node.add_pod(1, 5001)
    node.start()
    try:
        node.tick()
        totals = gpu_energy(node.tick())
        findings = {f.item: f for f in node.agent.probe()}
    finally:
        node.agent.close()
    assert totals == pytest.approx({(four, "active"): 400.0, ("unattributed", "idle"): 300.0})
    assert "using 7 of 7 slices" in findings["gpu 0"].detail


def test_with_dcgm_exporter_the_energy_above_the_idle_floor_follows_measured_activity(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    """A 3g instance fully busy, a 2g one held and idle, a 1g one half busy, read from a real
    HTTP server in dcgm-exporter's shape. The GPU drew 175 W over one interval and 700 W over
    the next: a quarter of that energy is its idle floor, split by slices; the rest by
    activity x slices."""
    instances = [
        {"gi": 1, "uuid": mig_uuid(0, 1), "slices": 3, "memory_mb": 40_960, "pids": [5001]},
        {"gi": 5, "uuid": mig_uuid(0, 5), "slices": 2, "memory_mb": 20_480, "pids": []},
        {"gi": 9, "uuid": mig_uuid(0, 9), "slices": 1, "memory_mb": 10_240, "pids": [5003]},
    ]
    gpu = h100(0, energy_mj=1_000_000, mig=instances)
    node = MigNode(tmp_path, fake_nvml, [gpu])
    busy = node.add_pod(1, 5001, mig_uuid(0, 1))
    holding = node.add_pod(2, 5002, mig_uuid(0, 5))
    half = node.add_pod(3, 5003, mig_uuid(0, 9))
    page = dcgm_page({gpu["uuid"]: {1: 1.0, 5: 0.0, 9: 0.5}})
    with serve(Script(body=page.encode())) as url:
        node.settings["nvml"] = {"dcgm_exporter_url": f"{url}/metrics"}
        node.start()
        try:
            node.tick()  # the baseline; the first read of dcgm-exporter starts
            activity = node.agent.jobs.mig_activity
            deadline = time.monotonic() + 10
            while not activity.of_gpu(gpu["uuid"]) and time.monotonic() < deadline:
                time.sleep(0.05)
            low = node.tick(gpu_j=175.0)  # a quarter of the next interval's: the floor learnt
            high = node.tick(gpu_j=700.0)
            services = {s.name: s.up for s in node.agent.latest.services}
            findings = {f.item: f for f in node.agent.probe()}
        finally:
            node.agent.close()
    before, after = gpu_energy(low), gpu_energy(high)
    totals = {k: after[k] - before.get(k, 0.0) for k in after}
    # The counter's power is over the agent's real interval: the floor is what it measured.
    (low_w,), (high_w,) = (
        [d.power_w for d in s.domains if d.key.domain == "gpu"] for s in (low, high)
    )
    floor = min(low_w, high_w) / high_w
    assert totals == pytest.approx(
        {
            (busy, "active"): 700 * (floor * 3 / 7 + (1 - floor) * 3 / 3.5),
            (holding, "idle"): 700 * floor * 2 / 7,  # its slices' part of the floor only
            (half, "active"): 700 * (floor * 1 / 7 + (1 - floor) * 0.5 / 3.5),
            ("unattributed", "idle"): 700 * floor * 1 / 7,  # the free slice's part
        }
    )
    assert 0.0 < floor < 1.0
    assert services["dcgm-exporter"] is True
    assert findings["mig activity"].ok, findings["mig activity"].detail
    assert "3 MIG GPU instance(s) measured" in findings["mig activity"].detail
