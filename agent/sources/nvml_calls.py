"""How NVML is called and its answers read: one wrapper that no exception of the binding
escapes, the error names, and the checks on what a GPU reports. The pynvml module itself is
imported in nvml.py only, and handed in."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from functools import lru_cache
from types import ModuleType
from typing import Any

from wattwise.checks import number
from wattwise.errors import VendorError

log = logging.getLogger("wattwise.sources.nvml")

# The process list's calls, newest first. nvidia-ml-py's unversioned name calls the newest
# symbol the binding knows (_v3 since 11.510); on a driver that lacks it, the binding raises
# NVMLLibraryMismatchError (12.550 and later, not an NVMLError) or FUNCTION_NOT_FOUND. The
# older symbol is then used, as gpustat and nvitop do.
PROCESS_CALLS = ("nvmlDeviceGetComputeRunningProcesses", "nvmlDeviceGetComputeRunningProcesses_v2")
MISSING_SYMBOL = frozenset({"NVML_ERROR_FUNCTION_NOT_FOUND", "NVMLLibraryMismatchError"})


def vendor_call(nvml: ModuleType, fn: Any, *args: Any) -> Any:
    """The one way NVML is called: no exception the binding raises (NVMLLibraryMismatchError on
    an old driver, a ctypes fault) can escape a read; it costs that one figure."""
    try:
        return fn(*args)
    except nvml.NVMLError as exc:
        raise VendorError(_error_name(nvml, exc), str(exc)) from None
    except Exception as exc:
        raise VendorError(type(exc).__name__, str(exc)) from None


def _error_name(nvml: ModuleType, exc: Exception) -> str:
    value = getattr(exc, "value", None)
    return _error_names(nvml).get(value, f"NVML error {value}")


@lru_cache(maxsize=4)
def _error_names(nvml: ModuleType) -> dict[int, str]:
    return {getattr(nvml, n): n for n in dir(nvml) if n.startswith("NVML_ERROR_")}


def vendor_text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return value if isinstance(value, str) else ""


def vendor_whole(value: object, origin: str, high: float) -> int:
    """A counter or timestamp from NVML: a whole number within [0, high], kept exact."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high:
        return value
    return int(number(value, origin, 0, high))


# What a GPU can plausibly report; anything outside is a driver or binding fault, and the
# figure is left out rather than exported.
GAUGE_RANGES = {
    "power_w": (0.0, 1e5),
    "power_limit_w": (0.0, 1e5),
    "utilization_ratio": (0.0, 1.0),
    "memory_used_bytes": (0.0, 2.0**50),
    "memory_total_bytes": (0.0, 2.0**50),
    "temperature_celsius": (-100.0, 300.0),
    "sm_clock_hz": (0.0, 1e11),
}


# (gauge, NVML call, the pynvml constant it takes, to SI units); no call: from the memory info.
GAUGE_CALLS: tuple[tuple[str, str, str, Any], ...] = (
    ("power_w", "nvmlDeviceGetPowerUsage", "", lambda mw: mw / 1000.0),
    ("power_limit_w", "nvmlDeviceGetEnforcedPowerLimit", "", lambda mw: mw / 1000.0),
    ("utilization_ratio", "nvmlDeviceGetUtilizationRates", "", lambda rates: rates.gpu / 100.0),
    ("memory_used_bytes", "", "", lambda info: info.used),
    ("memory_total_bytes", "", "", lambda info: info.total),
    ("temperature_celsius", "nvmlDeviceGetTemperature", "NVML_TEMPERATURE_GPU", lambda c: c),
    ("sm_clock_hz", "nvmlDeviceGetClockInfo", "NVML_CLOCK_SM", lambda mhz: mhz * 1e6),
)


# Error codes after which a GPU is gone until the driver or the node is reset.
GONE = {"NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_GPU_NOT_FOUND", "NVML_ERROR_RESET_REQUIRED"}


INIT_FIXES = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "no NVIDIA driver on this machine (libnvidia-ml.so.1 not "
    "found); in a container, run it with the NVIDIA container toolkit",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel module is not loaded: check `nvidia-smi`",
    "NVML_ERROR_NO_PERMISSION": "no permission on /dev/nvidia*: run as root or in the video group",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "driver library and kernel module differ: reboot or "
    "reload the nvidia module after a driver upgrade",
}


class FallbackCall:
    """A call with versioned variants: the newest one the driver has, found at the first call
    that needs it and kept."""

    def __init__(self, names: Sequence[str]) -> None:
        self.names = tuple(names)
        self.index = 0
        self.missing: list[str] = []  # newer variants the driver (or the binding) lacks

    @property
    def name(self) -> str:
        return self.names[self.index]

    def __call__(self, nvml: ModuleType, *args: Any) -> Any:
        while True:
            try:
                fn = getattr(nvml, self.name, None)
                if fn is None:
                    raise VendorError("NVML_ERROR_FUNCTION_NOT_FOUND", f"no {self.name} in pynvml")
                return vendor_call(nvml, fn, *args)
            except VendorError as exc:
                if exc.name not in MISSING_SYMBOL or self.index + 1 == len(self.names):
                    raise
                log.warning(
                    "%s is missing (%s): the driver is older than nvidia-ml-py; using %s",
                    self.name,
                    exc,
                    self.names[self.index + 1],
                )
                self.missing.append(self.name)
                self.index += 1
