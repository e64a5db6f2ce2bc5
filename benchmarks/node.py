"""A busy GPU node on disk for the benchmarks: 2 sockets x 4 RAPL zones, 8 GPUs (the test
suite's fake pynvml, so NVML costs Python call overhead, not a driver round trip), Slurm job
cgroups (v2) holding their processes, and counters that move between ticks as on a busy node.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
FAKES = ROOT / "tests" / "support" / "fakes"
sys.path[:0] = [str(FAKES), str(ROOT)]

from tests.support.fixtures.trees import (  # noqa: E402
    add_process,
    h100,
    make_v2,
    proc_stat,
    set_energy,
    two_socket_server,
    write_nvml_state,
)

SHIPPED_CONFIG = ROOT / "config" / "wattwise.yaml"
# sysfs, procfs and cgroupfs live in memory: the fixture trees do too (tmpfs) where the machine
# has one, so that writing the counters costs no disk writeback the agent would then compete
# with. The ledger is on disk, as the agent's is.
IN_MEMORY = Path("/dev/shm") if Path("/dev/shm").is_dir() else None
GPUS = 8
PROCESSES_ON_EACH_GPU = 3


def job_cgroup(job: int) -> str:
    return f"/system.slice/slurmstepd.scope/job_{job}/step_0"


class BenchNode:
    """The node's trees under `root`; `advance(seconds)` moves every counter as `seconds` of
    work would: both packages at 150 W, each job at one CPU, each GPU at 350 W. Its jobs are
    Slurm jobs `first_id` to `first_id + jobs - 1`; `churn()` replaces them all with new ones."""

    def __init__(self, root: Path, jobs: int, processes: int, first_id: int = 0) -> None:
        self.root, self.jobs, self.processes = root, jobs, processes
        self.sys, self.proc, self.cg = root / "sys", root / "proc", root / "cg"
        self.gpus: list[dict[str, Any]] = [h100(i) for i in range(GPUS)]
        self.elapsed_s = 0.0
        self.ids = list(range(first_id, first_id + jobs))
        self.pid_base = 0
        self._cpu_stats: list[Path] = []
        self._parents = [
            self.cg / "system.slice" / "cpu.stat",
            self.cg / "system.slice" / "slurmstepd.scope" / "cpu.stat",
        ]

    def build(self) -> None:
        two_socket_server(self.sys)
        proc_stat(self.proc, user=1_000, idle=9_000)
        make_v2(self.cg, {job_cgroup(job): 1_000 for job in self.ids})
        if self.jobs == 0:
            for pid in range(1, self.processes + 1):
                add_process(self.proc, pid, "/user.slice/user-1000.slice/session-1.scope")
        self._processes_join(0)
        self.write_nvml_state()

    def churn(self) -> None:
        """Every job ends and a new one (a new Slurm job id, new processes) takes its place."""
        step = self.cg / "system.slice" / "slurmstepd.scope"
        fresh = [job + self.jobs for job in self.ids]
        for old, new in zip(self.ids, fresh, strict=True):
            os.rename(step / f"job_{old}", step / f"job_{new}")
        self.ids = fresh
        self._processes_join(self.pid_base + self.processes)
        self.write_nvml_state()

    def _processes_join(self, pid_base: int) -> None:
        """The jobs' processes, numbered from pid_base + 1: each one's cgroup and environment
        name its job, its job's step lists it, and the first three of each GPU's run on it."""
        if self.jobs == 0:
            return
        held: dict[int, list[str]] = {}
        for n in range(1, self.processes + 1):
            pid, job = pid_base + n, self.ids[n % self.jobs]
            if pid_base and (self.proc / str(pid - self.processes)).exists():
                os.rename(self.proc / str(pid - self.processes), self.proc / str(pid))
            add_process(self.proc, pid, job_cgroup(job))
            environ = f"SLURM_JOB_ID={job}\0SLURM_JOB_NAME=train\0SLURM_JOB_USER=u\0"
            (self.proc / str(pid) / "environ").write_text(environ)
            held.setdefault(job, []).append(str(pid))
        for job, pids in held.items():
            procs = self.cg / job_cgroup(job).lstrip("/") / "cgroup.procs"
            procs.write_text("\n".join(pids) + "\n")
        self.pid_base = pid_base
        for i, gpu in enumerate(self.gpus):
            first = pid_base + i * PROCESSES_ON_EACH_GPU + 1
            gpu["pids"] = [p for p in range(first, first + PROCESSES_ON_EACH_GPU)]
            gpu["pids"] = [p for p in gpu["pids"] if p <= pid_base + self.processes]
        self._cpu_stats = [self.cg / job_cgroup(job).lstrip("/") / "cpu.stat" for job in self.ids]
        self._cpu_stats += [path.parent.parent / "cpu.stat" for path in self._cpu_stats]

    def settings(self, ledger: Path) -> dict[str, Any]:
        """Overrides on the shipped config: where the trees and the ledger are."""
        return {
            "sysfs_root": self.sys,
            "procfs_root": self.proc,
            "cgroup_root": self.cg,
            "ledger": {"path": str(ledger)},
            "work": {"socket_path": str(self.root / "wattwise.sock")},
        }

    def environment(self, ledger: Path) -> dict[str, str]:
        """The same, for `wattwise run` in a subprocess."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWISE_")}
        env["PYTHONPATH"] = os.pathsep.join([str(FAKES), str(ROOT)])
        env["FAKE_PYNVML_STATE"] = str(self.nvml_state)
        env["WATTWISE_LEDGER__PATH"] = str(ledger)
        env["WATTWISE_WORK__SOCKET_PATH"] = str(self.root / "wattwise.sock")
        return env

    @property
    def nvml_state(self) -> Path:
        return self.root / "nvml.json"

    def write_nvml_state(self) -> None:
        write_nvml_state(self.nvml_state, self.gpus)

    def advance(self, seconds: float) -> None:
        self.elapsed_s += seconds
        t = self.elapsed_s
        for socket in (0, 1):
            set_energy(self.sys, f"intel-rapl:{socket}", int(1e6 + t * 150e6) % 262_143_328_850)
            set_energy(self.sys, f"intel-rapl:{socket}:2", int(2e5 + t * 20e6) % 65_712_999_613)
        # 64 CPUs' worth of jiffies (USER_HZ 100): one CPU per job busy, the rest idle.
        busy = min(self.jobs, 64)
        proc_stat(
            self.proc, user=1_000 + int(t * 100 * busy), idle=9_000 + int(t * 100 * (64 - busy))
        )
        job_usec = 1_000 + int(t * 1e6)
        line = f"usage_usec {job_usec}\nuser_usec {job_usec}\nsystem_usec 0\n".encode()
        for path in self._cpu_stats:
            _rewrite(path, line)
        total = f"usage_usec {job_usec * max(self.jobs, 1)}\n".encode()
        for path in self._parents if self.jobs else ():
            _rewrite(path, total)
        for gpu in self.gpus:
            gpu["energy_mj"] += int(seconds * 350_000)


def _rewrite(path: Path, content: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, content)
    finally:
        os.close(fd)
