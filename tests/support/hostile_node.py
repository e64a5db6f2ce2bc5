"""An in-process node for the hostile-input tests: real fixture trees (sysfs, procfs, cgroup v2),
the fake pynvml, a real SQLite ledger. Job 12 is the one a test poisons; job 13 is its neighbour,
whose accounts must keep being written whatever job 12 does."""

from __future__ import annotations

import dataclasses
import math
import sqlite3
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from tests.support.fixtures.trees import add_process, h100, make_v2, proc_stat, set_energy
from tests.support.fixtures.trees import two_socket_server as server
from wattwise.app.daemon import Agent
from wattwise.clock import SteppedClock
from wattwise.config import load_config
from wattwise.model import Snapshot

POISONED = "/system.slice/slurmstepd.scope/job_12"
NEIGHBOUR = "/system.slice/slurmstepd.scope/job_13"
POISONED_PID, NEIGHBOUR_PID = 4242, 4343


def environ(job_id: int, **extra: str) -> bytes:
    values = {
        "SLURM_JOB_ID": str(job_id),
        "SLURM_JOB_NAME": f"train{job_id}",
        "SLURM_JOB_USER": "alice",
        "SLURM_CPUS_ON_NODE": "2",
        "SLURM_JOB_GPUS": "0" if job_id == 12 else "1",
        **extra,
    }
    return b"".join(f"{k}={v}".encode() + b"\0" for k, v in values.items())


class HostileNode:
    def __init__(self, root: Path, nvml: ModuleType) -> None:
        self.root = root
        self.sysfs, self.procfs, self.cgroups = root / "sys", root / "proc", root / "cg"
        self.ledger = root / "ledger.db"
        self.nvml = nvml
        self.step = 0
        server(self.sysfs)
        proc_stat(self.procfs, user=1_000, idle=1_000)
        self.cpu_usec = {POISONED: 1_000_000, NEIGHBOUR: 1_000_000}
        make_v2(self.cgroups, self.cpu_usec)
        for cgroup, pid in ((POISONED, POISONED_PID), (NEIGHBOUR, NEIGHBOUR_PID)):
            add_process(self.procfs, pid, f"{cgroup}/step_0")
            (self.cgroups / cgroup.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
            (self.procfs / str(pid) / "environ").write_bytes(environ(int(cgroup[-2:])))
        self.gpus = [h100(0, pids=[POISONED_PID]), h100(1, pids=[NEIGHBOUR_PID])]
        nvml.configure({"gpus": self.gpus})
        self.time = SteppedClock(1_800_000_000.0)

    def poison(self, **variables: str) -> None:
        """Sets variables in job 12's environment, as its own process could."""
        (self.procfs / str(POISONED_PID) / "environ").write_bytes(environ(12, **variables))

    def start(self, **settings: Any) -> HostileNode:
        """The agent, on a clock that moves one second a tick (commits every 5 s, minutes
        close) while the test runs in milliseconds."""
        overrides = {
            "sysfs_root": self.sysfs,
            "procfs_root": self.procfs,
            "cgroup_root": self.cgroups,
            "ledger": {"path": str(self.ledger), "commit_interval_s": 1.0},
            "work": {"socket_path": str(self.root / "wattwise.sock")},
            "carbon": {"providers": ["static"], "static_g_per_kwh": 400.0},
        }
        overrides.update(settings)
        self.agent = Agent(load_config(None, overrides), clock=self.time.clock)
        return self

    def advance(self) -> None:
        """Every counter moves, as on a busy node."""
        self.step += 1
        step = self.step
        for socket in (0, 1):
            set_energy(self.sysfs, f"intel-rapl:{socket}", 1_000_000 + step * 150_000)
            set_energy(self.sysfs, f"intel-rapl:{socket}:2", 200_000 + step * 20_000)
        proc_stat(self.procfs, user=1_000 + step * 150, idle=1_000 + step * 50)
        make_v2(self.cgroups, {cg: usec + step * 400_000 for cg, usec in self.cpu_usec.items()})
        for gpu in self.gpus:
            gpu["energy_mj"] += 100_000

    def ticks(self, count: int, after_advance: Callable[[], None] = lambda: None) -> list[Snapshot]:
        """`after_advance` runs between moving the counters and the tick: where a test puts back
        the bad value that moving them overwrote."""
        taken = []
        for _ in range(count):
            self.advance()
            after_advance()
            self.time.advance()
            taken.append(self.agent.tick())
        return taken

    def close(self) -> None:
        self.agent.close()

    def ledger_energy_j(self, job_key: str) -> float:
        db = sqlite3.connect(self.ledger)
        try:
            row = db.execute(
                "SELECT coalesce(sum(t.amount), 0) FROM totals t JOIN jobs j ON j.id = t.job "
                "JOIN series s ON s.id = t.series WHERE j.job_key = ? AND s.measure = 'energy'",
                (job_key,),
            ).fetchone()
        finally:
            db.close()
        return row[0]


def exported_energy_j(snapshot: Snapshot, job_key: str) -> float:
    (view,) = [v for v in snapshot.jobs if v.job_key == job_key]
    return sum(joules for *_, joules in view.totals.energy_j)


def non_finite(value: Any, path: str = "snapshot") -> list[str]:
    """Every path inside a snapshot that holds NaN or an infinity."""
    if isinstance(value, float):
        return [] if math.isfinite(value) else [f"{path} = {value}"]
    if dataclasses.is_dataclass(value):
        return [
            bad
            for f in dataclasses.fields(value)
            for bad in non_finite(getattr(value, f.name), f"{path}.{f.name}")
        ]
    if isinstance(value, (tuple, list)):
        return [bad for i, item in enumerate(value) for bad in non_finite(item, f"{path}[{i}]")]
    return []
