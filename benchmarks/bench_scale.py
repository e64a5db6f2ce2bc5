"""How the tick scales with the node's cgroups: CPU time per tick (the whole tick: sources,
job discovery, attribution, ledger write) with 50 jobs beside 20,000 cgroups that hold no job,
and with more and more job cgroups, to say where a 1 s interval stops being kept.

Run with `python benchmarks/bench_scale.py` (a few minutes: it builds trees of up to 20,000
job cgroups). The GPUs are the test suite's fake pynvml.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "support" / "fakes"), str(ROOT)]

import pynvml  # noqa: E402  (the fake, first on the path)

from tests.support.fixtures.trees import h100, make_v2, proc_stat, two_socket_server  # noqa: E402
from wattwise.app.daemon import Agent  # noqa: E402
from wattwise.config import load_config  # noqa: E402
from wattwise.jobs import discovery  # noqa: E402

TICKS = 20
NOISE = 20_000
JOB_COUNTS = (50, 500, 2_000, 5_000, 20_000)


def job_cgroup(job: int) -> str:
    return f"/system.slice/slurmstepd.scope/job_{job}/step_0"


def build(root: Path, jobs: int, noise: int) -> dict:
    two_socket_server(root / "sys")
    proc_stat(root / "proc", user=1_000, idle=9_000)
    make_v2(root / "cg", {job_cgroup(j): 1_000 for j in range(jobs)})
    for j in range(jobs):  # one process per job, whose environment names it
        pid = j + 1
        (root / "cg" / job_cgroup(j).lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
        process = root / "proc" / str(pid)
        process.mkdir(parents=True, exist_ok=True)
        (process / "environ").write_text(f"SLURM_JOB_ID={j}\0SLURM_JOB_NAME=train\0")
    for n in range(noise):  # sessions and mounts: cgroups that hold no job
        unit = ("user.slice/user-1000.slice/session-{}.scope", "system.slice/run-{}.mount")
        (root / "cg" / unit[n % 2].format(n) / "inner").mkdir(parents=True)
    pynvml.configure({"gpus": [h100(i) for i in range(8)]})
    return {
        "sysfs_root": root / "sys",
        "procfs_root": root / "proc",
        "cgroup_root": root / "cg",
        "ledger": {"path": str(root / "ledger.db")},
        "work": {"enabled": False},
    }


def tick_ms(settings: dict, root: Path, jobs: int) -> float:
    agent = Agent(load_config(None, settings))
    try:
        cpu_s = 0.0
        for step in range(TICKS + 2):
            make_v2(root / "cg", {job_cgroup(j): 1_000 + step * 10_000 for j in range(jobs)})
            started = time.process_time()
            agent.tick()
            if step >= 2:  # the first ticks read every job's metadata
                cpu_s += time.process_time() - started
    finally:
        agent.close()
    return cpu_s / TICKS * 1e3


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        settings = build(Path(tmp), 50, NOISE)
        pruned = tick_ms(settings, Path(tmp), 50)
        with mock.patch.object(discovery, "may_hold_jobs", lambda name: True):
            walked = tick_ms(settings, Path(tmp), 50)
    print(
        f"[50 jobs beside {NOISE:,} cgroups that hold none] CPU per tick {pruned:.1f} ms "
        f"(descending into every cgroup, as before: {walked:.1f} ms)"
    )
    for jobs in JOB_COUNTS:
        with tempfile.TemporaryDirectory() as tmp:
            settings = build(Path(tmp), jobs, 0)
            ms = tick_ms(settings, Path(tmp), jobs)
        verdict = "fits a 1 s interval" if ms < 1000 else "OVERRUNS a 1 s interval"
        per_job_us = ms / jobs * 1e3
        print(
            f"[{jobs:,} job cgroups] CPU per tick {ms:.1f} ms ({per_job_us:.0f} us a job) {verdict}"
        )


if __name__ == "__main__":
    main()
