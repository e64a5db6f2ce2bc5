"""Every running total the agent exports, per job (energy, operational and embodied carbon,
work) and for the node (unattributed energy, unreserved embodied carbon, the node's carbon):
what the ledger has committed, and what was counted since.

/metrics shows only committed totals. Each tick's increments are pending until the next commit
(every `commit_interval_s`), which writes them to the ledger in one transaction and then adds
them to the committed values, the same floating-point additions the ledger made, so the
exported value is the stored one bit for bit. A counter therefore never goes backwards across
a restart, SIGKILL included: after it, counters resume from exactly what was last exported or
from more. While the ledger cannot be written, counters hold still and what is counted waits;
without a ledger at all (`once`, `probe`, a refused file) every tick is committed at once.

Per-minute rows are gathered here and handed to the ledger once their minute has closed.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping

from agent.carbon.embodied import EmbodiedSplit
from agent.checks import Rejections
from agent.jobs.cgroups import JobRef
from agent.ledger import NODE, Batch, JobSeen, Ledger, SeriesKey, Sums
from agent.model import EmbodiedStatus, JobEnergy, JobView, UnattributedEnergy

log = logging.getLogger(__name__)

# Per-minute rows held while the ledger cannot be written (about a day of 50 jobs); beyond it
# the outage's per-minute detail is dropped, never the totals.
MAX_PENDING_MINUTES = 500_000
OPERATIONAL: SeriesKey = ("node", "operational", "", "")
EMBODIED: SeriesKey = ("node", "embodied", "", "")


class Accounts:
    def __init__(
        self, grace_s: float, ledger: Ledger | None = None, commit_interval_s: float = 5.0
    ) -> None:
        self.grace_s = grace_s
        self.ledger = ledger
        self.commit_interval_s = commit_interval_s
        self._committed: dict[str, dict[SeriesKey, Sums]] = {NODE: {}}
        self._pending: dict[tuple[str, SeriesKey], Sums] = {}
        self._minutes: dict[tuple[int, str, SeriesKey], Sums] = {}
        self._seen: dict[str, tuple[JobSeen, float, float]] = {}  # for the ledger's jobs table
        self._ended_unsaved: dict[str, float] = {}
        self._open_at_start: set[str] = set()  # open in the ledger: gone now means ended
        self._last_commit_unix_s: float | None = None
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
        self._shown: dict[str, tuple] = {}  # job key -> its totals as JobView fields
        self._rejections = Rejections(log)
        if ledger is not None and ledger.is_open:
            self._open_at_start = ledger.open_jobs()
            self._reload(self._open_at_start)

    # --- counting -------------------------------------------------------------------------

    def apply(
        self,
        now_unix_s: float,
        elapsed_s: float,
        jobs: Mapping[str, JobRef],
        charged: Iterable[JobEnergy],
        left: Iterable[UnattributedEnergy],
        seen: Mapping[str, JobSeen] | None = None,
        embodied: EmbodiedSplit | None = None,
        owners: Mapping[str, tuple[str, str]] | None = None,
        work: Mapping[tuple[str, str], float] | None = None,
    ) -> list[str]:
        """Counts one tick; returns the jobs that ended since the last one."""
        minute = int(now_unix_s // 60 * 60)
        for key, job in (seen or {}).items():
            first = self._seen.get(key, (job, now_unix_s, now_unix_s))[1]
            self._seen[key] = (job, first, now_unix_s)
            if job.name:
                self._names[key] = job.name
        self._owners.update({k: v for k, v in (owners or {}).items() if any(v)})
        ended = [key for key in self._refs if key not in jobs and key not in self._ended]
        ended += sorted(self._open_at_start - jobs.keys() - self._refs.keys())
        self._open_at_start = set()
        for key in ended:
            self._ended[key] = now_unix_s
            self._ended_unsaved[key] = now_unix_s
        for key, ref in jobs.items():
            self._refs[key] = ref
            self._ended.pop(key, None)
        tick_j: dict[str, float] = {}
        operational_g = 0.0
        for c in charged:
            self._add(
                c.job_key, ("energy", c.domain, c.source, c.state), c.energy_j, c.carbon_g, minute
            )
            operational_g += c.carbon_g
            tick_j[c.job_key] = tick_j.get(c.job_key, 0.0) + c.energy_j
            if c.domain == "gpu":
                self.gpu_use_j["active" if c.state == "active" else "allocated_idle"] += c.energy_j
        for u in left:
            self._add(NODE, ("unattributed", u.domain, u.source, u.reason), u.energy_j, u.carbon_g)
            operational_g += u.carbon_g
            if u.domain == "gpu":
                self.gpu_use_j["unallocated_idle"] += u.energy_j
        if operational_g:
            self._add(NODE, OPERATIONAL, 0.0, operational_g)
        self._power_w = {k: j / elapsed_s for k, j in tick_j.items()} if elapsed_s > 0 else {}
        if embodied is not None:
            self._add_embodied(embodied, elapsed_s, minute)
        for (key, unit), units in (work or {}).items():
            self._add(key, ("work", unit, "", ""), units, 0.0, minute)
        self._forget_past_grace(now_unix_s)
        return ended

    def _add(
        self, key: str, series: SeriesKey, amount: float, grams: float, minute: int | None = None
    ) -> None:
        if not math.isfinite(amount + grams):  # the last gate: NaN would stay NaN forever
            self._rejections.reject(
                f"{key} {series}",
                f"a non-finite figure for {key or 'the node'} {series} "
                f"was dropped ({amount}, {grams} g): please report this bug",
            )
            return
        sums = self._pending.get((key, series))
        if sums is None:
            self._pending[(key, series)] = [amount, grams]
        else:
            sums[0] += amount
            sums[1] += grams
        if minute is not None:  # the node's own rows keep no per-minute history
            sums = self._minutes.get((minute, key, series))
            if sums is None:
                self._minutes[(minute, key, series)] = [amount, grams]
            else:
                sums[0] += amount
                sums[1] += grams

    def _add_embodied(self, split: EmbodiedSplit, elapsed_s: float, minute: int) -> None:
        reserved = 0.0
        for job, parts in split.jobs_g.items():
            for component, grams in parts.items():
                self._add(job, ("embodied", component, "", ""), 0.0, grams, minute)
                reserved += grams
        if reserved:
            self._add(NODE, EMBODIED, 0.0, reserved)
        for component, grams in split.unreserved_g.items():
            self._add(NODE, ("unreserved", component, "", ""), 0.0, grams)
        if elapsed_s > 0:
            self._embodied_rates = (
                reserved / elapsed_s,
                sum(split.unreserved_g.values()) / elapsed_s,
            )

    def _forget_past_grace(self, now_unix_s: float) -> None:
        for key, at in list(self._ended.items()):
            if now_unix_s - at > self.grace_s:  # from now on it lives in the ledger only
                del self._ended[key]
                self._refs.pop(key, None)
                self._committed.pop(key, None)
                self._shown.pop(key, None)
                self._names.pop(key, None)
                self._owners.pop(key, None)

    # --- committing -----------------------------------------------------------------------

    def commit(self, now_unix_s: float, force: bool = False) -> bool:
        """Commits what was counted when `commit_interval_s` has passed (or `force`): True when
        the exported totals now include it. LedgerError when the ledger turns out to be damaged
        (the caller then runs without it)."""
        if self.ledger is None:
            self._fold()
            return True
        last = self._last_commit_unix_s
        if not force and last is not None and now_unix_s - last < self.commit_interval_s:
            return False
        self._last_commit_unix_s = now_unix_s
        current = int(now_unix_s // 60 * 60)
        closed = {k: v for k, v in self._minutes.items() if force or k[0] < current}
        batch = Batch(dict(self._pending), closed, dict(self._seen), dict(self._ended_unsaved))
        if not self.ledger.write(batch):
            self._bound_minutes()
            return False
        for key in closed:
            del self._minutes[key]
        self._seen = {k: v for k, v in self._seen.items() if k in self._refs}
        self._ended_unsaved = {}
        if self.ledger.just_opened:  # opened late: its totals include everything counted
            self.ledger.just_opened = False
            self._pending = {}
            self._close_gone_jobs(now_unix_s)
            self._reload(self._refs.keys())
        else:
            self._fold()
        self.ledger.maintain(now_unix_s)
        return True

    def _fold(self) -> None:
        """Adds what is pending to the committed totals, as the ledger just did."""
        for (key, series), (amount, grams) in self._pending.items():
            if key != NODE and key not in self._refs:
                continue  # past its grace period: in the ledger, no longer shown
            sums = self._committed.setdefault(key, {}).get(series)
            if sums is None:
                self._committed[key][series] = [amount, grams]
            else:
                sums[0] += amount
                sums[1] += grams
            self._shown.pop(key, None)
        self._pending = {}

    def _close_gone_jobs(self, now_unix_s: float) -> None:
        """Jobs the ledger has open that are not here ended while it could not be written."""
        assert self.ledger is not None
        gone = self.ledger.open_jobs() - self._refs.keys()
        if gone:
            self.ledger.write(Batch(ended={key: now_unix_s for key in gone}))

    def _reload(self, jobs: Iterable[str]) -> None:
        assert self.ledger is not None
        self._committed = {NODE: {}, **self.ledger.load(jobs)}
        self._shown = {}

    def _bound_minutes(self) -> None:
        if len(self._minutes) > MAX_PENDING_MINUTES:
            log.error(
                "ledger unwritable for long: the per-minute detail held in memory is dropped "
                "(%d rows), the totals are kept",
                len(self._minutes),
            )
            current = max(minute for minute, _, _ in self._minutes)
            self._minutes = {k: v for k, v in self._minutes.items() if k[0] == current}

    # --- what /metrics shows --------------------------------------------------------------

    def views(self) -> tuple[JobView, ...]:
        views = []
        for key, ref in sorted(self._refs.items()):
            shown = self._shown.get(key)
            if shown is None:
                shown = self._shown[key] = _totals_as_shown(self._committed.get(key, {}))
            energy_j, carbon_g, embodied_g, work_units, allocated_idle_j = shown
            owner = self._owners.get(key, ("", ""))
            views.append(
                JobView(
                    job_key=key,
                    scheduler=ref.scheduler,
                    job_id=ref.job_id,
                    name=self._names.get(key, ""),
                    energy_j=energy_j,
                    power_w=self._power_w.get(key, 0.0) if key not in self._ended else None,
                    gpu_allocated_idle_j=allocated_idle_j,
                    ended_unix_s=self._ended.get(key),
                    carbon_g=carbon_g,
                    embodied_g=embodied_g,
                    work_units=work_units,
                    user=owner[0],
                    team=owner[1],
                )
            )
        return tuple(views)

    def unattributed(self) -> tuple[tuple[str, str, str, float], ...]:
        node = self._committed.get(NODE, {})
        return tuple(
            (d, s, r, sums[0]) for (m, d, s, r), sums in sorted(node.items()) if m == "unattributed"
        )

    @property
    def node_carbon_g(self) -> float:
        return self._committed.get(NODE, {}).get(OPERATIONAL, [0.0, 0.0])[1]

    def embodied_status(self) -> EmbodiedStatus:
        node = self._committed.get(NODE, {})
        return EmbodiedStatus(
            reserved_g=node.get(EMBODIED, [0.0, 0.0])[1],
            unreserved_g=tuple(
                (a, sums[1]) for (m, a, _, _), sums in sorted(node.items()) if m == "unreserved"
            ),
            reserved_g_per_s=self._embodied_rates[0],
            unreserved_g_per_s=self._embodied_rates[1],
        )

    def work_totals(self) -> dict[tuple[str, str], float]:
        """Each running job's committed work units, by unit: where the work API resumes."""
        return {
            (key, series[1]): sums[0]
            for key, rows in self._committed.items()
            for series, sums in rows.items()
            if series[0] == "work"
        }


def _totals_as_shown(rows: Mapping[SeriesKey, Sums]) -> tuple:
    """(energy_j, carbon_g, embodied_g, work_units, gpu allocated idle J) of one job, as
    JobView holds them; operational grams are summed over states, always in the same order."""
    energy, carbon, embodied, work = [], {}, [], []
    allocated_idle = 0.0
    for (measure, a, b, c), (amount, grams) in sorted(rows.items()):
        if measure == "energy":
            energy.append((a, b, c, amount))
            carbon[(a, b)] = carbon.get((a, b), 0.0) + grams
            if a == "gpu" and c == "idle":
                allocated_idle += amount
        elif measure == "embodied":
            embodied.append((a, grams))
        elif measure == "work":
            work.append((a, amount))
    return (
        tuple(energy),
        tuple((d, s, g) for (d, s), g in sorted(carbon.items())),
        tuple(embodied),
        tuple(work),
        allocated_idle,
    )
