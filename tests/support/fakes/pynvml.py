"""Stand-in for nvidia-ml-py's `pynvml`, for machines without an NVIDIA GPU.

It mirrors the real module's names, error codes, units (mW, mJ, MHz, bytes) and error behaviour
for the calls wattwise makes. Its GPUs are described by a dict: set in-process with configure(),
or in a JSON file named by FAKE_PYNVML_STATE (re-read when it changes, looked at every 20 ms) for
a subprocess.

A GPU entry: name, uuid, energy_mj, power_mw, power_limit_mw, util_gpu (%), mem_used, mem_total
(bytes), temp_c, sm_clock_mhz, energy_supported (False: pre-Volta), lost (True: every call raises
NVML_ERROR_GPU_IS_LOST), pids (compute processes), samples ([pid, timestamp_us, sm_util] rows,
returned when newer than the timestamp asked for), not_supported (names of calls that raise
NVML_ERROR_NOT_SUPPORTED on this GPU). The top level may set init_error, missing (names of
symbols the driver lacks: calling one raises NVML_ERROR_FUNCTION_NOT_FOUND, as nvidia-ml-py's
_nvmlGetFunctionPointer does, and the unversioned process call then raises
NVMLLibraryMismatchError, which is not an NVMLError, as nvidia-ml-py >= 12.550 does through its
throwOnVersionMismatch wrapper) and old_driver (True: missing the _v3 process call).

MIG: a GPU with "mig": [{"gi", "ci", "uuid", "slices", "memory_mb", "pids"}, ...] is in MIG mode
with those instances and "mig_slices" (default 7) slices. As NVML documents: a MIG device handle
lists its own processes; the parent lists all of them only with privileges ("mig_privileged",
else NVML_ERROR_NO_PERMISSION); process and device utilisation are NOT_SUPPORTED; energy and
power are read on the parent.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from typing import Any

NVML_ERROR_UNINITIALIZED = 1
NVML_ERROR_NOT_SUPPORTED = 3
NVML_ERROR_NO_PERMISSION = 4
NVML_ERROR_NOT_FOUND = 6
NVML_ERROR_DRIVER_NOT_LOADED = 9
NVML_ERROR_LIBRARY_NOT_FOUND = 12
NVML_ERROR_FUNCTION_NOT_FOUND = 13
NVML_ERROR_GPU_IS_LOST = 15
NVML_ERROR_GPU_NOT_FOUND = 28
NVML_ERROR_UNKNOWN = 999

NVML_TEMPERATURE_GPU = 0
NVML_CLOCK_SM = 1

_STRINGS = {
    NVML_ERROR_UNINITIALIZED: "Uninitialized",
    NVML_ERROR_NOT_SUPPORTED: "Not Supported",
    NVML_ERROR_NO_PERMISSION: "Insufficient Permissions",
    NVML_ERROR_DRIVER_NOT_LOADED: "Driver Not Loaded",
    NVML_ERROR_LIBRARY_NOT_FOUND: "NVML Shared Library Not Found",
    NVML_ERROR_FUNCTION_NOT_FOUND: "Function Not Found",
    NVML_ERROR_GPU_IS_LOST: "GPU is lost",
    NVML_ERROR_UNKNOWN: "Unknown Error",
}


class NVMLLibraryMismatchError(Exception):
    pass


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value

    def __str__(self) -> str:
        return _STRINGS.get(self.value, f"NVML Error with code {self.value}")


@dataclass
class c_nvmlUtilization_t:
    gpu: int
    memory: int


@dataclass
class c_nvmlMemory_t:
    total: int
    free: int
    used: int


@dataclass
class c_nvmlProcessInfo_t:
    pid: int
    usedGpuMemory: int | None


@dataclass
class c_nvmlProcessUtilizationSample_t:
    pid: int
    timeStamp: int
    smUtil: int
    memUtil: int = 0
    encUtil: int = 0
    decUtil: int = 0


@dataclass(frozen=True)
class _Handle:
    index: int
    mig: int | None = None  # a MIG device of GPU `index`


@dataclass
class c_nvmlDeviceAttributes:
    multiprocessorCount: int
    gpuInstanceSliceCount: int
    computeInstanceSliceCount: int
    memorySizeMB: int


NVML_DEVICE_MIG_DISABLE = 0
NVML_DEVICE_MIG_ENABLE = 1


_state: dict[str, Any] = {"gpus": []}
_file_mtime_ns: int | None = None
_initialized = False
calls = 0  # every NVML call made, for tests that check work is not repeated


def configure(state: dict[str, Any]) -> None:
    global _state, _initialized
    _state = state
    _initialized = False


_STATE_FILE = os.environ.get("FAKE_PYNVML_STATE")
_STAT_EVERY_S = 0.02  # a tick's dozens of calls see one state, as they would one driver
_stat_at = -1.0


def _current() -> dict[str, Any]:
    global _state, _file_mtime_ns, _stat_at, calls
    calls += 1
    if _STATE_FILE and time.monotonic() - _stat_at >= _STAT_EVERY_S:
        _stat_at = time.monotonic()
        mtime = os.stat(_STATE_FILE).st_mtime_ns
        if mtime != _file_mtime_ns:
            with open(_STATE_FILE) as f:
                _state = json.load(f)
            _file_mtime_ns = mtime
    return _state


def _gpu(handle: _Handle) -> dict[str, Any]:
    if not _initialized:
        raise NVMLError(NVML_ERROR_UNINITIALIZED)
    gpus = _current()["gpus"]
    if handle.index >= len(gpus):
        raise NVMLError(NVML_ERROR_GPU_NOT_FOUND)
    gpu = gpus[handle.index]
    if gpu.get("lost"):
        raise NVMLError(NVML_ERROR_GPU_IS_LOST)
    return gpu


def nvmlInit() -> None:
    global _initialized
    error = _current().get("init_error")
    if error:
        raise NVMLError(error)
    _initialized = True


def nvmlShutdown() -> None:
    global _initialized
    _initialized = False


def nvmlSystemGetDriverVersion() -> str:
    return _current().get("driver_version", "550.54.15")


def nvmlDeviceGetCount() -> int:
    return len(_current()["gpus"])


def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
    handle = _Handle(index)
    _gpu(handle)
    return handle


def nvmlDeviceGetName(handle: _Handle) -> str:
    return _symbol("nvmlDeviceGetName", handle)["name"]


def nvmlDeviceGetUUID(handle: _Handle) -> str:
    gpu = _symbol("nvmlDeviceGetUUID", handle)
    return _instance(gpu, handle)["uuid"] if handle.mig is not None else gpu["uuid"]


def nvmlDeviceGetTotalEnergyConsumption(handle: _Handle) -> int:
    gpu = _symbol("nvmlDeviceGetTotalEnergyConsumption", handle)
    if not gpu.get("energy_supported", True):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return int(gpu["energy_mj"])


def nvmlDeviceGetPowerUsage(handle: _Handle) -> int:
    return int(_symbol("nvmlDeviceGetPowerUsage", handle)["power_mw"])


def nvmlDeviceGetEnforcedPowerLimit(handle: _Handle) -> int:
    return int(_symbol("nvmlDeviceGetEnforcedPowerLimit", handle).get("power_limit_mw", 700_000))


def nvmlDeviceGetUtilizationRates(handle: _Handle) -> c_nvmlUtilization_t:
    gpu = _symbol("nvmlDeviceGetUtilizationRates", handle)
    if gpu.get("mig"):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return c_nvmlUtilization_t(gpu.get("util_gpu", 0), gpu.get("util_mem", 0))


def nvmlDeviceGetMemoryInfo(handle: _Handle) -> c_nvmlMemory_t:
    gpu = _symbol("nvmlDeviceGetMemoryInfo", handle)
    total, used = gpu.get("mem_total", 85_899_345_920), gpu.get("mem_used", 0)
    return c_nvmlMemory_t(total, total - used, used)


def nvmlDeviceGetTemperature(handle: _Handle, sensor: int) -> int:
    gpu = _symbol("nvmlDeviceGetTemperature", handle)
    if "temp_c" not in gpu:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return int(gpu["temp_c"])


def nvmlDeviceGetClockInfo(handle: _Handle, clock_type: int) -> int:
    return int(_symbol("nvmlDeviceGetClockInfo", handle).get("sm_clock_mhz", 1980))


def _symbol(name: str, handle: _Handle) -> dict[str, Any]:
    """The GPU a call is about, after the driver's symbol lookup and the GPU's support."""
    state = _current()
    missing = set(state.get("missing", ()))
    if state.get("old_driver"):
        missing.add("nvmlDeviceGetComputeRunningProcesses_v3")
    if name in missing:
        raise NVMLError(NVML_ERROR_FUNCTION_NOT_FOUND)
    gpu = _gpu(handle)
    if name in gpu.get("not_supported", ()):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    return gpu


def _pids(gpu: dict[str, Any], handle: _Handle) -> list[int]:
    if handle.mig is not None:
        return _instance(gpu, handle).get("pids", [])
    if gpu.get("mig"):
        if not gpu.get("mig_privileged"):
            raise NVMLError(NVML_ERROR_NO_PERMISSION)
        return [pid for instance in gpu["mig"] for pid in instance.get("pids", [])]
    return gpu.get("pids", [])


def nvmlDeviceGetComputeRunningProcesses_v3(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    gpu = _symbol("nvmlDeviceGetComputeRunningProcesses_v3", handle)
    return [c_nvmlProcessInfo_t(pid, 1 << 30) for pid in _pids(gpu, handle)]


def nvmlDeviceGetComputeRunningProcesses_v2(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    gpu = _symbol("nvmlDeviceGetComputeRunningProcesses_v2", handle)
    return [c_nvmlProcessInfo_t(pid, 1 << 30) for pid in _pids(gpu, handle)]


def _instance(gpu: dict[str, Any], handle: _Handle) -> dict[str, Any]:
    instances = gpu.get("mig") or []
    if handle.mig is None or handle.mig >= len(instances):
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return instances[handle.mig]


def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
    gpu = _symbol("nvmlDeviceGetMigMode", handle)
    if not gpu.get("mig_capable", bool(gpu.get("mig"))) and "H100" not in gpu["name"]:
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    mode = NVML_DEVICE_MIG_ENABLE if gpu.get("mig") else NVML_DEVICE_MIG_DISABLE
    return [mode, mode]


def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
    gpu = _symbol("nvmlDeviceGetMaxMigDeviceCount", handle)
    return int(gpu.get("mig_slices", 7)) if gpu.get("mig") else 0


def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, index: int) -> _Handle:
    gpu = _symbol("nvmlDeviceGetMigDeviceHandleByIndex", handle)
    mig = _Handle(handle.index, index)
    _instance(gpu, mig)
    return mig


def nvmlDeviceIsMigDeviceHandle(handle: _Handle) -> int:
    return 1 if handle.mig is not None else 0


def nvmlDeviceGetGpuInstanceId(handle: _Handle) -> int:
    return int(_instance(_gpu(handle), handle)["gi"])


def nvmlDeviceGetComputeInstanceId(handle: _Handle) -> int:
    return int(_instance(_gpu(handle), handle).get("ci", 0))


def nvmlDeviceGetAttributes(handle: _Handle) -> c_nvmlDeviceAttributes:
    instance = _instance(_gpu(handle), handle)
    slices = int(instance["slices"])
    return c_nvmlDeviceAttributes(16 * slices, slices, slices, int(instance["memory_mb"]))


def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[c_nvmlProcessInfo_t]:
    try:
        return nvmlDeviceGetComputeRunningProcesses_v3(handle)
    except NVMLError as exc:
        if exc.value != NVML_ERROR_FUNCTION_NOT_FOUND:
            raise
        raise NVMLLibraryMismatchError(
            "Unversioned function called and the pyNVML version does not match the NVML lib "
            "version. Either use matching pyNVML and NVML lib versions or use a versioned "
            "function such as nvmlDeviceGetComputeRunningProcesses_v2"
        ) from None


def nvmlDeviceGetProcessUtilization(
    handle: _Handle, timeStamp: int
) -> list[c_nvmlProcessUtilizationSample_t]:
    gpu = _symbol("nvmlDeviceGetProcessUtilization", handle)
    if gpu.get("mig"):
        raise NVMLError(NVML_ERROR_NOT_SUPPORTED)
    rows = [r for r in gpu.get("samples", []) if r[1] > timeStamp]
    if not rows:
        raise NVMLError(NVML_ERROR_NOT_FOUND)
    return [c_nvmlProcessUtilizationSample_t(pid, ts, sm) for pid, ts, sm in rows]
