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

from wattwise.accounts.identities import JobIdentities
from wattwise.accounts.ledger import INTENSITY, NODE, Batch, Ledger, LedgerError
from wattwise.accounts.minutes import MinuteRows, add_to
from wattwise.checks import Rejections
from wattwise.model import (
    JOB_FIGURES,
    EmbodiedSplit,
    EmbodiedStatus,
    JobEnergy,
    JobFigure,
    JobRef,
    JobSeen,
    JobTotals,
    JobView,
    SeriesKey,
    Sums,
    UnattributedEnergy,
)

log = logging.getLogger(__name__)

OPERATIONAL: SeriesKey = ("node", "operational", "", "")
EMBODIED: SeriesKey = ("node", "embodied", "", "")


class RunningTotals:
    def __init__(
        self, grace_s: float, ledger: Ledger | None = None, commit_interval_s: float = 5.0
    ) -> None:
        self.grace_s = grace_s
        self.ledger = ledger
        self.commit_interval_s = commit_interval_s
        self._committed: dict[str, dict[SeriesKey, Sums]] = {NODE: {}}
        self._pending: dict[tuple[str, SeriesKey], Sums] = {}
        self._minutes = MinuteRows()
        self._identities = JobIdentities()
        self._ended_unsaved: dict[str, float] = {}
        self._open_at_start: set[str] = set()  # open in the ledger: gone now means ended
        self._last_commit_s: float | None = None  # monotonic where the caller gives it
        self.gpu_use_j: dict[str, float] = {
            "active": 0.0,
            "allocated_idle": 0.0,
            "unallocated_idle": 0.0,
        }
        self._embodied_rates = (0.0, 0.0)  # reserved, unreserved g/s over the last interval
        self._refs: dict[str, JobRef] = {}
        self._order: list[str] | None = None  # the keys of _refs, sorted
        self._power_w: dict[str, float] = {}
        self._ended: dict[str, float] = {}
        self._shown: dict[str, JobTotals] = {}  # job key -> its committed totals
        self._rejections = Rejections(log)
        if ledger is not None and ledger.is_open:
            self._open_at_start = ledger.open_jobs()
            self._reload(self._open_at_start)
            self._identities.resume(ledger.seen_times(self._open_at_start))

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
        figures: Iterable[JobFigure] = (),
    ) -> list[str]:
        """Counts one tick; returns the jobs that ended since the last one. `seen` and
        `owners` cover every job present; hand the same mapping again only when nothing in it
        changed (it is then not looked at)."""
        minute = int(now_unix_s // 60 * 60)
        self._identities.note(now_unix_s, seen, owners)
        ended = self._arrive_and_end(now_unix_s, jobs)
        self._count_energy(charged, left, elapsed_s, minute)
        if embodied is not None:
            self._add_embodied(embodied, elapsed_s, minute)
        for job, measure, label, value in figures:
            if job not in self._refs:  # started and ended between two ticks: never a job row
                self._rejections.reject(
                    f"{measure} {job}",
                    f"{measure} reported for {job}, a job no tick saw, is dropped",
                )
                continue
            amount, grams = (value, 0.0) if JOB_FIGURES[measure][1] == 0 else (0.0, value)
            self._add(job, (measure, label, "", ""), amount, grams, minute)
        self._forget_past_grace(now_unix_s)
        return ended

    def note_intensity(
        self, now_unix_s: float, elapsed_s: float, provider: str, zone: str, kind: str
    ) -> None:
        """Which grid intensity this interval's carbon used: seconds under each provider, zone
        and kind (signal and basis), kept on the node like its other series, so a report can
        name them (accounts/reports.intensity_notes)."""
        if elapsed_s > 0:
            minute = int(now_unix_s // 60 * 60)
            self._add(NODE, (INTENSITY, provider, zone, kind), elapsed_s, 0.0, minute)

    def _arrive_and_end(self, now_unix_s: float, jobs: Mapping[str, JobRef]) -> list[str]:
        """Takes the jobs present now; returns those that ended."""
        ended = sorted(key for key in self._refs.keys() - jobs.keys() if key not in self._ended)
        ended += sorted(self._open_at_start - jobs.keys() - self._refs.keys())
        self._open_at_start = set()
        for key in ended:
            self._ended[key] = now_unix_s
            self._ended_unsaved[key] = now_unix_s
        arrived = jobs.keys() - self._refs.keys()
        if arrived:
            self._order = None
            self._resume(arrived)
        self._refs.update(jobs)
        for key in self._ended.keys() & jobs.keys():  # seen again: running, not ended
            del self._ended[key]
            self._ended_unsaved.pop(key, None)
        return ended

    def _count_energy(
        self,
        charged: Iterable[JobEnergy],
        left: Iterable[UnattributedEnergy],
        elapsed_s: float,
        minute: int,
    ) -> None:
        """The tick's shares: every job's, and what no job caused. Runs for every share."""
        tick_j: dict[str, float] = {}
        operational_g = 0.0
        gpu_use = self.gpu_use_j
        for c in charged:
            job, domain, source, state, joules, grams = c
            if not math.isfinite(joules + grams):
                self._add(job, ("energy", domain, source, state), joules, grams, minute)
                continue  # rejected there, with a log line
            self._add_finite((job, ("energy", domain, source, state)), joules, grams, minute)
            operational_g += grams
            tick_j[job] = tick_j.get(job, 0.0) + joules
            if domain == "gpu":
                gpu_use["active" if state == "active" else "allocated_idle"] += joules
        for u in left:
            self._add(NODE, ("unattributed", u.domain, u.source, u.reason), u.energy_j, u.carbon_g)
            operational_g += u.carbon_g
            if u.domain == "gpu":
                gpu_use["unallocated_idle"] += u.energy_j
        if operational_g:
            self._add(NODE, OPERATIONAL, 0.0, operational_g)
        self._power_w = {k: j / elapsed_s for k, j in tick_j.items()} if elapsed_s > 0 else {}

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
        self._add_finite((key, series), amount, grams, minute)

    def _add_finite(
        self, row: tuple[str, SeriesKey], amount: float, grams: float, minute: int | None
    ) -> None:
        """Adds to the pending totals and, with a `minute`, to that minute's row (the node's
        own series keep no per-minute history). Runs for every share of every tick."""
        add_to(self._pending, row, amount, grams)
        if minute is not None:
            self._minutes.add(row, amount, grams, minute)

    def _resume(self, arrived: Iterable[str]) -> None:
        """Jobs new to this process that the ledger may know (one that ended and came back,
        past its grace period): their counters continue from the ledger's totals."""
        if self.ledger is None or not self.ledger.is_open:
            return
        wanted = [key for key in arrived if key not in self._committed]
        if wanted:
            try:
                loaded = self.ledger.load(wanted, node=False)
                seen_times = self.ledger.seen_times(wanted)
            except LedgerError as exc:  # damaged or locked: the next commit says so
                log.warning("totals of %s not read from the ledger: %s", ", ".join(wanted), exc)
                return
            self._committed.update(loaded)
            self._identities.resume(seen_times)

    def _add_embodied(self, split: EmbodiedSplit, elapsed_s: float, minute: int) -> None:
        reserved = 0.0
        for job, parts in split.jobs_g.items():
            for component, grams in parts.items():
                if math.isfinite(grams):
                    self._add_finite((job, ("embodied", component, "", "")), 0.0, grams, minute)
                    reserved += grams
                else:  # rejected there, with a log line
                    self._add(job, ("embodied", component, "", ""), 0.0, grams, minute)
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
                self._order = None
                self._committed.pop(key, None)
                self._shown.pop(key, None)
                self._identities.forget(key)

    # --- committing -----------------------------------------------------------------------

    def commit(
        self, now_unix_s: float, force: bool = False, monotonic_s: float | None = None
    ) -> bool:
        """Commits what was counted when `commit_interval_s` has passed (or `force`): True when
        the exported totals now include it. LedgerError when the ledger turns out to be damaged
        (the caller then runs without it)."""
        if self.ledger is None:
            self._fold()
            return True
        # The interval is measured on the monotonic clock: a wall clock stepped back (NTP)
        # must not hold commits, and so the exported counters, for as long as the step.
        now_s = now_unix_s if monotonic_s is None else monotonic_s
        last = self._last_commit_s
        if not force and last is not None and 0 <= now_s - last < self.commit_interval_s:
            return False
        self._last_commit_s = now_s
        closed = self._minutes.closed(now_unix_s, force)
        seen = self._identities.rows(self._ended, self._ended_unsaved)
        batch = Batch(dict(self._pending), closed, seen, dict(self._ended_unsaved))
        if not self.ledger.write(batch):
            self._minutes.not_written()
            return False
        self._minutes.written()
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
            add_to(self._committed.setdefault(key, {}), series, amount, grams)
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

    # --- what /metrics shows --------------------------------------------------------------

    def views(self) -> tuple[JobView, ...]:
        views = []
        if self._order is None:
            self._order = sorted(self._refs)
        shown, power_w = self._shown, self._power_w
        names, owners = self._identities.names, self._identities.owners
        runtime_s = self._identities.runtime_s
        for key in self._order:
            ref = self._refs[key]
            totals = shown.get(key)
            if totals is None:
                totals = shown[key] = JobTotals.of(self._committed.get(key, {}))
            user, team = owners.get(key, ("", ""))
            ended = self._ended.get(key)
            power = power_w.get(key, 0.0) if ended is None else None
            # positional: made for every job every tick
            views.append(
                JobView(
                    key,
                    ref.scheduler,
                    ref.job_id,
                    names.get(key, ""),
                    power,
                    ended,
                    totals,
                    user,
                    team,
                    runtime_s(key),
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
