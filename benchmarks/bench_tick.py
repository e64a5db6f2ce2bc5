"""CPU time per tick and peak RSS of the whole tick (sources, accounting, job discovery,
attribution, ledger write), and the ledger's growth per job-day.

Node core: 2 sockets x 4 RAPL zones and 8 GPUs. Jobs: 50 job cgroups, 2,000 processes, 3
compute processes on each GPU. Every counter moves between ticks, as on a busy node; moving
them is not measured. Run with `make bench`.

The GPUs are the test suite's fake pynvml, so the NVML share is Python call overhead, not the
driver's; on real hardware each NVML call adds a driver round trip.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests" / "fakes"), str(ROOT)]

import pynvml  # noqa: E402  (the fake, first on the path)

from agent.config import load_config  # noqa: E402
from agent.daemon import Agent  # noqa: E402
from agent.ledger import JobSeen  # noqa: E402
from agent.model import JobEnergy  # noqa: E402
from exporters.exposition import Exposition  # noqa: E402
from exporters.prometheus import SnapshotCollector  # noqa: E402
from tests.fixtures.trees import (  # noqa: E402
    add_process,
    h100,
    make_v2,
    proc_stat,
    set_energy,
    two_socket_server,
)

TICKS = 1_000
SCRAPES = 300
JOBS = 50
PROCESSES = 2_000
TARGET_NODE_CPU_MS = 2.0
TARGET_JOBS_CPU_MS = 5.0
TARGET_RSS_MB = 60.0


def job_cgroup(job: int) -> str:
    return f"/system.slice/slurmstepd.scope/job_{job}/step_0"


def build(root: Path, with_jobs: bool) -> dict:
    two_socket_server(root / "sys")
    proc_stat(root / "proc", user=1_000, idle=9_000)
    gpus = [h100(i) for i in range(8)]
    if with_jobs:
        make_v2(root / "cg", {job_cgroup(j): 1_000 * j for j in range(JOBS)})
        for pid in range(1, PROCESSES + 1):
            add_process(root / "proc", pid, job_cgroup(pid % JOBS))
            environ = f"SLURM_JOB_ID={pid % JOBS}\0SLURM_JOB_NAME=train\0SLURM_JOB_USER=u\0"
            (root / "proc" / str(pid) / "environ").write_text(environ)
        for j in range(JOBS):  # each job's step holds its processes, as slurmstepd puts them
            pids = "\n".join(str(p) for p in range(1, PROCESSES + 1) if p % JOBS == j)
            (root / "cg" / job_cgroup(j).lstrip("/") / "cgroup.procs").write_text(pids + "\n")
        for i, gpu in enumerate(gpus):
            gpu["pids"] = [i * 3 + k + 1 for k in range(3)]
    return {
        "sysfs_root": root / "sys",
        "procfs_root": root / "proc",
        "cgroup_root": root / "cg",
        "jobs": {"enabled": with_jobs},
        "ledger": {"path": str(root / "ledger.db")},
        "work": {"socket_path": str(root / "wattwise.sock")},
        "gpus": gpus,
    }


def advance(root: Path, step: int, with_jobs: bool) -> None:
    """Moves the counters as a busy node would between two ticks."""
    for socket in (0, 1):
        set_energy(root / "sys", f"intel-rapl:{socket}", 1_000_000 + step * 150_000)
        set_energy(root / "sys", f"intel-rapl:{socket}:2", 200_000 + step * 20_000)
    proc_stat(root / "proc", user=1_000 + step * 150, idle=9_000 + step * 50)
    if with_jobs:
        make_v2(root / "cg", {job_cgroup(j): 1_000 * j + step * 20_000 for j in range(JOBS)})


def measure(with_jobs: bool) -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        settings = build(root, with_jobs)
        gpus = settings.pop("gpus")
        pynvml.configure({"gpus": gpus})
        agent = Agent(load_config(None, settings))
        try:
            cpu_s = 0.0
            for step in range(20 + TICKS):
                advance(root, step, with_jobs)
                for gpu in gpus:
                    gpu["energy_mj"] += 350_000
                cpu0 = time.process_time()
                agent.tick()
                if step >= 20:  # the first ticks warm up
                    cpu_s += time.process_time() - cpu0
            registry = CollectorRegistry()
            registry.register(SnapshotCollector(lambda: agent.latest))
            cpu0 = time.process_time()
            for _ in range(SCRAPES):
                body = generate_latest(registry)
            scrape_ms = (time.process_time() - cpu0) / SCRAPES * 1e3
            # What the listener serves: a snapshot rendered once, then the same bytes.
            exposition = Exposition(
                lambda: agent.latest, lambda snap: SnapshotCollector(lambda: snap)
            )
            exposition.render()
            cpu0 = time.process_time()
            for _ in range(SCRAPES):
                exposition.render()
            cached_ms = (time.process_time() - cpu0) / SCRAPES * 1e3
        finally:
            agent.close()
    series = sum(1 for line in body.decode().splitlines() if not line.startswith("#"))
    tick_ms = cpu_s / TICKS * 1e3
    label = f"{JOBS} jobs, {PROCESSES} processes" if with_jobs else "node only"
    target = TARGET_JOBS_CPU_MS if with_jobs else TARGET_NODE_CPU_MS
    verdict = "ok" if tick_ms <= target else "MISSED"
    print(
        f"[{label}] CPU per tick {tick_ms:6.3f} ms (target <= {target:g} ms) {verdict}; "
        f"scrape {scrape_ms:.3f} ms for {series} series (render of a new snapshot; "
        f"{cached_ms * 1e3:.1f} us from the per-snapshot cache)"
    )


def ledger_growth_per_job_day() -> float:
    """Bytes one job adds per day: a day of minutes, package, dram and gpu charged each."""
    from tests.book import book, record

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ledger.db"
        accounts = book(path)
        empty = path.stat().st_size
        jobs = [JobSeen(f"slurm:{j}", "slurm", "slurm", str(j)) for j in range(JOBS)]
        for minute in range(1440):
            energy = [
                JobEnergy(job.job_key, domain, source, "active", 1.0)
                for job in jobs
                for domain, source in (("package", "rapl"), ("dram", "rapl"), ("gpu", "nvml"))
            ]
            record(accounts, 1_700_000_000 + 60 * minute, jobs, energy)
        accounts.ledger.close()
        return (path.stat().st_size - empty) / JOBS


def main() -> None:
    print("2 sockets x 4 RAPL zones, 8 GPUs (fake NVML); every counter moves every tick")
    measure(with_jobs=False)
    measure(with_jobs=True)
    growth = ledger_growth_per_job_day()
    print(f"ledger growth {growth / 1e3:.0f} kB per job-day (per-minute series, 3 domains)")
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verdict = "ok" if rss_mb <= TARGET_RSS_MB else "MISSED"
    print(f"peak RSS {rss_mb:.1f} MB (target <= {TARGET_RSS_MB:g} MB) {verdict}")


if __name__ == "__main__":
    main()
