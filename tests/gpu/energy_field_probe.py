"""Is the energy counter cheaper through nvmlDeviceGetFieldValues (NVML_FI_DEV_TOTAL_ENERGY_
CONSUMPTION, field 83) than through nvmlDeviceGetTotalEnergyConsumption, and as fresh?
Also what the power fields answer per scope (GPU, module, memory). Prints JSON lines.

Usage: python3 energy_field_probe.py LABEL
"""

from __future__ import annotations

import itertools
import json
import sys
import time

import pynvml

ENERGY_FIELD = 83
POWER_AVERAGE, POWER_INSTANT = 185, 186
SCOPES = {"gpu": 0, "module": 1, "memory": 2}


def field(handle, field_id: int, scope: int | None = None):
    ask = [(field_id, scope)] if scope is not None else [field_id]
    (v,) = pynvml.nvmlDeviceGetFieldValues(handle, ask)
    if v.nvmlReturn != 0:
        return {"error": v.nvmlReturn}
    value = v.value.ullVal if field_id == ENERGY_FIELD else v.value.uiVal
    return {"value": value, "timestamp_us": v.timestamp, "latency_us": v.latencyUsec}


def cost(fn, repeat: int = 200) -> dict:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(repeat):
        fn()
    return {
        "wall_us": round((time.perf_counter() - wall) / repeat * 1e6, 2),
        "cpu_us": round((time.process_time() - cpu) / repeat * 1e6, 2),
    }


def main(label: str) -> None:
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    out = {"label": label}
    out["cost_direct"] = cost(lambda: pynvml.nvmlDeviceGetTotalEnergyConsumption(h), 50)
    out["cost_field83"] = cost(lambda: field(h, ENERGY_FIELD))
    # Bracketed: a direct read, the field, a direct read.
    brackets = []
    for _ in range(5):
        before = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        f = field(h, ENERGY_FIELD)
        after = pynvml.nvmlDeviceGetTotalEnergyConsumption(h)
        brackets.append([before, f, after, time.time()])
        time.sleep(0.05)
    out["direct_field_direct"] = brackets
    # Freshness: the field every 10 ms for 2 s.
    series, start = [], time.monotonic()
    while time.monotonic() - start < 2.0:
        f = field(h, ENERGY_FIELD)
        series.append([round(time.monotonic() - start, 4), f.get("value"), f.get("timestamp_us")])
        time.sleep(0.01)
    values = [s[1] for s in series]
    changes = sum(1 for a, b in itertools.pairwise(values) if a != b)
    out["field83_polls"], out["field83_changes"] = len(series), changes
    out["field83_series_head"] = series[:25]
    out["power_fields"] = {
        f"{name}/{which}": field(h, fid, scope)
        for name, scope in SCOPES.items()
        for which, fid in (("average", POWER_AVERAGE), ("instant", POWER_INSTANT))
    }
    out["power_usage_mw"] = pynvml.nvmlDeviceGetPowerUsage(h)
    getter = getattr(pynvml, "nvmlDeviceGetProcessesUtilizationInfo", None)
    if getter is not None:
        try:
            out["cost_processes_utilization_info"] = cost(lambda: getter(h, 0), 20)
        except Exception as exc:  # recorded: the call may be missing on this driver
            out["cost_processes_utilization_info"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main(sys.argv[1])
