"""Running per-job totals for export: seeded from the ledger, so counters never restart at zero
when the agent does, and kept on /metrics for a grace period after a job ends."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping

from agent.carbon.embodied import EmbodiedSplit
from agent.jobs.cgroups import JobRef
from agent.model import EmbodiedStatus, JobEnergy, JobView, Totals, UnattributedEnergy

Key = tuple[str, str, str]  # domain, source, state


class JobAccounts:
    def __init__(self, grace_s: float, totals: Totals | None = None) -> None:
        self.grace_s = grace_s
        self.gpu_use_j: dict[str, float] = {
            "active": 0.0,
            "allocated_idle": 0.0,
            "unallocated_idle": 0.0,
        }
        self._embodied_rates = (0.0, 0.0)  # reserved, unreserved g/s over the last interval
        self._refs: dict[str, JobRef] = {}
        self._power_w: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._names: dict[str, str] = {}
        self._owners: dict[str, tuple[str, str]] = {}  # job key -> (user, team)
        self.reseed(totals or Totals())

    def reseed(self, totals: Totals) -> None:
        """Every running total from the ledger's: at startup, and when a ledger that could not
        be opened then opens later (what was counted meanwhile is in it by then), so that what
        /metrics exports is what the ledger holds."""
        self._totals: dict[str, dict[Key, float]] = defaultdict(lambda: defaultdict(float))
        for (job, domain, source, state), joules in totals.energy_j.items():
            self._totals[job][(domain, source, state)] = joules
        self._unattributed: dict[tuple[str, str, str], float] = defaultdict(
            float, totals.unattributed_j
        )
        self._carbon: dict[str, dict[tuple[str, str], float]] = defaultdict(
            lambda: defaultdict(float)
        )
        for (job, domain, source, _state), grams in totals.carbon_g.items():
            self._carbon[job][(domain, source)] += grams
        self.node_carbon_g = totals.node_carbon_g
        self._embodied: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
        for (job, component), grams in totals.embodied_g.items():
            self._embodied[job][component] += grams
        # All grams ever charged, ended jobs' too: the node's embodied counter never drops.
        self.reserved_embodied_g = totals.reserved_embodied_g
        self._unreserved: dict[str, float] = defaultdict(float, totals.unreserved_g)

    def apply(
        self,
        now_unix_s: float,
        elapsed_s: float,
        jobs: Mapping[str, JobRef],
        charged: Iterable[JobEnergy],
        left: Iterable[UnattributedEnergy],
        names: Mapping[str, str] | None = None,
        embodied: EmbodiedSplit | None = None,
        owners: Mapping[str, tuple[str, str]] | None = None,
    ) -> list[str]:
        """Adds one tick; returns the jobs that ended since the last one."""
        self._names.update({k: v for k, v in (names or {}).items() if v})
        self._owners.update({k: v for k, v in (owners or {}).items() if any(v)})
        ended = [key for key in self._refs if key not in jobs and key not in self._ended]
        for key in ended:
            self._ended[key] = now_unix_s
        for key, ref in jobs.items():
            self._refs[key] = ref
            self._ended.pop(key, None)
        tick_j: dict[str, float] = defaultdict(float)
        for c in charged:
            self._totals[c.job_key][(c.domain, c.source, c.state)] += c.energy_j
            self._carbon[c.job_key][(c.domain, c.source)] += c.carbon_g
            self.node_carbon_g += c.carbon_g
            tick_j[c.job_key] += c.energy_j
            if c.domain == "gpu":
                self.gpu_use_j["active" if c.state == "active" else "allocated_idle"] += c.energy_j
        for u in left:
            self._unattributed[(u.domain, u.source, u.reason)] += u.energy_j
            if u.domain == "gpu":
                self.gpu_use_j["unallocated_idle"] += u.energy_j
            self.node_carbon_g += u.carbon_g
        self._power_w = {k: j / elapsed_s for k, j in tick_j.items()} if elapsed_s > 0 else {}
        if embodied is not None:
            self._add_embodied(embodied, elapsed_s)
        for key, at in list(self._ended.items()):
            if now_unix_s - at > self.grace_s:  # from now on it lives in the ledger only
                del self._ended[key], self._refs[key]
                self._totals.pop(key, None)
                self._carbon.pop(key, None)
                self._embodied.pop(key, None)
                self._names.pop(key, None)
                self._owners.pop(key, None)
        return ended

    def _add_embodied(self, split: EmbodiedSplit, elapsed_s: float) -> None:
        reserved = 0.0
        for job, parts in split.jobs_g.items():
            for component, grams in parts.items():
                self._embodied[job][component] += grams
                reserved += grams
        self.reserved_embodied_g += reserved
        for component, grams in split.unreserved_g.items():
            self._unreserved[component] += grams
        if elapsed_s > 0:
            self._embodied_rates = (
                reserved / elapsed_s,
                sum(split.unreserved_g.values()) / elapsed_s,
            )

    def embodied_status(self) -> EmbodiedStatus:
        return EmbodiedStatus(
            reserved_g=self.reserved_embodied_g,
            unreserved_g=tuple(sorted(self._unreserved.items())),
            reserved_g_per_s=self._embodied_rates[0],
            unreserved_g_per_s=self._embodied_rates[1],
        )

    def views(self, work: Mapping[str, Mapping[str, float]] | None = None) -> tuple[JobView, ...]:
        views = []
        for key, ref in sorted(self._refs.items()):
            totals = self._totals.get(key, {})
            views.append(
                JobView(
                    job_key=key,
                    scheduler=ref.scheduler,
                    job_id=ref.job_id,
                    name=self._names.get(key, ""),
                    energy_j=tuple((d, s, st, j) for (d, s, st), j in sorted(totals.items())),
                    power_w=self._power_w.get(key, 0.0) if key not in self._ended else None,
                    gpu_allocated_idle_j=sum(
                        j for (d, _, st), j in totals.items() if d == "gpu" and st == "idle"
                    ),
                    ended_unix_s=self._ended.get(key),
                    carbon_g=tuple(
                        (d, s, g) for (d, s), g in sorted(self._carbon.get(key, {}).items())
                    ),
                    embodied_g=tuple(sorted(self._embodied.get(key, {}).items())),
                    work_units=tuple(sorted((work or {}).get(key, {}).items())),
                    user=self._owners.get(key, ("", ""))[0],
                    team=self._owners.get(key, ("", ""))[1],
                )
            )
        return tuple(views)

    def unattributed(self) -> tuple[tuple[str, str, str, float], ...]:
        return tuple((d, s, r, j) for (d, s, r), j in sorted(self._unattributed.items()))
