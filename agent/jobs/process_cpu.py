"""CPU time of a job that has no CPU counter of its own: on cgroup v1 Slurm nodes without
jobacct_gather/cgroup, a job's cgroups exist in freezer, memory, cpuset or devices but not in
cpuacct. Its CPU time is then the sum over its processes (/proc/<pid>/stat utime + stime),
accumulated per process so that a process that exits takes nothing away. Children's cutime
and cstime are not added: a child is a process of the job too, counted while it runs, and its
time would count twice when reaped. What this misses: what a process used in its last interval
before it exited."""

from __future__ import annotations

import os
from pathlib import Path

from wattwise.errors import CounterFileError
from wattwise.sources.sysfs import read_bytes

CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
MAX_PIDS = 65_536  # a job's processes read per tick: beyond it, the rest wait


class ProcessCpu:
    """A counter of CPU seconds for one job directory, read like a cgroup's own."""

    def __init__(self, directory: Path, procfs_root: Path) -> None:
        self.directory = directory
        self.procfs_root = procfs_root
        self._total_s = 0.0
        self._last: dict[int, float] = {}  # pid -> its CPU seconds at the last read

    def seconds(self) -> float:
        """The job's CPU seconds so far (monotonic); CounterFileError "missing" once the job's
        directory is gone."""
        pids = self._pids()
        now: dict[int, float] = {}
        for pid in pids:
            used = _process_seconds(self.procfs_root, pid)
            if used is None:
                continue  # exited since it was listed: its last reading stands
            before = self._last.get(pid)
            if before is None or used < before:  # new here, or its pid reused
                self._total_s += used
            else:
                self._total_s += used - before
            now[pid] = used
        self._last = now
        return self._total_s

    def _pids(self) -> list[int]:
        if not self.directory.is_dir():
            raise CounterFileError(f"{self.directory}: missing")
        pids: list[int] = []
        for directory, _, files in os.walk(self.directory):
            name = "cgroup.procs" if "cgroup.procs" in files else "tasks"
            try:
                text = read_bytes(f"{directory}/{name}", 1 << 20).decode()
            except CounterFileError:
                continue
            pids += [int(word) for word in text.split() if word.isdigit()]
            if len(pids) >= MAX_PIDS:
                break
        return sorted(set(pids))[:MAX_PIDS]


def _process_seconds(procfs_root: Path, pid: int) -> float | None:
    """utime + stime of a process, in seconds; None when it is gone."""
    try:
        stat = read_bytes(f"{procfs_root}/{pid}/stat", 4096).decode(errors="replace")
        fields = stat[stat.rindex(")") + 2 :].split()
        ticks = int(fields[11]) + int(fields[12])  # fields 14 and 15 of stat: utime, stime
    except (CounterFileError, ValueError, IndexError):
        return None
    return max(ticks, 0) / CLOCK_TICKS_PER_S
