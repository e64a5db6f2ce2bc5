"""GPU energy and state through NVML. The only module that imports pynvml (nvidia-ml-py).

Energy comes from nvmlDeviceGetTotalEnergyConsumption (millijoules since the driver loaded; Volta
and newer). GPUs without it have their power polled and integrated (`nvml_power.py`, source
"nvml_power"); the counter is always preferred. Every call goes through `nvml_calls.py`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from wattwise.checks import U64_MAX, BadNumber, Rejections, number
from wattwise.errors import VendorError
from wattwise.model import (
    NVML,
    NVML_POWER,
    CounterKey,
    CounterReading,
    Finding,
    GpuStatus,
    SourceReadout,
    SourceStatus,
)
from wattwise.service import Service
from wattwise.sources.nvml_calls import (
    GAUGE_CALLS,
    GAUGE_RANGES,
    GONE,
    INIT_FIXES,
    vendor_call,
    vendor_text,
    vendor_whole,
)
from wattwise.sources.nvml_mig import MIG_REFRESH_S, MigLayout, describe_mig, mig_layout
from wattwise.sources.nvml_power import PowerIntegrator
from wattwise.sources.nvml_processes import ProcessReader

log = logging.getLogger(__name__)

UJ_PER_MJ = 1000
PID_MAX = 1 << 22  # PID_MAX_LIMIT on 64-bit Linux


# Gauges (power, temperature, clocks, memory, utilisation) are read this often, energy and
# processes every tick: the gauges are only exported, and Prometheus scrapes every 15 s or more,
# while each NVML call is a driver round trip.
GAUGES_EVERY_S = 5.0


def load_pynvml() -> ModuleType | str:
    """The pynvml module, or the reason it cannot be used."""
    try:
        import pynvml
    except ImportError:
        return "nvidia-ml-py is not installed (pip install nvidia-ml-py)"
    except Exception as exc:  # a broken install must not stop the agent
        return f"nvidia-ml-py cannot be imported: {type(exc).__name__}: {exc}"
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
    gauges: dict[str, float | None] | None = None  # the last gauges read, SI units
    gauges_read_s: float = 0.0  # monotonic
    counter_key: CounterKey | None = None
    mig: MigLayout | None = None

    @property
    def source(self) -> str:
        return NVML if self.has_energy_counter else NVML_POWER

    @property
    def key(self) -> CounterKey:
        if self.counter_key is None:  # made once: read every tick
            self.counter_key = CounterKey("gpu", str(self.index), self.source)
        return self.counter_key


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
        self._bad_values = Rejections(log)
        self._processes = ProcessReader(loaded, self._bad_values)
        try:
            vendor_call(loaded, loaded.nvmlInit)
        except VendorError as exc:
            self.problem = f"NVML did not start: {exc}"
            self.fix = INIT_FIXES.get(exc.name, "")
            self._nvml = None
            return
        self.driver_version = vendor_text(self._call(loaded.nvmlSystemGetDriverVersion) or "")
        self._gpus = self._enumerate()
        counterless = [gpu for gpu in self._gpus if not gpu.has_energy_counter and not gpu.broken]
        if counterless:
            self._integrator = PowerIntegrator(loaded, counterless, power_poll_hz)
            self._integrator.start()

    def _call(self, fn: Any, *args: Any) -> Any:
        try:
            return vendor_call(self._nvml, fn, *args)
        except VendorError:
            return None

    def _enumerate(self) -> list[_Gpu]:
        nvml = self._nvml
        try:
            count = int(number(vendor_call(nvml, nvml.nvmlDeviceGetCount), "NVML count", 0, 1024))
        except (VendorError, BadNumber) as exc:
            self.problem = f"cannot count GPUs: {exc}"
            return []
        gpus = []
        for index in range(count):
            try:
                handle = vendor_call(nvml, nvml.nvmlDeviceGetHandleByIndex, index)
                uuid = vendor_text(vendor_call(nvml, nvml.nvmlDeviceGetUUID, handle))
                model = vendor_text(vendor_call(nvml, nvml.nvmlDeviceGetName, handle))
            except VendorError as exc:
                gpus.append(_Gpu(index, None, "", "", True, str(exc)))
                continue
            try:
                vendor_call(nvml, nvml.nvmlDeviceGetTotalEnergyConsumption, handle)
                has_counter = True
            except VendorError as exc:
                has_counter = exc.name != "NVML_ERROR_NOT_SUPPORTED"
            gpu = _Gpu(index, handle, uuid, model, has_counter)
            gpu.mig = mig_layout(nvml, handle, time.monotonic())
            gpus.append(gpu)
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
                read = nvml.nvmlDeviceGetTotalEnergyConsumption
                origin = f"NVML energy counter of GPU {gpu.index}"
                raw_uj = (
                    vendor_whole(vendor_call(nvml, read, gpu.handle), origin, U64_MAX) * UJ_PER_MJ
                )
            except (VendorError, BadNumber) as exc:
                error = f"energy counter: {exc}"
        elif error is None and self._integrator is not None:
            raw_uj, error = self._integrator.energy_uj(gpu.index)
        now = time.monotonic()
        counter = CounterReading(gpu.key, raw_uj, None, now, True, error)
        if error is None and (gpu.gauges is None or now - gpu.gauges_read_s >= GAUGES_EVERY_S):
            gauges = self._gauges(gpu)
            if isinstance(gauges, str):
                error, gpu.gauges = gauges, None
            else:
                gpu.gauges, gpu.gauges_read_s = gauges, now
        if error is not None or gpu.gauges is None:
            down = error or "no gauges"
            return counter, GpuStatus(gpu.index, gpu.uuid, gpu.model, False, down, gpu.source)
        mig = gpu.mig
        if mig is not None and now - mig.read_s >= MIG_REFRESH_S:
            mig = gpu.mig = mig_layout(nvml, gpu.handle, now)
        if mig is not None and mig.slices:  # under MIG: each instance's own processes
            instances = self._processes.of_instances(gpu.index, mig.devices)
            processes = tuple(p for instance in instances for p in instance.processes)
        else:
            instances, processes = (), self._processes.of(gpu)
        status = GpuStatus(
            gpu.index,
            gpu.uuid,
            gpu.model,
            True,
            None,
            gpu.source,
            processes=processes,
            mig_slices=mig.slices if mig is not None else 0,
            mig=instances,
            **gpu.gauges,  # type: ignore[arg-type]
        )
        return counter, status

    def _gauges(self, gpu: _Gpu) -> dict[str, float | None] | str:
        """The gauges of a GPU in SI units (None where not supported or not sane), or the error
        that says the GPU is gone."""
        nvml, handle = self._nvml, gpu.handle
        values: dict[str, float | None] = dict.fromkeys(GAUGE_RANGES)
        try:
            memory = vendor_call(nvml, nvml.nvmlDeviceGetMemoryInfo, handle)
        except VendorError as exc:
            if exc.name in GONE:
                return str(exc)
            memory = None
        for name, call, constant, to_si in GAUGE_CALLS:
            origin = f"NVML {name} of GPU {gpu.index}"
            try:
                if call:
                    args = (handle, getattr(nvml, constant)) if constant else (handle,)
                    answer = vendor_call(nvml, getattr(nvml, call), *args)
                else:
                    answer = memory
                if answer is None:
                    continue
                low, high = GAUGE_RANGES[name]
                values[name] = number(to_si(answer), origin, low, high)
                self._bad_values.accept(origin)
            except VendorError as exc:
                if exc.name in GONE:
                    return str(exc)
            except BadNumber as exc:
                self._bad_values.reject(origin, str(exc))
            except Exception as exc:  # an answer of the wrong shape from the binding
                self._bad_values.reject(origin, f"{origin}: {exc!r}")
        return values

    @property
    def services(self) -> list[Service]:
        return [self._integrator.service] if self._integrator is not None else []

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
            detail += describe_mig(gpu.mig)
            fix = "" if status.up else "check `nvidia-smi -q` and the kernel log (Xid errors)"
            findings.append(Finding(NVML, f"gpu {gpu.index}", gpu.uuid, status.up, detail, fix))
        return [*findings, self._processes.probe(self._gpus, self.driver_version)]

    def close(self) -> None:
        if self._integrator is not None:
            self._integrator.stop()
        if self._nvml is not None:
            with contextlib.suppress(VendorError):
                vendor_call(self._nvml, self._nvml.nvmlShutdown)
            self._nvml = None
