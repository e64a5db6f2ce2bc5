"""A PyTorch load for hardware validation: bf16 matrix products for SECONDS, busy DUTY of each
100 ms, reporting its work to the agent (the client drops the report if the agent is down).
Once a second it logs its products so far: its rate alone and beside another load gives the
share of GPU time it got.

Usage: python3 torch_load.py NAME SECONDS SIZE DUTY UNIT EVENTS.jsonl
"""

from __future__ import annotations

import json
import os
import sys
import time

import torch

from wattwise.work.client import WorkReportError, report_work


def main() -> None:
    name, seconds, size, duty, unit, events = sys.argv[1:7]
    seconds_f, size_i, duty_f = float(seconds), int(size), float(duty)
    a = torch.randn(size_i, size_i, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(size_i, size_i, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    log = open(events, "a")  # noqa: SIM115 - one line per phase, appended by both loads
    log.write(
        json.dumps({"load": name, "pid": os.getpid(), "event": "busy_start", "unix_s": time.time()})
        + "\n"
    )
    log.flush()
    products = 0
    end = time.monotonic() + seconds_f
    next_mark = time.monotonic() + 1.0
    while (now := time.monotonic()) < end:
        if now >= next_mark:  # the rate per second shows the GPU time-share this load got
            next_mark += 1.0
            log.write(
                json.dumps(
                    {"load": name, "event": "mark", "unix_s": time.time(), "products": products}
                )
                + "\n"
            )
            log.flush()
        busy_until = now + 0.1 * duty_f
        while time.monotonic() < busy_until:
            for _ in range(4):
                a @ b
            torch.cuda.synchronize()
            products += 4
        try:
            if unit != "-":  # "-": no reports, for the agent's cost without the work API
                report_work(
                    unit, add=4, socket_path=os.environ["WATTWISE_WORK__SOCKET_PATH"], timeout_s=0.5
                )
        except WorkReportError as exc:
            print(f"work report dropped: {exc}", file=sys.stderr)
        idle = now + 0.1 - time.monotonic()
        if idle > 0:
            time.sleep(idle)
    log.write(
        json.dumps(
            {
                "load": name,
                "pid": os.getpid(),
                "event": "busy_end",
                "unix_s": time.time(),
                "products": products,
                "tflop": products * 2 * size_i**3 / 1e12,
            }
        )
        + "\n"
    )


if __name__ == "__main__":
    main()
