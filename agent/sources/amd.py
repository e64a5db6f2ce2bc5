"""AMD Instinct GPUs (MI200, MI300) through ROCm's amdsmi Python library, the optional extra
`amd` (docs/install.md: ROCm's own copy, /opt/rocm/share/amd_smi). The only module that imports
amdsmi.

Energy is amdsmi_get_energy_count's accumulator (ticks since the driver loaded) times its
counter_resolution (microjoules per tick, about 15.3); amdsmi before ROCm 6.4 names the
accumulator `power`, later ones `energy_accumulator`. A GPU's processes and their cumulative
GFX engine time (amdsmi_get_gpu_process_list, engine_usage.gfx in ns) split its energy as
NVML's SM samples do. Any exception a call raises costs that one figure. A node with GPUs of
both vendors is not supported: their indexes would collide.

A GPU split into compute partitions (MI300X in DPX or CPX mode) is listed by amdsmi once per
partition (XCP), and every partition answers the whole device's socket energy and power
(amdsmi's docs/conceptual/partition.md). It is one GPU here: its energy is read from the
primary partition (XCP 0) only, and split among every partition's processes. Partitions are
told apart by amdsmi_get_gpu_kfd_info's current_partition_id, else, on amdsmi without it, by
sharing one PCI device (domain:bus:device of the BDF).
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from wattwise.checks import BadNumber, Rejections, number
from wattwise.model import (
    AMDSMI,
    CounterKey,
    CounterReading,
    Finding,
    GpuProcess,
    GpuStatus,
    SourceReadout,
    SourceStatus,
)

log = logging.getLogger(__name__)
PARTITIONED = frozenset({"DPX", "TPX", "QPX", "CPX"})  # compute partition modes of several
MAX_UJ = 2.0**64 * 16  # an accumulator of u64 ticks of at most 16 uJ


def load_amdsmi() -> ModuleType | str:
    try:
        import amdsmi
    except ImportError:
        return (
            "amdsmi is not installed "
            "(into the agent's environment: pip install /opt/rocm/share/amd_smi)"
        )
    except Exception as exc:  # a broken install must not stop the agent
        return f"amdsmi cannot be imported: {type(exc).__name__}: {exc}"
    return amdsmi


@dataclass(slots=True)
class _AmdGpu:
    index: int
    handle: Any
    uuid: str
    model: str
    # (partition's position, pid) -> GFX time at the last tick
    gfx_ns: dict[tuple[int, int], float] = field(default_factory=dict)
    partitions: list[Any] = field(default_factory=list)  # secondary partitions' handles
    partition_mode: str = ""  # SPX, DPX, CPX ...

    @property
    def key(self) -> CounterKey:
        return CounterKey("gpu", str(self.index), AMDSMI)


class AmdSmiSource:
    name = AMDSMI

    def __init__(self) -> None:
        self.problem: str | None = None
        self.gpus: list[_AmdGpu] = []
        self._bad_values = Rejections(log)
        loaded = load_amdsmi()
        if isinstance(loaded, str):
            self.problem, self._smi = loaded, None
            return
        self._smi = loaded
        try:
            loaded.amdsmi_init()
            handles = list(loaded.amdsmi_get_processor_handles())
        except Exception as exc:
            self.problem = f"amdsmi did not start: {exc}"
            self._smi = None
            return
        for handle, secondaries in self._devices(handles[:64]):
            uuid = str(self._call("amdsmi_get_gpu_device_uuid", handle) or "")
            info = self._call("amdsmi_get_gpu_asic_info", handle) or {}
            model = str(info.get("market_name", "AMD GPU"))
            mode = str(self._optional("amdsmi_get_gpu_compute_partition", handle) or "")
            self.gpus.append(_AmdGpu(len(self.gpus), handle, uuid, model, {}, secondaries, mode))

    def _devices(self, handles: list[Any]) -> list[tuple[Any, list[Any]]]:
        """Each physical GPU's primary handle (partition 0) and its other partitions' handles.
        Partitions of one GPU share a PCI device (the BDF without its function); one whose
        device is unknown, or new, joins the GPU listed before it when amdsmi says it is not
        partition 0."""
        groups: dict[str, list[tuple[int | None, Any]]] = {}
        for position, handle in enumerate(handles):
            kfd = self._optional("amdsmi_get_gpu_kfd_info", handle)
            partition = kfd.get("current_partition_id") if isinstance(kfd, dict) else None
            bdf = str(self._optional("amdsmi_get_gpu_device_bdf", handle) or "")
            device = bdf.rpartition(".")[0] or f"#{position}"  # domain:bus:device
            if partition and device not in groups and groups:
                device = next(reversed(groups))
            groups.setdefault(device, []).append((partition, handle))
        devices = []
        for members in groups.values():
            primary = next((h for p, h in members if p == 0), members[0][1])
            devices.append((primary, [h for _, h in members if h is not primary]))
        return devices

    def _optional(self, name: str, *args: Any) -> Any:
        """A call older amdsmi lacks: None without a word."""
        try:
            return getattr(self._smi, name)(*args)
        except Exception:
            return None

    def _call(self, name: str, *args: Any) -> Any:
        try:
            return getattr(self._smi, name)(*args)
        except Exception as exc:  # AmdSmiLibraryException, a missing call, a ctypes fault
            self._bad_values.reject(name, f"{name}: {exc}")
            return None

    def read(self) -> SourceReadout:
        counters, statuses = [], []
        for gpu in self.gpus:
            now = time.monotonic()
            raw_uj, error = self._energy_uj(gpu)
            counters.append(CounterReading(gpu.key, raw_uj, None, now, True, error))
            if error is not None:
                statuses.append(GpuStatus(gpu.index, gpu.uuid, gpu.model, False, error, AMDSMI))
                continue
            power = self._call("amdsmi_get_power_info", gpu.handle) or {}
            statuses.append(
                GpuStatus(
                    gpu.index,
                    gpu.uuid,
                    gpu.model,
                    True,
                    None,
                    AMDSMI,
                    power_w=_watts(power),
                    processes=self._processes(gpu),
                )
            )
        up = sum(s.up for s in statuses)
        detail = f"{up} of {len(statuses)} AMD GPUs up"
        status = (SourceStatus(AMDSMI, up > 0, detail),) if statuses else ()
        return SourceReadout(counters=tuple(counters), gpus=tuple(statuses), status=status)

    def _energy_uj(self, gpu: _AmdGpu) -> tuple[int | None, str | None]:
        count = self._call("amdsmi_get_energy_count", gpu.handle)
        if not isinstance(count, dict):
            return None, "energy count: not read"
        ticks = count.get("energy_accumulator", count.get("power"))
        try:
            resolution = number(count.get("counter_resolution"), "amdsmi resolution", 0.0, 16.0)
            energy = number(ticks, f"amdsmi energy of GPU {gpu.index}", 0, 2**64) * resolution
            return int(number(energy, f"amdsmi energy of GPU {gpu.index}", 0, MAX_UJ)), None
        except BadNumber as exc:
            return None, f"energy count: {exc}"

    def _processes(self, gpu: _AmdGpu) -> tuple[GpuProcess, ...]:
        """Every partition's processes with their GFX time since the last tick (a process on
        two partitions: the sum of its time on each)."""
        found: dict[tuple[int, int], float] = {}  # (partition's position, pid) -> GFX time
        for position, handle in enumerate((gpu.handle, *gpu.partitions)):
            for pid, gfx in self._gfx_times(handle).items():
                found[(position, pid)] = gfx
        samples: dict[int, float] = {}
        for (position, pid), gfx in found.items():
            busy = max(gfx - gpu.gfx_ns.get((position, pid), gfx), 0.0)
            samples[pid] = samples.get(pid, 0.0) + busy
        gpu.gfx_ns = found
        return tuple(GpuProcess(pid, busy) for pid, busy in sorted(samples.items()))

    def _gfx_times(self, handle: Any) -> dict[int, float]:
        listed = self._call("amdsmi_get_gpu_process_list", handle) or []
        found: dict[int, float] = {}
        for item in listed[:4096]:
            info = item if isinstance(item, dict) else None
            if info is None:  # older amdsmi: process handles, each asked for its info
                info = self._call("amdsmi_get_gpu_process_info", handle, item)
            try:
                pid = int(number(info["pid"], "amdsmi pid", 1, 1 << 22))
                gfx = number(info.get("engine_usage", {}).get("gfx", 0), "amdsmi gfx", 0, 2**64)
            except (BadNumber, KeyError, TypeError, AttributeError):
                continue
            found[pid] = gfx
        return found

    def probe(self) -> list[Finding]:
        if self._smi is None:
            return [Finding(AMDSMI, "-", "amdsmi", True, f"no AMD GPU read: {self.problem}")]
        findings = []
        for gpu in self.gpus:
            raw, error = self._energy_uj(gpu)
            detail = f"{gpu.model}, energy counter" if raw is not None else f"down: {error}"
            ok = raw is not None
            if gpu.partition_mode:
                detail += f", compute partition {gpu.partition_mode}"
            if gpu.partition_mode in PARTITIONED and not gpu.partitions:
                ok = False
                detail += (
                    ": its partitions could not be told apart (no kfd partition id, no PCI"
                    " address), so each may be counted as a whole GPU"
                )
            if gpu.partitions:
                detail += (
                    f": {len(gpu.partitions) + 1} partitions, one GPU here (energy read once,"
                    " from partition 0, and split among every partition's processes by GFX time)"
                )
            findings.append(Finding(AMDSMI, f"gpu {gpu.index}", gpu.uuid, ok, detail))
        return findings

    def close(self) -> None:
        if self._smi is not None:
            with contextlib.suppress(Exception):
                self._smi.amdsmi_shut_down()
            self._smi = None


def _watts(power: dict) -> float | None:
    """socket_power (ROCm >= 7), current_socket_power (MI300), average_socket_power (MI200);
    an 'N/A' is skipped."""
    for name in ("socket_power", "current_socket_power", "average_socket_power"):
        value = power.get(name)
        if isinstance(value, int | float) and 0 <= value <= 1e5:
            return float(value)
    return None
