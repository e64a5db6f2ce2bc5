"""GPU energy and state through NVML. The only module that imports pynvml (nvidia-ml-py).

Energy comes from nvmlDeviceGetTotalEnergyConsumption (millijoules since the driver loaded; Volta
and newer). GPUs without it have their power polled on a thread of its own and integrated, with
source="nvml_power". On A100/H100 the power reading averages 25 ms of every 100 ms, so polled
energy is an approximation; the counter is always preferred.
"""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass
from functools import lru_cache
from types import ModuleType
from typing import Any

from agent.model import (
    NVML,
    NVML_POWER,
    CounterKey,
    CounterReading,
    Finding,
    GpuProcess,
    GpuStatus,
    SourceReadout,
    SourceStatus,
)

UJ_PER_MJ = 1000

# Error codes after which a GPU is gone until the driver or the node is reset.
_GONE = {"NVML_ERROR_GPU_IS_LOST", "NVML_ERROR_GPU_NOT_FOUND", "NVML_ERROR_RESET_REQUIRED"}

_INIT_FIXES = {
    "NVML_ERROR_LIBRARY_NOT_FOUND": "no NVIDIA driver on this machine (libnvidia-ml.so.1 not "
    "found); in a container, run it with the NVIDIA container toolkit",
    "NVML_ERROR_DRIVER_NOT_LOADED": "the NVIDIA kernel module is not loaded: check `nvidia-smi`",
    "NVML_ERROR_NO_PERMISSION": "no permission on /dev/nvidia*: run as root or in the video group",
    "NVML_ERROR_LIB_RM_VERSION_MISMATCH": "driver library and kernel module differ: reboot or "
    "reload the nvidia module after a driver upgrade",
}


def load_pynvml() -> ModuleType | str:
    """The pynvml module, or the reason it cannot be used."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    return pynvml


@dataclass(slots=True)
class _Gpu:
    index: int
    handle: Any
    uuid: str
    model: str
    has_energy_counter: bool
    broken: str | None = None  # failed at enumeration: no handle, never read
    last_sample_us: int = 0  # NVML timestamp of the newest process sample seen

    @property
    def source(self) -> str:
        return NVML if self.has_energy_counter else NVML_POWER

    @property
    def key(self) -> CounterKey:
        return CounterKey("gpu", str(self.index), self.source)


@dataclass(slots=True)
class _Integral:
    energy_uj: float = 0.0
    last_power_w: float | None = None
    last_monotonic_s: float = 0.0
    error: str | None = None


class PowerIntegrator:
    """Polls the power of counter-less GPUs and integrates it (trapezoids) into microjoules."""

    def __init__(self, nvml: ModuleType, gpus: list[_Gpu], poll_hz: float) -> None:
        self._nvml = nvml
        self._gpus = gpus
        self._period_s = 1.0 / poll_hz
        self._lock = threading.Lock()
        self._integrals = {gpu.index: _Integral() for gpu in gpus}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="nvml-power-poll", daemon=True)

    def start(self) -> None:
        self.poll_once()
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._period_s):
            self.poll_once()

    def poll_once(self) -> None:
        for gpu in self._gpus:
            try:
                power_w = self._nvml.nvmlDeviceGetPowerUsage(gpu.handle) / 1000.0
                error = None
            except self._nvml.NVMLError as exc:
                power_w, error = None, f"power reading failed: {_error_name(self._nvml, exc)}"
            now = time.monotonic()
            with self._lock:
                integral = self._integrals[gpu.index]
                if power_w is not None and integral.last_power_w is not None:
                    dt = now - integral.last_monotonic_s
                    integral.energy_uj += (power_w + integral.last_power_w) / 2 * dt * 1e6
                # A failed poll leaves a gap that is not integrated (nothing is known of it).
                integral.last_power_w = power_w
                integral.last_monotonic_s = now
                integral.error = error

    def energy_uj(self, index: int) -> tuple[int | None, str | None]:
        with self._lock:
            integral = self._integrals[index]
            if integral.error:
                return None, integral.error
            return int(integral.energy_uj), None

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)


class NvmlSource:
    name = NVML

    def __init__(self, power_poll_hz: float) -> None:
        self.problem: str | None = None
        self.fix = ""
        self.power_poll_hz = power_poll_hz
        self.driver_version = ""
        self._gpus: list[_Gpu] = []
        self._integrator: PowerIntegrator | None = None
        loaded = load_pynvml()
        if isinstance(loaded, str):
            self.problem, self._nvml = loaded, None
            return
        self._nvml = loaded
        try:
            loaded.nvmlInit()
        except loaded.NVMLError as exc:
            name = _error_name(loaded, exc)
            self.problem = f"NVML did not start: {exc} ({name})"
            self.fix = _INIT_FIXES.get(name, "")
            self._nvml = None
            return
        self.driver_version = _text(self._call(loaded.nvmlSystemGetDriverVersion) or "")
        self._gpus = self._enumerate()
        counterless = [gpu for gpu in self._gpus if not gpu.has_energy_counter and not gpu.broken]
        if counterless:
            self._integrator = PowerIntegrator(loaded, counterless, power_poll_hz)
            self._integrator.start()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return fn(*args)
        except self._nvml.NVMLError:
            return None

    def _enumerate(self) -> list[_Gpu]:
        nvml = self._nvml
        try:
            count = nvml.nvmlDeviceGetCount()
        except nvml.NVMLError as exc:
            self.problem = f"cannot count GPUs: {exc}"
            return []
        gpus = []
        for index in range(count):
            try:
                handle = nvml.nvmlDeviceGetHandleByIndex(index)
                uuid = _text(nvml.nvmlDeviceGetUUID(handle))
                model = _text(nvml.nvmlDeviceGetName(handle))
            except nvml.NVMLError as exc:
                gpus.append(_Gpu(index, None, "", "", True, f"{_error_name(nvml, exc)}: {exc}"))
                continue
            try:
                nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
                has_counter = True
            except nvml.NVMLError as exc:
                has_counter = _error_name(nvml, exc) != "NVML_ERROR_NOT_SUPPORTED"
            gpus.append(_Gpu(index, handle, uuid, model, has_counter))
        return gpus

    def read(self) -> SourceReadout:
        if self._nvml is None:
            return SourceReadout(status=(SourceStatus(NVML, False, self.problem or ""),))
        counters, statuses = [], []
        for gpu in self._gpus:
            counter, status = self._read_gpu(gpu)
            counters.append(counter)
            statuses.append(status)
        up = sum(s.up for s in statuses)
        detail = f"{up} of {len(statuses)} GPUs up" if statuses else "no GPUs"
        return SourceReadout(
            counters=tuple(counters),
            gpus=tuple(statuses),
            status=(SourceStatus(NVML, up > 0, detail),),
        )

    def _read_gpu(self, gpu: _Gpu) -> tuple[CounterReading, GpuStatus]:
        nvml = self._nvml
        error = gpu.broken
        raw_uj = None
        if error is None and gpu.has_energy_counter:
            try:
                raw_uj = int(nvml.nvmlDeviceGetTotalEnergyConsumption(gpu.handle)) * UJ_PER_MJ
            except nvml.NVMLError as exc:
                error = f"energy counter: {exc} ({_error_name(nvml, exc)})"
        elif error is None and self._integrator is not None:
            raw_uj, error = self._integrator.energy_uj(gpu.index)
        counter = CounterReading(gpu.key, raw_uj, None, time.monotonic(), True, error)
        if error is not None:
            return counter, GpuStatus(gpu.index, gpu.uuid, gpu.model, False, error, gpu.source)
        return counter, self._gauges(gpu)

    def _gauges(self, gpu: _Gpu) -> GpuStatus:
        nvml, handle = self._nvml, gpu.handle
        values: dict[str, float | None] = {}
        reads = {
            "power_w": lambda: nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
            "power_limit_w": lambda: nvml.nvmlDeviceGetEnforcedPowerLimit(handle) / 1000.0,
            "utilization_ratio": lambda: nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
            "memory": lambda: nvml.nvmlDeviceGetMemoryInfo(handle),
            "temperature_celsius": lambda: float(
                nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)
            ),
            "sm_clock_hz": lambda: nvml.nvmlDeviceGetClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6,
        }
        for name, read in reads.items():
            try:
                values[name] = read()
            except nvml.NVMLError as exc:
                if _error_name(nvml, exc) in _GONE:
                    reason = f"{exc} ({_error_name(nvml, exc)})"
                    return GpuStatus(gpu.index, gpu.uuid, gpu.model, False, reason, gpu.source)
                values[name] = None  # not supported on this model: the gauge is left out
        memory = values.pop("memory")
        return GpuStatus(
            gpu.index,
            gpu.uuid,
            gpu.model,
            True,
            None,
            gpu.source,
            processes=self._processes(gpu),
            memory_used_bytes=float(memory.used) if memory is not None else None,
            memory_total_bytes=float(memory.total) if memory is not None else None,
            **values,  # type: ignore[arg-type]
        )

    def _processes(self, gpu: _Gpu) -> tuple[GpuProcess, ...]:
        """Compute processes, with SM samples taken since the previous call."""
        nvml = self._nvml
        try:
            running = nvml.nvmlDeviceGetComputeRunningProcesses(gpu.handle)
        except nvml.NVMLError:
            return ()
        sm: dict[int, float] = {}
        try:
            samples = nvml.nvmlDeviceGetProcessUtilization(gpu.handle, gpu.last_sample_us)
        except nvml.NVMLError:
            samples = []  # NVML_ERROR_NOT_FOUND: no sample since the last call
        for sample in samples:
            sm[sample.pid] = sm.get(sample.pid, 0.0) + sample.smUtil
            gpu.last_sample_us = max(gpu.last_sample_us, sample.timeStamp)
        return tuple(GpuProcess(p.pid, sm.get(p.pid, 0.0)) for p in running)

    def probe(self) -> list[Finding]:
        if self._nvml is None:
            return [Finding(NVML, "-", "libnvidia-ml.so.1", False, self.problem or "", self.fix)]
        if not self._gpus:
            return [Finding(NVML, "-", f"driver {self.driver_version}", False, "no GPUs found")]
        findings = []
        for gpu in self._gpus:
            _, status = self._read_gpu(gpu)
            if gpu.has_energy_counter:
                how = "energy counter (nvmlDeviceGetTotalEnergyConsumption)"
            else:
                how = f"no energy counter: power polled at {self.power_poll_hz:g} Hz and integrated"
            detail = f"{gpu.model}, {how}" if status.up else f"{gpu.model}, down: {status.error}"
            fix = "" if status.up else "check `nvidia-smi -q` and the kernel log (Xid errors)"
            findings.append(Finding(NVML, f"gpu {gpu.index}", gpu.uuid, status.up, detail, fix))
        return findings

    def close(self) -> None:
        if self._integrator is not None:
            self._integrator.stop()
        if self._nvml is not None:
            with contextlib.suppress(self._nvml.NVMLError):
                self._nvml.nvmlShutdown()
            self._nvml = None


def _error_name(nvml: ModuleType, exc: Exception) -> str:
    value = getattr(exc, "value", None)
    return _error_names(nvml).get(value, f"NVML error {value}")


@lru_cache(maxsize=4)
def _error_names(nvml: ModuleType) -> dict[int, str]:
    return {getattr(nvml, n): n for n in dir(nvml) if n.startswith("NVML_ERROR_")}


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
