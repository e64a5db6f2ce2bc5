"""Who each job is, for the ledger's jobs table and for /metrics: each job as last identified,
its name and owner (user, team), and when it was first and last seen."""

from __future__ import annotations

import math
from collections.abc import Container, Mapping

from wattwise.model import JobSeen


class JobIdentities:
    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self.owners: dict[str, tuple[str, str]] = {}  # job key -> (user, team)
        self._seen: dict[str, JobSeen] = {}
        self._first: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._seen_given: Mapping[str, JobSeen] | None = None
        self._owners_given: Mapping[str, tuple[str, str]] | None = None

    def note(
        self,
        now_unix_s: float,
        seen: Mapping[str, JobSeen] | None,
        owners: Mapping[str, tuple[str, str]] | None,
    ) -> None:
        """The daemon hands the same mappings while no job's identity changed: then there is
        nothing to look at, for any number of jobs. A job's last sight never goes back: after
        the wall clock is stepped back it holds until the clock passes it, so the job's
        runtime (an exported counter) never drops."""
        if seen is not None and seen is not self._seen_given:
            self._seen_given = seen
            for key, job in seen.items():
                if self._seen.get(key) is not job:
                    self._seen[key] = job
                    self._first.setdefault(key, now_unix_s)
                    if job.name:
                        self.names[key] = job.name
        if seen:
            last = self._last
            for key in seen:
                if last.get(key, -math.inf) < now_unix_s:
                    last[key] = now_unix_s
        if owners is not None and owners is not self._owners_given:
            self._owners_given = owners
            self.owners.update({k: v for k, v in owners.items() if any(v)})

    def resume(self, seen_times: Mapping[str, tuple[float, float]]) -> None:
        """When the ledger first and last saw these jobs: their runtime continues across
        restarts, and does not drop when this process starts with the clock behind the last."""
        for key, (first, last) in seen_times.items():
            self._first[key] = first
            self._last[key] = max(self._last.get(key, last), last)

    def runtime_s(self, key: str) -> float:
        """Seconds from a job's first sight to its last, as the ledger's jobs row has them."""
        first = self._first.get(key)
        return 0.0 if first is None else max(self._last.get(key, first) - first, 0.0)

    def rows(
        self, ended: Container[str], ended_unsaved: Container[str]
    ) -> dict[str, tuple[JobSeen, float, float]]:
        """(job, first seen, last seen) of every job running, or ended since the last commit:
        an ended job's row stays ended."""
        first, last = self._first, self._last
        return {
            key: (job, first[key], last.get(key, first[key]))
            for key, job in self._seen.items()
            if key not in ended or key in ended_unsaved
        }

    def forget(self, key: str) -> None:
        """Past its grace period: its row is ended, never written again."""
        for known in (self.names, self.owners, self._seen, self._first, self._last):
            known.pop(key, None)
        self._seen_given = None
