"""Finds job cgroups under <cgroup-root> and reads each one's own CPU time.

The walk stops at a job's top directory, since its CPU counter already includes every step,
task and container below it, so a tick visits roughly one directory per job plus the slices
above them. CPU time comes from the cgroup (v2 `cpu.stat` usage_usec, v1 `cpuacct.usage`),
never from scanning processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wattwise.jobs.cgroups import classify
from wattwise.model import JobRef
from wattwise.sources.sysfs import CounterFileError, parse_uint, read_bytes

V1_CPU_CONTROLLERS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


@dataclass(frozen=True, slots=True)
class Hierarchy:
    """The cgroup tree CPU time is read from."""

    root: Path
    version: int  # 1: a cpuacct controller mount; 2: the unified tree

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
            return Hierarchy(cgroup_root / name, 1)
    if (cgroup_root / "unified" / "cgroup.controllers").is_file():
        return Hierarchy(cgroup_root / "unified", 2)
    return None


def scan(hierarchy: Hierarchy, listed: list[str] | None = None) -> dict[str, JobRef]:
    """Every job cgroup in the hierarchy, by its relative path. `listed` collects the
    directories read, for tests of the pruning."""
    jobs: dict[str, JobRef] = {}
    pending = [""]
    while pending:
        relative = pending.pop()
        if listed is not None:
            listed.append(relative)
        try:
            with os.scandir(f"{hierarchy.root}/{relative.lstrip('/')}") as entries:
                children = [e.name for e in entries if e.is_dir(follow_symlinks=False)]
        except OSError:
            continue  # removed while we looked, or unreadable: nothing to find there
        for name in children:
            child = f"{relative}/{name}"
            ref = classify(child)
            if ref is None:
                if may_hold_jobs(name):
                    pending.append(child)
            elif ref.cgroup == child:
                jobs[child] = ref
    return jobs


# systemd units that are leaves for every scheduler wattwise knows: a session, a service or a
# mount holds no job below it, however many cgroups it has. Two exceptions hold jobs: Slurm's
# slurmstepd.scope (also <node>_slurmstepd.scope) and a user's manager, user@<uid>.service
# (rootless containers, `wattwise exec` under a user's systemd).
_LEAF_UNITS = (".scope", ".service", ".mount", ".socket", ".swap", ".device", ".target")


def may_hold_jobs(name: str) -> bool:
    """Whether a directory that is not itself a job can have jobs below it."""
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
