"""MIG: the instances a GPU in MIG mode is partitioned into, and the processes of each.

NVML gives no energy or power per instance (they are the board's), and no process or device
utilisation under MIG. What it gives: each MIG device's UUID (MIG-<uuid>, what
CUDA_VISIBLE_DEVICES and the device plugin name), its GPU and compute instance ids, its share
of the GPU's slices (nvmlDeviceGetAttributes), and its own processes through its own handle;
the parent handle lists them all only "if the caller has appropriate privileges" (NVML docs),
so each instance is asked. Instances change only when an administrator repartitions an idle
GPU: they are listed again every MIG_REFRESH_S.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Any

from wattwise.checks import BadNumber, number
from wattwise.errors import VendorError
from wattwise.model import MigInstance
from wattwise.sources.nvml_calls import vendor_call, vendor_text

MIG_REFRESH_S = 60.0
MAX_INSTANCES = 8  # MIG devices per GPU: 7 on A100 and H100


@dataclass(frozen=True, slots=True)
class MigDevice:
    handle: Any
    instance: MigInstance  # without processes


@dataclass(slots=True)
class MigLayout:
    slices: int  # the GPU's slices; 0: MIG off (or not supported)
    devices: tuple[MigDevice, ...] = ()
    read_s: float = 0.0  # monotonic
    error: str | None = None  # why the instances could not be listed


def mig_layout(nvml: ModuleType, handle: Any, now_s: float) -> MigLayout:
    """The GPU's MIG instances now; MIG off where NVML says so or cannot say."""
    get_mode = getattr(nvml, "nvmlDeviceGetMigMode", None)
    try:
        current, _pending = vendor_call(nvml, get_mode, handle)
    except (VendorError, TypeError, ValueError):
        return MigLayout(0, read_s=now_s)  # pre-Ampere, or a binding without MIG
    if current != getattr(nvml, "NVML_DEVICE_MIG_ENABLE", 1):
        return MigLayout(0, read_s=now_s)
    try:
        count = vendor_call(nvml, nvml.nvmlDeviceGetMaxMigDeviceCount, handle)
        slices = int(number(count, "NVML MIG device count", 1, MAX_INSTANCES))
    except (VendorError, BadNumber, AttributeError) as exc:
        return MigLayout(7, read_s=now_s, error=f"MIG device count: {exc}")
    devices = []
    for index in range(slices):
        try:
            mig = vendor_call(nvml, nvml.nvmlDeviceGetMigDeviceHandleByIndex, handle, index)
        except (VendorError, AttributeError):
            continue  # fewer instances than slices: the rest is not partitioned
        try:
            devices.append(MigDevice(mig, _instance(nvml, mig, slices)))
        except (VendorError, BadNumber, AttributeError) as exc:
            return MigLayout(slices, tuple(devices), now_s, f"MIG device {index}: {exc}")
    return MigLayout(slices, tuple(devices), now_s)


def _instance(nvml: ModuleType, mig: Any, slices: int) -> MigInstance:
    gpu_instance = int(number(vendor_call(nvml, nvml.nvmlDeviceGetGpuInstanceId, mig), "GI", 0, 64))
    compute = int(number(vendor_call(nvml, nvml.nvmlDeviceGetComputeInstanceId, mig), "CI", 0, 64))
    uuid = vendor_text(vendor_call(nvml, nvml.nvmlDeviceGetUUID, mig))
    attributes = vendor_call(nvml, nvml.nvmlDeviceGetAttributes, mig)
    own = int(number(attributes.gpuInstanceSliceCount, "MIG slices", 1, slices))
    memory_gb = round(number(attributes.memorySizeMB, "MIG memory", 0, 2**24) / 1024)
    return MigInstance(gpu_instance, compute, uuid, f"{own}g.{memory_gb}gb", own)


def describe_mig(layout: MigLayout | None) -> str:
    """What `wattwise probe` says of a GPU's MIG mode, and what can be attributed under it."""
    if layout is None or not layout.slices:
        return ""
    if layout.error:
        return f"; MIG on, its instances cannot be listed ({layout.error}): idle energy only"
    profiles = ", ".join(
        f"{d.instance.profile} (GPU instance {d.instance.gpu_instance})" for d in layout.devices
    )
    used = sum({d.instance.gpu_instance: d.instance.slices for d in layout.devices}.values())
    return (
        f"; MIG on: {len(layout.devices)} instance(s) using {used} of {layout.slices} slices"
        f" ({profiles or 'none'}). Energy is split by slices (NVML measures the board only and"
        " samples no utilisation under MIG), or by DCGM's measured activity where"
        " nvml.dcgm_exporter_url is read (see `mig activity`); an instance's part goes to the"
        " jobs with processes on it, equally, else to the job holding it, else to idle;"
        " processes are listed per instance, which needs no privileges (the parent's list does)"
    )
