"""CPU time per tick and peak RSS: 2 sockets x 4 RAPL zones (fixture sysfs) and 8 GPUs.

Run with `make bench`. The GPUs are the test suite's fake pynvml, so the NVML share of the figure
is Python call overhead, not the driver's; on real hardware each NVML call adds its ioctl.
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
from exporters.prometheus import SnapshotCollector  # noqa: E402
from tests.fixtures.trees import h100, two_socket_server  # noqa: E402

TICKS = 2_000
SCRAPES = 500
TARGET_CPU_MS = 2.0
TARGET_RSS_MB = 60.0


def main() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    with tempfile.TemporaryDirectory() as tmp:
        sysfs = Path(tmp)
        two_socket_server(sysfs)
        pynvml.configure({"gpus": [h100(i) for i in range(8)]})
        agent = Agent(load_config(None, {"sysfs_root": sysfs}))
        try:
            for _ in range(20):  # warm up
                agent.tick()
            cpu0, wall0 = time.process_time(), time.perf_counter()
            for _ in range(TICKS):
                agent.tick()
            cpu_ms = (time.process_time() - cpu0) / TICKS * 1e3
            wall_ms = (time.perf_counter() - wall0) / TICKS * 1e3

            registry = CollectorRegistry()
            registry.register(SnapshotCollector(lambda: agent.latest))
            cpu0 = time.process_time()
            for _ in range(SCRAPES):
                body = generate_latest(registry)
            scrape_ms = (time.process_time() - cpu0) / SCRAPES * 1e3
            series = sum(1 for line in body.decode().splitlines() if not line.startswith("#"))
        finally:
            agent.close()
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    counters = len(agent.latest.domains) if agent.latest else 0

    print(f"setup: 2 sockets x 4 RAPL zones, 8 GPUs (fake NVML), {counters} energy counters")
    print(
        f"CPU per tick     {cpu_ms:7.3f} ms  (target <= {TARGET_CPU_MS} ms)  "
        f"{'ok' if cpu_ms <= TARGET_CPU_MS else 'MISSED'}"
    )
    print(f"wall per tick    {wall_ms:7.3f} ms")
    print(f"CPU per scrape   {scrape_ms:7.3f} ms  ({series} series)")
    print(
        f"peak RSS         {rss_mb:7.1f} MB  (target <= {TARGET_RSS_MB:g} MB)  "
        f"{'ok' if rss_mb <= TARGET_RSS_MB else 'MISSED'}"
    )
    print(f"CPU share at a 1 s interval: {cpu_ms / 10:.3f} % of one core")


if __name__ == "__main__":
    main()
