"""Per tick: which jobs exist, how much CPU each used, and which job owns each GPU process.

A job seen for the first time after the first tick started since the previous tick, so its
whole CPU counter counts for this interval; at the agent's first tick every counter is only a
baseline. A job that starts and ends between two ticks is never seen: its CPU time shows up as
`system` (at most one interval per such job).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

import psutil

from wattwise.checks import U64_MAX, Rejections, number
from wattwise.jobs.discovery import Hierarchy, Listings, find_hierarchy, scan, scan_elsewhere
from wattwise.jobs.gpu_processes import GpuProcesses, gpu_holders, job_from_proc, job_key
from wattwise.jobs.metadata import JobMeta, first_pid, merged, read_meta
from wattwise.jobs.mig_activity import MigActivity
from wattwise.jobs.process_cpu import ProcessCpu
from wattwise.model import EXEC, KUBERNETES, SLURM, CpuActivity, GpuShare, GpuStatus, JobRef
from wattwise.sources.sysfs import (
    CounterFileError,
    HeldFile,
    held_file_limit,
    read_bytes,
    read_text,
)

log = logging.getLogger(__name__)


META_RETRY_MAX_S = 60.0
PROC_STAT_MAX_S = U64_MAX / 100  # /proc/stat counts u64 ticks of 1/100 s


@dataclass(frozen=True, slots=True)
class JobActivity:
    jobs: dict[str, JobRef]  # job key -> job, every job present now
    cpu: CpuActivity
    gpu_sm_samples: dict[int, dict[str, float]]  # GPU index -> job key -> SM samples
    meta: dict[str, JobMeta] = field(default_factory=dict)  # job key -> what is known of it
    gpu_holders: dict[int, str] = field(default_factory=dict)  # GPU index -> job key
    gpu_shares: dict[int, list[GpuShare]] = field(default_factory=dict)  # MIG GPUs' instances


class JobTracker:
    def __init__(
        self,
        cgroup_root: Path,
        procfs_root: Path,
        schedulers: Collection[str],
        pod_name: Callable[[str], str | None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        mig_activity: MigActivity | None = None,
    ):
        self.pod_name = pod_name
        self.clock = clock
        psutil.PROCFS_PATH = str(procfs_root)  # psutil's documented hook for another /proc
        self.procfs_root = procfs_root
        self.schedulers = frozenset(schedulers)
        self.hierarchy: Hierarchy | None = find_hierarchy(cgroup_root)
        if self.hierarchy is None:
            log.warning("no cgroup hierarchy under %s: energy is not charged to jobs", cgroup_root)
        self._cpu_s: dict[str, float] = {}  # job cgroup -> last CPU seconds
        self._node_times: tuple[float, float] | None = None
        self._gpu_processes = GpuProcesses(procfs_root, self.schedulers, mig_activity)
        self._listings = Listings()
        self._elsewhere: dict[str, Path] = {}  # v1 jobs not in cpuacct -> the controller
        # job cgroup -> (key, its CPU counter: kept open up to a share of the open-file limit)
        self._counters: dict[str, tuple[str, HeldFile | str | ProcessCpu]] = {}
        self._held_limit, self._held = held_file_limit(), 0
        self._meta: dict[str, JobMeta] = {}  # job cgroup -> metadata, read once
        self._named: dict[str, tuple[JobMeta | None, JobMeta]] = {}  # pods, with the kubelet's name
        self._meta_retry: dict[str, tuple[float, float]] = {}  # cgroup -> (next try, delay)
        self._refs: dict[str, JobRef] = {}  # job cgroup -> its ref, key fixed at first sight
        self._first = True
        # Containers and services that held jobs: when one is a job again, its counter holds
        # their CPU time, already charged to them. It restarts from a baseline.
        self._needs_baseline: set[str] = set()
        self._bad_values = Rejections(log)

    def observe(
        self, gpus: Iterable[GpuStatus] = (), gpu_power_w: Mapping[int, float] | None = None
    ) -> JobActivity:
        """This tick's jobs and what they used; `gpu_power_w`: each GPU's mean power over the
        interval (a MIG GPU's idle floor is learnt from it)."""
        now = self.clock()
        refs = self._refresh_jobs(now)
        job_cpu = self._job_cpu(refs)
        busy_s, idle_s = self._node_delta()
        self._first = False
        keys = {
            cg: self._counters[cg][0] if cg in self._counters else job_key(r)
            for cg, r in refs.items()
        }
        jobs = {keys[cg]: r for cg, r in refs.items()}
        meta: dict[str, JobMeta] = {}
        for cg, m in self._meta.items():
            key = keys[cg]
            meta[key] = merged(meta[key], m) if key in meta else m  # a pod of several cgroups
        if self.pod_name is not None:  # names can arrive later than the pod: asked every tick
            for cg, ref in refs.items():
                name = self.pod_name(ref.job_id) if ref.scheduler == KUBERNETES else None
                if name:
                    meta[keys[cg]] = self._pod_meta(cg, meta.get(keys[cg]), name)
        reserved = {key: m.cpus for key, m in meta.items() if m.cpus}
        gpus = tuple(gpus)
        cpu = CpuActivity(busy_s, idle_s, job_cpu, reserved, psutil.cpu_count() or 1)
        gpu_jobs = self._gpu_processes.jobs(gpus, jobs, self._refs, now)
        holders = gpu_holders(gpus, meta, self._bad_values)
        shares = self._gpu_processes.shares(
            gpus, self._refs, meta, self._bad_values, gpu_power_w or {}, now
        )
        return JobActivity(jobs, cpu, gpu_jobs, meta, holders, shares)

    def _refresh_jobs(self, now: float) -> dict[str, JobRef]:
        """The job cgroups present now, by cgroup; what was kept of jobs gone is forgotten."""
        found = {}
        if self.hierarchy is not None:
            demoted: set[str] = set()
            found = scan(self.hierarchy, None, self.schedulers, self._listings, now, demoted)
            # Containers that hold jobs now, and those that did and were not read since.
            self._needs_baseline = demoted | (self._needs_baseline & found.keys())
            if self.hierarchy.elsewhere and SLURM in self.schedulers:
                elsewhere = scan_elsewhere(self.hierarchy, found)
                self._elsewhere = {cg: root for cg, (_, root) in elsewhere.items()}
                found.update({cg: ref for cg, (ref, _) in elsewhere.items()})
        found = {cg: r for cg, r in found.items() if r.scheduler != EXEC or self._populated(cg)}
        known, meta_of = self._refs, self._meta
        refs = {
            cg: known[cg] if cg in known and cg in meta_of else self._identify(cg, r, now)
            for cg, r in found.items()
        }
        self._refs = refs
        if (self._counters.keys() | self._meta.keys() | self._meta_retry.keys()) - refs.keys():
            self._meta = {cg: m for cg, m in self._meta.items() if cg in refs}
            self._meta_retry = {cg: r for cg, r in self._meta_retry.items() if cg in refs}
            self._named = {cg: n for cg, n in self._named.items() if cg in refs}
            self._forget_counters(refs)  # a job gone: its descriptor is closed this tick
        return refs

    def _job_cpu(self, refs: Mapping[str, JobRef]) -> dict[str, float]:
        """Each job's CPU seconds since the last tick, by job key."""
        job_cpu: dict[str, float] = {}
        seen: dict[str, float] = {}
        last = self._cpu_s
        hierarchy = self.hierarchy
        for cgroup, ref in refs.items():
            counter = self._counters.get(cgroup)
            if counter is None:
                counter = self._counters[cgroup] = self._counter(cgroup, ref)
            key, file = counter
            try:
                if isinstance(file, ProcessCpu):
                    now_s = file.seconds()
                else:
                    raw = file.read(4096) if isinstance(file, HeldFile) else read_bytes(file, 4096)
                    now_s = hierarchy.parse_cpu_seconds(raw)
            except CounterFileError as exc:
                if "missing" not in str(exc):  # not just gone since the scan: say so, once
                    self._bad_values.reject(cgroup, f"CPU time of cgroup {cgroup}: {exc}")
                continue  # no CPU share this tick
            self._bad_values.accept(cgroup)
            seen[cgroup] = now_s
            before = last.get(cgroup)
            if before is not None and now_s >= before:
                delta = now_s - before
            elif before is not None:
                delta = now_s  # recreated at the same path: a new counter, all of it new
            elif self._first or cgroup in self._needs_baseline:
                delta = 0.0  # a baseline: its past CPU time is not this interval's
                self._needs_baseline.discard(cgroup)
            else:
                delta = now_s  # started since the last tick: all of it is this interval's
            job_cpu[key] = job_cpu.get(key, 0.0) + delta
        self._cpu_s = seen
        return job_cpu

    def _pod_meta(self, cgroup: str, base: JobMeta | None, name: str) -> JobMeta:
        """A pod's metadata (`base`: all its cgroups' merged) with the kubelet's name for it:
        the same object while neither changes, so that what is made from it is not made again
        every tick."""
        cached = self._named.get(cgroup)
        if cached is None or cached[0] is not base or cached[1].name != name:
            cached = (base, replace(base or JobMeta(), name=name))
            self._named[cgroup] = cached
        return cached[1]

    def _counter(self, cgroup: str, ref: JobRef) -> tuple[str, HeldFile | str | ProcessCpu]:
        assert self.hierarchy is not None
        if cgroup in self._elsewhere:  # no CPU counter of its own: its processes'
            directory = self._elsewhere[cgroup] / cgroup.lstrip("/")
            return job_key(ref), ProcessCpu(directory, self.procfs_root)
        path = self.hierarchy.cpu_counter(cgroup)
        if self._held >= self._held_limit:
            return job_key(ref), path  # opened and closed at each read
        self._held += 1
        return job_key(ref), HeldFile(path)

    def _forget_counters(self, present: Mapping[str, JobRef]) -> None:
        for cgroup in [cg for cg in self._counters if cg not in present]:
            _, file = self._counters.pop(cgroup)
            if isinstance(file, HeldFile):
                file.close()  # its cgroup is gone: the descriptor is not kept a tick longer
                self._held -= 1

    def close(self) -> None:
        self._forget_counters({})

    def _populated(self, cgroup: str) -> bool:
        """Whether a cgroup holds a process now. An exec job's cgroup that is empty is over,
        even if its wrapper could not remove it (killed with SIGKILL)."""
        assert self.hierarchy is not None
        directory = self.hierarchy.root / cgroup.lstrip("/")
        events = read_text(directory / "cgroup.events")  # v2 says it directly
        if events is not None:
            return "populated 1" in events
        return first_pid(directory) is not None

    def job_of_pid(self, pid: int) -> str | None:
        """The key of the job process `pid` runs in, as the tick knows it; None if none."""
        ref = job_from_proc(self.procfs_root, pid, self.schedulers)
        if ref is None or ref.scheduler not in self.schedulers:
            return None
        return job_key(self._refs.get(ref.cgroup, ref))

    def known(self, key_or_id: str) -> str | None:
        """The key of a job running now, given its key (slurm:42) or its id (42)."""
        keys = list(dict.fromkeys(job_key(r) for r in list(self._refs.values())))
        if key_or_id in keys:
            return key_or_id
        matches = [k for k in keys if k.split(":", 1)[1] == key_or_id]
        return matches[0] if len(matches) == 1 else None

    def running(self) -> list[tuple[str, JobRef, str]]:
        """(key, ref, name) of each job the last tick saw; safe to call from another thread."""
        running: dict[str, tuple[str, JobRef, str]] = {}
        for cgroup, ref in list(self._refs.items()):
            key, meta = job_key(ref), self._meta.get(cgroup)
            name = meta.name if meta else ""
            if ref.scheduler == KUBERNETES and self.pod_name is not None:
                name = self.pod_name(ref.job_id) or name
            if key not in running or not running[key][2]:  # a pod's cgroups: listed once
                running[key] = (key, ref, name)
        return list(running.values())

    def job_user(self, key: str) -> str | None:
        for cgroup, ref in list(self._refs.items()):
            if job_key(ref) == key:
                meta = self._meta.get(cgroup)
                return meta.user if meta and meta.user else None
        return None

    def _identify(self, cgroup: str, ref: JobRef, now: float) -> JobRef:
        """The job's ref with its metadata read once; its key never changes after first sight."""
        next_try, delay = self._meta_retry.get(cgroup, (0.0, 0.5))
        if cgroup not in self._meta and self.hierarchy is not None and now >= next_try:
            meta = read_meta(ref, self.hierarchy.root / cgroup.lstrip("/"), self.procfs_root)
            if meta is not None:
                self._meta[cgroup] = meta
                self._meta_retry.pop(cgroup, None)
            else:  # no readable process yet: try again soon, then less and less often
                delay = min(delay * 2, META_RETRY_MAX_S)
                self._meta_retry[cgroup] = (now + delay, delay)
        if cgroup in self._refs:
            return self._refs[cgroup]
        meta = self._meta.get(cgroup)
        if meta is not None and meta.slurm_job_id.isdigit() and not ref.job_id.isdigit():
            return replace(ref, job_id=meta.slurm_job_id)  # a SLUID: the numeric id is known
        return ref

    def _node_delta(self) -> tuple[float, float]:
        """Busy and idle CPU seconds since the last tick, summed over CPUs, from /proc/stat.
        An unreadable or nonsensical /proc/stat gives no CPU time this tick (all of the CPU
        energy then stays unattributed) and starts a new baseline."""
        origin = f"{self.procfs_root}/stat"
        try:
            times = psutil.cpu_times()
            for name, seconds in times._asdict().items():
                number(seconds, f"{origin} {name}", 0.0, PROC_STAT_MAX_S)
        except Exception as exc:  # psutil's parse of a garbled file raises anything
            self._bad_values.reject(origin, f"{origin}: {exc}")
            self._node_times = None
            return 0.0, 0.0
        self._bad_values.accept(origin)
        idle = times.idle + getattr(times, "iowait", 0.0)
        # user already contains guest time on Linux; counting it twice would inflate busy.
        total = sum(times) - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)
        previous, self._node_times = self._node_times, (total - idle, idle)
        if previous is None:
            return 0.0, 0.0
        return max(total - idle - previous[0], 0.0), max(idle - previous[1], 0.0)
