"""Which processes run on a GPU, and the SM utilisation NVML sampled for each since the last
tick: what splits a GPU's energy among the jobs that share it."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import replace
from types import ModuleType
from typing import TYPE_CHECKING

from wattwise.checks import BadNumber, Rejections, number
from wattwise.errors import VendorError
from wattwise.model import NVML, Finding, GpuProcess, MigInstance
from wattwise.sources.nvml_calls import PROCESS_CALLS, FallbackCall, vendor_call, vendor_whole

if TYPE_CHECKING:
    from wattwise.sources.nvml import _Gpu
    from wattwise.sources.nvml_mig import MigDevice

log = logging.getLogger("wattwise.sources.nvml")
PID_MAX = 1 << 22  # PID_MAX_LIMIT on 64-bit Linux


class ProcessReader:
    def __init__(self, nvml: ModuleType, bad_values: Rejections) -> None:
        self._nvml = nvml
        self._bad_values = bad_values
        self._list = FallbackCall(PROCESS_CALLS)

    def of(self, gpu: _Gpu) -> tuple[GpuProcess, ...]:
        """Compute processes, with SM samples taken since the previous call."""
        nvml = self._nvml
        origin = f"NVML processes of GPU {gpu.index}"
        try:
            running = self._list(nvml, gpu.handle)
            pids = [int(number(p.pid, origin, 1, PID_MAX)) for p in running]
        except (VendorError, BadNumber, AttributeError, TypeError) as exc:
            self._bad_values.reject(origin, f"{origin}: {exc}; its energy is not split by job")
            return ()
        self._bad_values.accept(origin)
        # With one process or none there is nothing to split: the samples are not asked for.
        # (When a second process comes, the first split may use samples from a few seconds
        # before that tick, as NVML keeps them since the last call.)
        if len(set(pids)) < 2:
            return tuple(GpuProcess(pid, 0.0) for pid in pids)
        sm: dict[int, float] = {}
        try:
            samples = vendor_call(
                nvml, nvml.nvmlDeviceGetProcessUtilization, gpu.handle, gpu.last_sample_us
            )
        except VendorError:
            samples = []  # NVML_ERROR_NOT_FOUND: no sample since the last call
        origin = f"NVML process samples of GPU {gpu.index}"
        for sample in samples:
            try:
                pid = int(number(sample.pid, origin, 1, PID_MAX))
                utilisation = number(sample.smUtil, origin, 0, 100)
                stamp = vendor_whole(sample.timeStamp, origin, 2**63)
            except (BadNumber, AttributeError) as exc:
                self._bad_values.reject(origin, f"{origin}: {exc}; that sample is skipped")
                continue
            sm[pid] = sm.get(pid, 0.0) + utilisation
            gpu.last_sample_us = max(gpu.last_sample_us, stamp)
        return tuple(GpuProcess(pid, sm.get(pid, 0.0)) for pid in pids)

    def of_instances(self, index: int, devices: Iterable[MigDevice]) -> tuple[MigInstance, ...]:
        """Each MIG instance with its own processes (no SM samples: none under MIG)."""
        found = []
        for device in devices:
            origin = f"NVML processes of GPU {index} MIG instance {device.instance.gpu_instance}"
            try:
                running = self._list(self._nvml, device.handle)
                pids = sorted({int(number(p.pid, origin, 1, PID_MAX)) for p in running})
            except (VendorError, BadNumber, AttributeError, TypeError) as exc:
                self._bad_values.reject(origin, f"{origin}: {exc}; its energy goes to its holder")
                pids = []
            else:
                self._bad_values.accept(origin)
            processes = tuple(GpuProcess(pid, 0.0) for pid in pids)
            found.append(replace(device.instance, processes=processes))
        return tuple(found)

    def probe(self, gpus: list[_Gpu], driver_version: str) -> Finding:
        """Whether GPU processes can be listed, and with which call: without them a GPU's
        energy goes to jobs by allocation only."""
        where = f"driver {driver_version}"
        error = None
        for gpu in gpus:
            handle = gpu.handle
            if gpu.mig is not None and gpu.mig.slices:  # the parent's list needs privileges
                handle = gpu.mig.devices[0].handle if gpu.mig.devices else None
            if gpu.broken is None and handle is not None:
                try:
                    self._list(self._nvml, handle)
                except VendorError as exc:
                    error = exc
                else:
                    error = None
                    break
        call = self._list
        if error is not None:
            detail = (
                f"cannot be listed ({error}): a GPU's energy goes to the job that holds it "
                "(CUDA_VISIBLE_DEVICES, the scheduler's allocation), never by process"
            )
            fix = "install the nvidia-ml-py release that matches the driver"
            return Finding(NVML, "processes", where, False, detail, fix)
        detail = f"listed with {call.name}"
        if call.missing:
            detail += f" ({', '.join(call.missing)}: missing, the driver is older than pynvml)"
        return Finding(NVML, "processes", where, True, detail)
