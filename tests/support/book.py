"""Recording ticks into a real ledger the way the agent does: through RunningTotals, which counts a
tick and commits it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from wattwise.accounts.ledger import Ledger
from wattwise.accounts.totals import RunningTotals
from wattwise.model import EmbodiedSplit, JobEnergy, JobFigure, JobRef, JobSeen, UnattributedEnergy


def book(path: Path, **ledger: Any) -> RunningTotals:
    """RunningTotals over a ledger at `path` that commit whenever asked."""
    return RunningTotals(grace_s=600, ledger=Ledger(path, **ledger), commit_interval_s=0)


def record(
    accounts: RunningTotals,
    now_unix_s: float,
    seen: Iterable[JobSeen] = (),
    energy: Iterable[JobEnergy] = (),
    unattributed: Iterable[UnattributedEnergy] = (),
    embodied: EmbodiedSplit | None = None,
    work: Mapping[tuple[str, str], float] | None = None,
    force: bool = True,
) -> bool:
    """One tick in which `seen` are the jobs present (one absent since the last is ended);
    True when it was committed."""
    seen = list(seen)
    jobs = {j.job_key: JobRef(j.scheduler, j.job_id, f"/{j.job_key}") for j in seen}
    accounts.apply(
        now_unix_s,
        1.0,
        jobs,
        list(energy),
        list(unattributed),
        {j.job_key: j for j in seen},
        embodied,
        None,
        [JobFigure(job, "work", unit, units) for (job, unit), units in (work or {}).items()],
    )
    return accounts.commit(now_unix_s, force=force)


def totals(accounts: RunningTotals, job_key: str) -> dict[tuple[str, str, str, str], list[float]]:
    """The committed totals of a job (or of the node, ''), as /metrics would show them."""
    return {series: list(sums) for series, sums in accounts._committed.get(job_key, {}).items()}
