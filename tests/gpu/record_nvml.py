"""Records what a real NVIDIA driver answers, for docs/hardware-validation.md and for replay.

Each line of the output is one poll, in the state format of the fake pynvml (tests/fakes):
{"t_s": seconds since start, "gpus": [{name, uuid, energy_mj, power_mw, power_limit_mw,
util_gpu, mem_used, mem_total, temp_c, sm_clock_mhz, pids, samples}]}, where samples are the
process utilisation rows [pid, timestamp_us, sm_util] that NVML returned *new* at that poll.

Usage: python3 record_nvml.py OUT.jsonl SECONDS [HZ]
       python3 record_nvml.py --call-costs   (µs per NVML call, as JSON on stdout)
"""

from __future__ import annotations

import json
import sys
import time

import pynvml


def _safe(fn, *args):
    try:
        return fn(*args)
    except pynvml.NVMLError as exc:
        return f"error: {exc}"
    except Exception as exc:  # NVMLLibraryMismatchError and kin
        return f"error: {type(exc).__name__}: {exc}"


def _power_fields(handle) -> list:
    """NVML_FI_DEV_POWER_AVERAGE (185) and _INSTANT (186), mW, where the driver has them."""
    try:
        values = pynvml.nvmlDeviceGetFieldValues(handle, [185, 186])
    except Exception as exc:
        return [f"error: {type(exc).__name__}: {exc}"]
    return [v.value.uiVal if v.nvmlReturn == 0 else f"error {v.nvmlReturn}" for v in values]


def _gpu_state(handle, last_us: list[int]) -> dict:
    util = _safe(pynvml.nvmlDeviceGetUtilizationRates, handle)
    memory = _safe(pynvml.nvmlDeviceGetMemoryInfo, handle)
    procs = _safe(pynvml.nvmlDeviceGetComputeRunningProcesses, handle)
    samples = _safe(pynvml.nvmlDeviceGetProcessUtilization, handle, last_us[0])
    rows = []
    if isinstance(samples, list):
        for s in samples:
            rows.append([s.pid, s.timeStamp, s.smUtil, s.memUtil])
            last_us[0] = max(last_us[0], s.timeStamp)
    return {
        "energy_mj": _safe(pynvml.nvmlDeviceGetTotalEnergyConsumption, handle),
        "power_mw": _safe(pynvml.nvmlDeviceGetPowerUsage, handle),
        "power_avg_instant_mw": _power_fields(handle),
        "util_gpu": getattr(util, "gpu", util),
        "util_mem": getattr(util, "memory", util),
        "mem_used": getattr(memory, "used", memory),
        "temp_c": _safe(pynvml.nvmlDeviceGetTemperature, handle, pynvml.NVML_TEMPERATURE_GPU),
        "sm_clock_mhz": _safe(pynvml.nvmlDeviceGetClockInfo, handle, pynvml.NVML_CLOCK_SM),
        "pids": [p.pid for p in procs] if isinstance(procs, list) else procs,
        "proc_mem": [p.usedGpuMemory for p in procs] if isinstance(procs, list) else None,
        "samples": rows if isinstance(samples, list) else samples,
    }


def record(path: str, seconds: float, hz: float) -> None:
    pynvml.nvmlInit()
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    static = [
        {
            "name": _safe(pynvml.nvmlDeviceGetName, h),
            "uuid": _safe(pynvml.nvmlDeviceGetUUID, h),
            "power_limit_mw": _safe(pynvml.nvmlDeviceGetEnforcedPowerLimit, h),
            "mem_total": getattr(_safe(pynvml.nvmlDeviceGetMemoryInfo, h), "total", None),
            "mig_mode": str(_safe(getattr(pynvml, "nvmlDeviceGetMigMode", None), h)),
        }
        for h in handles
    ]
    last = [[0] for _ in handles]
    start = time.monotonic()
    with open(path, "w") as out:
        out.write(
            json.dumps(
                {
                    "driver_version": pynvml.nvmlSystemGetDriverVersion(),
                    "start_unix_s": time.time(),
                    "static": static,
                }
            )
            + "\n"
        )
        tick = 0
        while (now := time.monotonic() - start) < seconds:
            gpus = [static[i] | _gpu_state(h, last[i]) for i, h in enumerate(handles)]
            out.write(json.dumps({"t_s": round(now, 4), "gpus": gpus}) + "\n")
            out.flush()
            tick += 1
            time.sleep(max(0.0, start + tick / hz - time.monotonic()))


def call_costs(repeat: int = 100) -> dict:
    pynvml.nvmlInit()
    h = pynvml.nvmlDeviceGetHandleByIndex(0)
    calls = {
        "nvmlDeviceGetTotalEnergyConsumption": (pynvml.nvmlDeviceGetTotalEnergyConsumption, h),
        "nvmlDeviceGetPowerUsage": (pynvml.nvmlDeviceGetPowerUsage, h),
        "nvmlDeviceGetComputeRunningProcesses": (pynvml.nvmlDeviceGetComputeRunningProcesses, h),
        "nvmlDeviceGetProcessUtilization": (pynvml.nvmlDeviceGetProcessUtilization, h, 0),
        "nvmlDeviceGetUtilizationRates": (pynvml.nvmlDeviceGetUtilizationRates, h),
        "nvmlDeviceGetMemoryInfo": (pynvml.nvmlDeviceGetMemoryInfo, h),
        "nvmlDeviceGetTemperature": (pynvml.nvmlDeviceGetTemperature, h, 0),
        "nvmlDeviceGetClockInfo": (pynvml.nvmlDeviceGetClockInfo, h, 1),
        "nvmlDeviceGetEnforcedPowerLimit": (pynvml.nvmlDeviceGetEnforcedPowerLimit, h),
        "nvmlDeviceGetFieldValues(power avg, instant)": (_power_fields, h),
    }
    result = {}
    for name, (fn, *args) in calls.items():
        began, began_cpu = time.perf_counter(), time.process_time()
        outcome = "ok"
        for _ in range(repeat):
            try:
                fn(*args)
            except Exception as exc:  # recorded, not raised
                outcome = f"{type(exc).__name__}: {exc}"
        result[name] = {
            "wall_us": round((time.perf_counter() - began) / repeat * 1e6, 2),
            "cpu_us": round((time.process_time() - began_cpu) / repeat * 1e6, 2),
            "outcome": outcome,
        }
    return result


if __name__ == "__main__":
    if sys.argv[1] == "--call-costs":
        for name, cost in call_costs().items():
            print(
                f"{name:46} {cost['wall_us']:>9} us wall {cost['cpu_us']:>9} us CPU",
                cost["outcome"],
            )
    else:
        record(sys.argv[1], float(sys.argv[2]), float(sys.argv[3]) if len(sys.argv) > 3 else 10)
