"""Finds job cgroups under <cgroup-root> and reads each one's own CPU time.

The walk stops at a job's top directory, since its CPU counter already includes every step,
task and container below it, so a tick visits roughly one directory per job plus the slices
above them. Services, and containers that are jobs, can hold another scheduler's jobs (a
quadlet service, a kind node): they are listed every LISTING_REFRESH_S, and the innermost job
wins. CPU time comes from the cgroup (v2 `cpu.stat` usage_usec, v1 `cpuacct.usage`),
never from scanning processes.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Collection, Iterable
from dataclasses import dataclass
from pathlib import Path

from wattwise.jobs.cgroups import classify
from wattwise.model import DOCKER, PODMAN, SYSTEMD, JobRef
from wattwise.sources.sysfs import CounterFileError, parse_uint, read_bytes

V1_CPU_CONTROLLERS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")
V1_JOB_CONTROLLERS = ("freezer", "memory", "cpuset", "devices")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """The cgroup tree CPU time is read from."""

    root: Path
    version: int  # 1: a cpuacct controller mount; 2: the unified tree
    # v1: the other controllers Slurm makes job directories in (proctrack/cgroup: freezer;
    # task/cgroup: cpuset, memory, devices), where a job missing from cpuacct is found.
    elsewhere: tuple[Path, ...] = ()

    def cpu_seconds(self, cgroup: str) -> float:
        """CPU time a cgroup and its descendants have used, in seconds."""
        return self.read_cpu_seconds(self.cpu_counter(cgroup))

    def cpu_counter(self, cgroup: str) -> str:
        """The file that holds a cgroup's CPU time, as a plain string path (kept by the
        tracker: it is read for every job every tick)."""
        name = "cpuacct.usage" if self.version == 1 else "cpu.stat"
        return f"{self.root}/{cgroup.lstrip('/')}/{name}"

    def read_cpu_seconds(self, counter: str) -> float:
        """CPU seconds from a file `cpu_counter` named: plain os calls, no pathlib."""
        return self.parse_cpu_seconds(read_bytes(counter, 4096))

    def parse_cpu_seconds(self, raw: bytes) -> float:
        """CPU seconds from the bytes of a file `cpu_counter` named."""
        if self.version == 1:
            return parse_uint(raw) / 1e9
        return _usage_usec(raw) / 1e6


def find_hierarchy(cgroup_root: Path) -> Hierarchy | None:
    """v2 at the root; else a v1 cpuacct mount (hybrid hosts keep cpu there); else unified/."""
    if (cgroup_root / "cgroup.controllers").is_file():
        return Hierarchy(cgroup_root, 2)
    for name in V1_CPU_CONTROLLERS:
        if (cgroup_root / name / "cpuacct.usage").is_file():
            elsewhere = tuple(
                cgroup_root / c for c in V1_JOB_CONTROLLERS if (cgroup_root / c).is_dir()
            )
            return Hierarchy(cgroup_root / name, 1, elsewhere)
    if (cgroup_root / "unified" / "cgroup.controllers").is_file():
        return Hierarchy(cgroup_root / "unified", 2)
    return None


# Schedulers whose job can hold another scheduler's jobs: a kind node is a docker container
# with pods inside, a quadlet service holds a podman container. The innermost job wins.
OUTER = frozenset({DOCKER, PODMAN, SYSTEMD})
LISTING_REFRESH_S = 10.0  # how often a directory that rarely holds jobs is listed again
MAX_CACHED = 16_384  # listings kept; beyond four times this the cache starts again


class Listings:
    """The subdirectories of directories that rarely hold a job (systemd services, and what is
    inside a container that is a job), listed again every LISTING_REFRESH_S instead of every
    tick. Listed every tick: one that led to a job at the last walk, and one recreated (a new
    inode) since it was listed."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[int, float, list[tuple[str, int]]]] = {}
        self._hot: set[str] = set()  # directories above a job found by the last walk

    def cached(self, relative: str, inode: int, now_s: float) -> list[tuple[str, int]] | None:
        """The directory's last listing, while it may stand in for a new one."""
        cached = self._cache.get(relative)
        if cached is None or cached[0] != inode or relative in self._hot:
            return None
        return cached[2] if now_s - cached[1] < LISTING_REFRESH_S else None

    def keep(self, relative: str, inode: int, now_s: float, listing: list[tuple[str, int]]) -> None:
        self._cache[relative] = (inode, now_s, listing)

    def walked(self, jobs: Iterable[str]) -> None:
        """Keeps the directories above the jobs just found hot, and forgets what is gone."""
        hot = set()
        for path in jobs:
            while path:
                path = path.rpartition("/")[0]
                hot.add(path)
        self._hot = hot
        if len(self._cache) > 4 * MAX_CACHED:
            self._cache.clear()


def scan(
    hierarchy: Hierarchy,
    listed: list[str] | None = None,
    schedulers: Collection[str] | None = None,
    listings: Listings | None = None,
    now_s: float = 0.0,
    demoted: set[str] | None = None,
) -> dict[str, JobRef]:
    """Every job cgroup in the hierarchy of the given schedulers (all by default), by its
    relative path. `listed` collects the directories read, for tests of the pruning;
    `demoted` the containers and services that are not jobs now because they hold one."""
    listings = listings if listings is not None else Listings()
    jobs: dict[str, JobRef] = {}
    outer: list[str] = []
    pending: list[tuple[str, int, bool]] = [("", -1, False)]  # (path, inode, listed rarely)
    while pending:
        relative, inode, rarely = pending.pop()
        children = listings.cached(relative, inode, now_s) if rarely else None
        if children is None:
            if listed is not None:
                listed.append(relative)
            children = _subdirectories(f"{hierarchy.root}/{relative.lstrip('/')}")
            if rarely and children is not None:
                listings.keep(relative, inode, now_s, children)
        for name, child_inode in children or ():
            child = f"{relative}/{name}"
            ref = classify(child)
            if ref is not None and ref.cgroup == child:
                if schedulers is None or ref.scheduler in schedulers:
                    jobs[child] = ref
                    if ref.scheduler in OUTER:
                        outer.append(child)
                if ref.scheduler in OUTER:  # counted or not, it may hold jobs of another kind
                    pending.append((child, child_inode, True))
            elif ref is not None:
                pending.append((child, child_inode, True))  # inside a container: nested jobs
            elif may_hold_jobs(name):
                pending.append((child, child_inode, rarely))
            elif name.endswith(".service"):
                pending.append((child, child_inode, True))
    if outer:  # a job that holds another one is not a job: the innermost wins
        paths = sorted(jobs)
        for path in outer:
            below = bisect.bisect_left(paths, f"{path}/")
            if below < len(paths) and paths[below].startswith(f"{path}/"):
                del jobs[path]
                if demoted is not None:
                    demoted.add(path)
    listings.walked(jobs)
    return jobs


def scan_elsewhere(hierarchy: Hierarchy, known: Collection[str]) -> dict[str, tuple[JobRef, Path]]:
    """Slurm jobs that v1 controllers other than cpuacct hold and cpuacct does not (with
    jobacct_gather/linux), by relative path, with the controller they were found in. Only
    Slurm's own top directories (/slurm, /slurm_<node>) are walked."""
    found: dict[str, tuple[JobRef, Path]] = {}
    for root in hierarchy.elsewhere:
        tops = [name for name, _ in _subdirectories(str(root)) or () if name.startswith("slurm")]
        for top in tops:
            for uid, _ in _subdirectories(f"{root}/{top}") or ():
                for job, _ in _subdirectories(f"{root}/{top}/{uid}") or ():
                    path = f"/{top}/{uid}/{job}"
                    ref = classify(path)
                    if ref is not None and ref.cgroup == path and path not in known:
                        found.setdefault(path, (ref, root))
    return found


def _subdirectories(directory: str) -> list[tuple[str, int]] | None:
    try:
        with os.scandir(directory) as entries:
            return [(e.name, e.inode()) for e in entries if e.is_dir(follow_symlinks=False)]
    except OSError:
        return None  # removed while we looked, or unreadable: nothing to find there


# systemd units that are leaves for every scheduler wattwise knows: a session, a service or a
# mount holds no job below it, however many cgroups it has. Exceptions are listed every tick:
# Slurm's slurmstepd.scope (also <node>_slurmstepd.scope) and a user's manager,
# user@<uid>.service (rootless containers, `wattwise exec` under a user's systemd). A service
# is listed every LISTING_REFRESH_S: containerd.service can hold pods (the systemd driver's
# "slice:cri-containerd:id" form under runc's cgroupfs driver), a quadlet service a container.
_LEAF_UNITS = (".scope", ".service", ".mount", ".socket", ".swap", ".device", ".target")


def may_hold_jobs(name: str) -> bool:
    """Whether a directory that is not itself a job is listed every tick for jobs below it."""
    if not name.endswith(_LEAF_UNITS):
        return True
    return name.endswith("slurmstepd.scope") or name.startswith("user@")


def _usage_usec(cpu_stat: bytes) -> int:
    raw = b"\n" + cpu_stat  # usage_usec is the first line, but need not be
    start = raw.find(b"\nusage_usec ")
    if start < 0:
        raise CounterFileError("no usage_usec line in cpu.stat")
    start += len(b"\nusage_usec ")
    end = raw.find(b"\n", start)
    try:
        return parse_uint(raw[start:] if end < 0 else raw[start:end])
    except CounterFileError as exc:
        raise CounterFileError(f"usage_usec: {exc}") from None
