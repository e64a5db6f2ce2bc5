"""Stand-in for ROCm's `amdsmi` Python library, for machines without an AMD GPU: one MI300X
when FAKE_AMDSMI_STATE names a JSON state file (or configure() is called), no GPU otherwise, so
that the fakes directory on a test's path adds no AMD GPU to tests that do not ask for one.

State: {"gpus": [{"uuid", "market_name", "energy_ticks", "resolution_uj", "power_w",
"processes": [{"pid", "gfx_ns"}], "partition", "partition_id", "bdf", "legacy": bool}]}. `legacy`
answers as amdsmi before ROCm 6.4: the accumulator under "power", processes as handles asked
one by one, and no amdsmi_get_gpu_kfd_info. A GPU in CPX or DPX mode is one entry per partition
(XCP), as amdsmi lists them: each answers the whole device's socket energy and power; partition
0 is the primary one (amdsmi's docs/conceptual/partition.md).
Return shapes follow ROCm/amdsmi py-interface/amdsmi_interface.py.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any


class AmdSmiException(Exception):
    pass


class AmdSmiLibraryException(AmdSmiException):
    def __init__(self, err_code: int) -> None:
        super().__init__(f"amdsmi error {err_code}")
        self.err_code = err_code
        self.err_info = f"amdsmi error {err_code}"


AMDSMI_STATUS_NOT_SUPPORTED = 2

_state: dict[str, Any] | None = None


def configure(state: dict[str, Any] | None) -> None:
    global _state
    _state = state


def mi300x(**extra: Any) -> dict[str, Any]:
    gpu = {
        "uuid": "9cff74a1-0000-1000-80e9-5d2a6ea4f7b3",
        "market_name": "AMD Instinct MI300X",
        "energy_ticks": 65_536_000,
        "resolution_uj": 15.259,
        "power_w": 750,
        "processes": [],
        "partition": "SPX",
    }
    gpu.update(extra)
    return gpu


def _current() -> dict[str, Any]:
    if _state is not None:
        return _state
    path = os.environ.get("FAKE_AMDSMI_STATE")
    if not path:
        return {"gpus": []}
    with open(path) as f:
        return json.load(f)


@dataclass(frozen=True)
class amdsmi_processor_handle:
    index: int


def _gpu(handle: amdsmi_processor_handle) -> dict[str, Any]:
    gpus = _current()["gpus"]
    if handle.index >= len(gpus) or gpus[handle.index].get("lost"):
        raise AmdSmiLibraryException(1)
    return gpus[handle.index]


def amdsmi_init(flag: int = 0) -> None:
    if _current().get("init_error"):
        raise AmdSmiLibraryException(_current()["init_error"])


def amdsmi_shut_down() -> None:
    pass


def amdsmi_get_processor_handles() -> list[amdsmi_processor_handle]:
    return [amdsmi_processor_handle(i) for i in range(len(_current()["gpus"]))]


def amdsmi_get_gpu_device_uuid(handle: amdsmi_processor_handle) -> str:
    return _gpu(handle)["uuid"]


def amdsmi_get_gpu_asic_info(handle: amdsmi_processor_handle) -> dict[str, Any]:
    return {"market_name": _gpu(handle)["market_name"], "vendor_id": "0x1002"}


def amdsmi_get_energy_count(handle: amdsmi_processor_handle) -> dict[str, Any]:
    gpu = _gpu(handle)
    name = "power" if gpu.get("legacy") else "energy_accumulator"
    return {name: gpu["energy_ticks"], "counter_resolution": gpu["resolution_uj"], "timestamp": 1}


def amdsmi_get_power_info(handle: amdsmi_processor_handle) -> dict[str, Any]:
    watts = _gpu(handle)["power_w"]
    return {"socket_power": watts, "current_socket_power": watts, "average_socket_power": "N/A"}


def amdsmi_get_gpu_process_list(handle: amdsmi_processor_handle) -> list[Any]:
    gpu = _gpu(handle)
    if gpu.get("legacy"):
        return [p["pid"] for p in gpu["processes"]]  # handles, asked one by one
    return [_process(p) for p in gpu["processes"]]


def amdsmi_get_gpu_process_info(handle: amdsmi_processor_handle, process: int) -> dict[str, Any]:
    (found,) = [p for p in _gpu(handle)["processes"] if p["pid"] == process]
    return _process(found)


def _process(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": "python3",
        "pid": p["pid"],
        "mem": 1 << 30,
        "engine_usage": {"gfx": p["gfx_ns"], "enc": 0},
        "memory_usage": {"gtt_mem": 0, "cpu_mem": 0, "vram_mem": 1 << 30},
    }


def amdsmi_get_gpu_compute_partition(handle: amdsmi_processor_handle) -> str:
    return _gpu(handle)["partition"]


def amdsmi_get_gpu_kfd_info(handle: amdsmi_processor_handle) -> dict[str, Any]:
    gpu = _gpu(handle)
    if gpu.get("legacy"):
        raise AttributeError("module 'amdsmi' has no attribute 'amdsmi_get_gpu_kfd_info'")
    return {"kfd_id": 1000 + handle.index, "node_id": 2 + handle.index,
            "current_partition_id": gpu.get("partition_id", 0)}  # fmt: skip


def amdsmi_get_gpu_device_bdf(handle: amdsmi_processor_handle) -> str:
    return _gpu(handle).get("bdf", f"0000:{0x0C + 0x10 * handle.index:02x}:00.0")
