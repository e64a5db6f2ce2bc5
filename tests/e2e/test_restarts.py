"""The real agent, killed with SIGKILL at random points (while starting, between ticks, in the
middle of a commit) and started again, over and over, while its node keeps working: no
counter it exports may ever go backwards, since Prometheus' increase() would then count the
whole value again."""

from __future__ import annotations

import math
import os
import random
import signal
import threading
import time
from pathlib import Path

import httpx

from tests.e2e.test_jobs import DOCKER, STEP, Node, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S
from tests.support.fixtures.trees import h100, write_nvml_state

# Counted since the process started, by design (README, "Counters"): they restart at zero.
PROCESS_LIFETIME = {
    "wattwise_energy_resets_total",
    "wattwise_energy_wraps_total",
    "wattwise_node_gpu_energy_by_use_joules_total",
    "wattwise_service_failures_total",
}
ROUNDS = 10


def _write(path: Path, text: str) -> None:
    """In place, one write, as a kernel counter changes (the agent keeps counter files open)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class BusyNode:
    """Moves every counter of the fixture node every 20 ms, as a node at work would."""

    def __init__(self, node: Node) -> None:  # noqa: F811
        self.node, self.step = node, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> BusyNode:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            self.step += 1
            n, s = self.node, self.step
            for cgroup in (STEP, DOCKER):
                usage = 1_000_000 + s * 10_000
                _write(n.cgroups / cgroup.lstrip("/") / "cpu.stat", f"usage_usec {usage}\n")
            _write(n.procfs / "stat", f"cpu  {1_000 + 3 * s} 0 0 {1_000 + s} 0 0 0 0 0 0\n")
            for socket in (0, 1):
                powercap = n.sysfs / "class" / "powercap"
                _write(powercap / f"intel-rapl:{socket}" / "energy_uj", f"{1_000_000 + s * 3000}\n")
                _write(powercap / f"intel-rapl:{socket}:2" / "energy_uj", f"{200_000 + s * 300}\n")
            gpus = [h100(0, energy_mj=1_000_000 + s * 50, pids=[4242]), h100(1)]
            write_nvml_state(n.nvml, gpus)


def test_no_exported_counter_goes_backwards_across_sigkill_at_random_points(
    node: Node,  # noqa: F811
) -> None:
    rng = random.Random(20261130)  # seeded: a failure replays the same kill points
    highest: dict[tuple, float] = {}
    backwards: list[str] = []
    first_gpu_j = last_gpu_j = math.nan
    with BusyNode(node):
        for round_ in range(ROUNDS):
            agent = node.start()
            try:
                if rng.random() < 0.2:  # killed while it starts: opening the ledger, first tick
                    time.sleep(rng.uniform(0.0, 0.4))
                    continue
                agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
                until = time.monotonic() + rng.uniform(0.0, 1.5)
                while time.monotonic() < until:
                    try:
                        scraped = agent.scrape()
                    except httpx.TransportError:
                        continue
                    for series, value in scraped.items():
                        if not series[0].endswith("_total") or series[0] in PROCESS_LIFETIME:
                            continue
                        if value < highest.get(series, -math.inf):
                            backwards.append(
                                f"round {round_}: {series} {highest[series]} > {value}"
                            )
                        highest[series] = max(value, highest.get(series, -math.inf))
                    gpu = [
                        v
                        for k, v in scraped.items()
                        if k[0] == "wattwise_job_energy_joules_total"
                        and ("job_id", "12") in k
                        and ("domain", "gpu") in k
                    ]
                    if gpu:
                        first_gpu_j = gpu[0] if math.isnan(first_gpu_j) else first_gpu_j
                        last_gpu_j = gpu[0]
                    time.sleep(rng.uniform(0.0, 0.05))
            finally:
                agent.process.send_signal(signal.SIGKILL)
                agent.process.wait(timeout=DEADLINE_S)
    assert backwards == []
    assert len(highest) > 20  # job, node, carbon and embodied counters were all watched
    assert last_gpu_j > first_gpu_j  # and they moved: the job's GPU energy kept growing
