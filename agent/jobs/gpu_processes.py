"""Which job each GPU process runs in (from /proc/<pid>/cgroup), and which job holds each GPU
(from what the jobs' environments claim)."""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Collection, Iterable, Mapping
from pathlib import Path

from wattwise.attribution import mig_fractions
from wattwise.checks import Rejections
from wattwise.jobs.cgroups import classify
from wattwise.jobs.discovery import OUTER
from wattwise.jobs.metadata import JobMeta
from wattwise.jobs.mig_activity import MigActivity
from wattwise.model import GpuShare, GpuStatus, JobRef
from wattwise.sources.sysfs import CounterFileError, read_bytes

# A GPU process listed tick after tick is the same process: its job is looked up when it first
# appears and again this often, in case its pid was reused between two listings.
GPU_PID_RECHECK_S = 60.0
FLOOR_HOURS = 24
MIN_FLOOR_W = 1.0


def job_key(ref: JobRef) -> str:
    return f"{ref.scheduler}:{ref.job_id}"


class GpuProcesses:
    def __init__(
        self,
        procfs_root: Path,
        schedulers: Collection[str],
        mig_activity: MigActivity | None = None,
    ) -> None:
        """`mig_activity`: dcgm-exporter's reading of MIG instances' activity, if configured."""
        self.mig_activity = mig_activity
        self.procfs_root = procfs_root
        self.schedulers = schedulers
        self._pids: dict[int, JobRef | None] = {}  # pid listed last tick -> its job
        self._checked_s = -math.inf
        self._floors = PowerFloors()

    def jobs(
        self,
        gpus: Iterable[GpuStatus],
        jobs: dict[str, JobRef],
        by_cgroup: Mapping[str, JobRef],
        now: float,
    ) -> dict[int, dict[str, float]]:
        """GPU index -> job key -> SM samples of its processes. A GPU job the cgroup walk did
        not reach is added to `jobs`."""
        recheck = now - self._checked_s >= GPU_PID_RECHECK_S
        if recheck:
            self._checked_s = now
        cached, listed = self._pids, {}
        result: dict[int, dict[str, float]] = {}
        for gpu in gpus:
            per_job: dict[str, float] = {}
            for process in gpu.processes:
                pid = process.pid
                if pid in listed:
                    ref = listed[pid]
                elif pid in cached and not recheck:
                    ref = listed[pid] = cached[pid]
                else:  # new since the last tick: one read of /proc/<pid>/cgroup
                    ref = job_from_proc(self.procfs_root, pid, self.schedulers)
                    if ref is UNREADABLE:
                        continue  # exited since NVML listed it: asked again if listed again
                    listed[pid] = ref
                if ref is None:
                    continue  # not in any job
                if ref.scheduler not in self.schedulers:
                    continue
                ref = by_cgroup.get(ref.cgroup, ref)  # the key the cgroup walk gave it
                key = job_key(ref)
                jobs.setdefault(key, ref)  # a GPU job the cgroup walk did not reach
                per_job[key] = per_job.get(key, 0.0) + process.sm_samples
            if per_job:
                result[gpu.index] = per_job
        self._pids = listed
        return result

    def shares(
        self,
        gpus: Iterable[GpuStatus],
        by_cgroup: Mapping[str, JobRef],
        meta: Mapping[str, JobMeta],
        rejections: Rejections,
        power_w: Mapping[int, float],
        now_s: float,
    ) -> dict[int, list[GpuShare]]:
        """GPU index -> its MIG instances' parts (attribution.mig_fractions: by slices, or by
        DCGM's measured activity where it was read), the jobs with processes on each (an equal
        split: NVML samples nothing under MIG), and the job the scheduler gave it (by its MIG
        UUID). `power_w`: each GPU's mean power over this interval. Runs after jobs(), whose
        pid lookups it reuses."""
        gpus = [gpu for gpu in gpus if gpu.mig_slices]
        claims = _claims(meta, {i.uuid for g in gpus for i in g.mig})
        activity = self.mig_activity
        if activity is not None and gpus:
            activity.start([gpu.uuid for gpu in gpus])  # read once a GPU in MIG mode is seen
        result: dict[int, list[GpuShare]] = {}
        for gpu in gpus:
            busy = activity.of_gpu(gpu.uuid) if activity is not None else {}
            floor = self._floors.ratio(gpu.uuid, power_w.get(gpu.index), now_s)
            fractions = mig_fractions(gpu.mig, gpu.mig_slices, busy, floor)
            parts = []
            for instance, fraction in zip(gpu.mig, fractions, strict=True):
                samples: dict[str, float] = {}
                for process in instance.processes:
                    ref = self._pids.get(process.pid)
                    if (
                        ref is not None
                        and ref is not UNREADABLE
                        and ref.scheduler in self.schedulers
                    ):
                        samples[job_key(by_cgroup.get(ref.cgroup, ref))] = 0.0
                holder = _one_holder(claims.get(instance.uuid, set()), instance.uuid, rejections)
                parts.append(GpuShare(fraction, samples, holder))
            result[gpu.index] = parts
        return result


class PowerFloors:
    """Each MIG GPU's idle floor: the lowest mean power it drew over the last FLOOR_HOURS (kept
    as hourly minima, so one low reading leaves after a day), readings under MIN_FLOOR_W
    ignored (a counter that stalled one interval is no floor)."""

    def __init__(self) -> None:
        self._minima: dict[str, deque[tuple[int, float]]] = {}  # GPU UUID -> (hour, min W)

    def ratio(self, uuid: str, power_w: float | None, now_s: float) -> float:
        """The floor over `power_w`: 1.0 (all floor) until the GPU was seen at two levels."""
        if power_w is None or not (MIN_FLOOR_W <= power_w < math.inf):
            return 1.0
        hour = int(now_s // 3600)
        minima = self._minima.setdefault(uuid, deque())
        if minima and minima[-1][0] == hour:
            minima[-1] = (hour, min(minima[-1][1], power_w))
        else:
            minima.append((hour, power_w))
        while minima[0][0] <= hour - FLOOR_HOURS:
            minima.popleft()
        return min(watts for _, watts in minima) / power_w


def _claims(meta: Mapping[str, JobMeta], uuids: set[str]) -> dict[str, set[str]]:
    """MIG UUID -> the jobs whose environment names it."""
    claims: dict[str, set[str]] = {}
    for key, m in meta.items():
        for uuid in m.gpu_uuids:
            if uuid in uuids:
                claims.setdefault(uuid, set()).add(key)
    return claims


def _one_holder(keys: set[str], what: str, rejections: Rejections) -> str | None:
    if len(keys) == 1:
        return next(iter(keys))
    if keys:
        rejections.reject(
            f"{what} claims",
            f"{what} is claimed by {', '.join(sorted(keys))}: no holder, its idle energy stays "
            "unattributed",
        )
    return None


def gpu_holders(
    gpus: tuple[GpuStatus, ...], meta: Mapping[str, JobMeta], rejections: Rejections
) -> dict[int, str]:
    """GPU index -> the job that holds it, from what each job's environment claims. Claims
    count only for GPUs that exist; a GPU that several jobs claim has no holder (a job
    cannot take over another's GPU by naming it)."""
    by_uuid = {g.uuid: g.index for g in gpus}
    present = set(by_uuid.values())
    claims: dict[int, set[str]] = {}
    for key, m in meta.items():
        for index in (*m.gpus, *(by_uuid.get(u, -1) for u in m.gpu_uuids)):
            if index in present:
                claims.setdefault(index, set()).add(key)
    holders = {}
    for index, keys in claims.items():
        holder = _one_holder(keys, f"GPU {index}", rejections)
        if holder is not None:
            holders[index] = holder
    return holders


UNREADABLE = JobRef("", "", "")  # a process whose /proc/<pid>/cgroup could not be read


def job_from_proc(
    procfs_root: Path, pid: int, schedulers: Collection[str] | None = None
) -> JobRef | None:
    """The job a process is in, None when it is in none, UNREADABLE when it cannot be told.
    On cgroup v1 each controller has a line, and they differ: the first may name slurmd.service
    while cpuacct names the Slurm job. Of the lines that name a job of a wanted scheduler, the
    first that is not a container or a service wins (a pod inside a kind node's container
    names both: classify gives the innermost job of one path); else the first that is."""
    try:
        lines = read_bytes(f"{procfs_root}/{pid}/cgroup", 65536).decode(errors="replace")
    except CounterFileError:
        return UNREADABLE  # exited, or not ours to read
    found = None
    for line in lines.splitlines():  # "0::/path" on v2, "4:cpu,cpuacct:/path" on v1
        ref = classify(line.split(":", 2)[-1])
        if ref is None or (schedulers is not None and ref.scheduler not in schedulers):
            continue
        if ref.scheduler not in OUTER:
            return ref
        found = found or ref  # a service or a container: a later line may name a job inside
    return found
