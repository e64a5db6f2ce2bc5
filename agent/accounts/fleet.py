"""`wattwise report --prometheus`: the ledger report's tables over the fleet's Prometheus-compatible
storage, where every node's series meet (docs/fleet.md).

Energy, carbon and runtime come from exact counter increases (accounts/increases.py). A
multi-node job's energy and carbon are summed over its nodes; its hours (SCI's R) are its
runtime on the node that saw it longest. Energy is split by basis: measured (a counter) or
estimated (the agent's CPU estimate). What the storage could not answer is said: its warnings
(a partial response) make the report refuse unless asked to go on; a node whose series stop
before the window's end is named.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import MAXYEAR, UTC, datetime

from wattwise.accounts.increases import BASELINE_S, ask, counter_increases, promql_range
from wattwise.accounts.reports import ESTIMATED, basis_of
from wattwise.errors import QueryError
from wattwise.model import BASIS_FIGURES
from wattwise.net.promql import PromQL, matcher

ENERGY = "wattwise_job_energy_joules_total"
CARBON = "wattwise_job_carbon_grams_total"
NODE_ENERGY = "wattwise_node_total_energy_joules_total"
RUNTIME = "wattwise_job_runtime_seconds_total"
MAX_PERIODS = 1000  # --per day: 2.7 years; each period costs about fourteen queries
TAIL_S = 300  # a node without samples in the window's last 5 minutes has a gap named
FLEET_GROUPS = ("job", "user", "team", "cluster")
UNSEEN_NODES = (
    "node series are not visible in this store (behind a proxy that only lets job series "
    "through?): nodes missing from the window cannot be named"
)
FIGURES = (*BASIS_FIGURES, "carbon_g")
JobId = tuple[str, str, str]  # cluster, scheduler, job_id


class PartialData(QueryError):
    """The storage answered, but said part of the data was missing."""


class TooManyPeriods(ValueError):
    """--per over a window that would cost more queries than a report should; none was sent."""


class UnknownJob(QueryError):
    """The storage has no series of the job asked for in the window."""


def _is_job(labels: dict[str, str], job: str) -> bool:
    return all(labels.get(k) == v for k, v in _job(job).items())


def _job(job: str) -> dict[str, str]:
    """The labels of `slurm:12`, or of a bare id (`12`: a Slurm job's)."""
    scheduler, _, job_id = job.rpartition(":")
    return {"scheduler": scheduler or "slurm", "job_id": job_id}


@dataclass(slots=True)
class FleetReport:
    rows: list[dict[str, float | str | None]]
    notes: list[str] = field(default_factory=list)


def fleet_report(
    api: PromQL,
    since: float,
    until: float,
    group_by: str,
    per: str | None = None,
    job: str | None = None,
    allow_partial: bool = False,
) -> FleetReport:
    """Energy and carbon per job (over its nodes), user, team or cluster; per day or month
    (UTC) with `per`; one job's only with `job` (its id). PartialData when the storage warned
    that data is missing, unless `allow_partial` (then its warnings are notes)."""
    periods = list(itertools.islice(_buckets(since, until, per), MAX_PERIODS + 1))
    if len(periods) > MAX_PERIODS:
        raise TooManyPeriods(
            f"--per {per} over this window is more than {MAX_PERIODS:,} periods, each about "
            "fourteen queries: shorten the window or use --per month"
        )
    notes: list[str] = []
    warnings: list[str] = []
    rows: list[dict[str, float | str | None]] = []
    untimed: set[JobId] = set()  # jobs whose agents predate the runtime counter
    selector = "" if job is None else matcher(_job(job))
    # each counter's value at the last period's end
    carried: dict[str, dict] = {ENERGY: {}, CARBON: {}, RUNTIME: {}}
    for start, end in periods:
        owners = _owners(api, start, end, warnings, selector)
        groups: dict[tuple[str, ...], dict] = defaultdict(_empty)
        for measure, metric in (("energy", ENERGY), ("carbon", CARBON)):
            increases = counter_increases(
                api, metric, start, end, warnings, selector, carried[metric]
            )
            for labels, amount in increases:
                if job is not None and not _is_job(labels, job):
                    continue  # a store that ignored the selector
                node = (labels.get("cluster", ""), labels.get("instance", ""))
                who = owners.get((*node, labels.get("scheduler", ""), labels.get("job_id", "")))
                entry = groups[_group_key(group_by, labels, who)]
                _add(entry, measure, labels, amount)
                entry["nodes"].add(node)
                entry["jobs"].add(_job_id(labels))
        hours = _job_hours(api, start, end, warnings, selector, carried[RUNTIME])
        for key, entry in sorted(groups.items()):
            rows.append(_row(group_by, key, entry, start, end, per, hours))
            untimed.update(entry["jobs"] - hours.keys())
        summed = {n for g in groups.values() for n in g["nodes"]}
        notes += _gaps(api, start, end, warnings, summed, selector)
    notes += _intensities(api, since, until, warnings)
    if untimed:
        notes.append(
            f"{len(untimed)} job(s) have no {RUNTIME} (their agents predate it): their hours"
            " are not in job_hours, so SCI is too high or blank"
        )
    if warnings:
        said = "; ".join(dict.fromkeys(warnings))
        if not allow_partial:
            raise PartialData(
                f"the storage answered with warnings, so its totals may be too small: {said}"
            )
        notes.append(f"PARTIAL: the storage warned that data is missing ({said}): too small")
    if job is not None and not rows:
        raise UnknownJob(f"no job {job!r} in the storage between {_iso(since)} and {_iso(until)}")
    return FleetReport(rows, notes)


def _job_id(labels: dict[str, str]) -> JobId:
    return (labels.get("cluster", ""), labels.get("scheduler", ""), labels.get("job_id", ""))


def _job_hours(
    api: PromQL, since: float, until: float, warnings: list, selector: str, carried: dict
) -> dict[JobId, float]:
    """Each job's hours in [since, until): its runtime counter's increase on the node that saw
    it longest. SCI's R is an hour of the job, whatever the number of its nodes. A node's
    increase is at most the window: a counter first scraped already high (an agent upgraded
    mid-job resumes the runtime from its ledger) counts no hours from before it."""
    hours: dict[JobId, float] = {}
    for labels, seconds in counter_increases(
        api, RUNTIME, since, until, warnings, selector, carried
    ):
        job = _job_id(labels)
        hours[job] = max(hours.get(job, 0.0), min(seconds, until - since) / 3600)
    return hours


def _owners(api: PromQL, since: float, until: float, warnings: list, selector: str) -> dict:
    """(cluster, instance, scheduler, job_id) -> (user, team, name), from wattwise_job_info."""
    query = f"last_over_time(wattwise_job_info{selector}[{promql_range(until - since)}])"
    info = ask(api, query, until, warnings)
    return {
        tuple(s.labels.get(k, "") for k in ("cluster", "instance", "scheduler", "job_id")): (
            s.labels.get("user", ""),
            s.labels.get("team", ""),
            s.labels.get("job_name", ""),
        )
        for s in info
    }


def _group_key(group_by: str, labels: dict[str, str], who: tuple | None) -> tuple[str, ...]:
    cluster = labels.get("cluster", "")
    user, team, name = who or ("", "", "")
    if group_by == "job":
        return (cluster, f"{labels.get('scheduler', '')}:{labels.get('job_id', '')}", name)
    if group_by == "user":
        return (cluster, user or "(unknown)")
    if group_by == "team":
        return (cluster, team or "(unknown)")
    return (cluster,)


def _empty() -> dict:
    return {**dict.fromkeys(FIGURES, 0.0), "nodes": set(), "jobs": set()}


def _add(entry: dict, measure: str, labels: dict[str, str], amount: float) -> None:
    estimated = basis_of(labels.get("source", "")) == ESTIMATED
    if measure == "energy":
        entry["energy_j"] += amount
        entry["estimated_j" if estimated else "measured_j"] += amount
    elif labels.get("scope") == "embodied":
        entry["embodied_g"] += amount
        entry["carbon_g"] += amount
    else:
        entry["operational_g"] += amount
        entry["carbon_g"] += amount
        if estimated:
            entry["estimated_operational_g"] += amount


def _row(
    group_by: str,
    key: tuple,
    entry: dict,
    start: float,
    end: float,
    per: str | None,
    hours: dict[JobId, float],
) -> dict[str, float | str | None]:
    names = {"job": ("cluster", "job", "job_name"), "user": ("cluster", "user")}
    names |= {"team": ("cluster", "team"), "cluster": ("cluster",)}
    row: dict[str, float | str | None] = dict(zip(names[group_by], key, strict=True))
    if per is not None:
        row["period"] = _iso(start)[: 10 if per == "day" else 7]
    row |= {name: entry[name] for name in FIGURES}
    job_hours = sum(hours.get(job, 0.0) for job in entry["jobs"])
    row |= {"jobs": len(entry["jobs"]), "nodes": len(entry["nodes"]), "job_hours": job_hours}
    row["sci_g_per_job_hour"] = entry["carbon_g"] / job_hours if job_hours > 0 else None
    return row


def _gaps(
    api: PromQL,
    since: float,
    until: float,
    warnings: list,
    nodes: set[tuple[str, str]],
    selector: str,
) -> list[str]:
    """The nodes whose energy is missing from the totals: of `nodes` (those the rows sum), the
    ones whose series stop before the window's end; and the nodes (of the job, with
    `selector`) that had series in the hour before the window and none in it (a node down, or
    unscraped, throughout). Node series that cannot be seen at all (a label-enforcing proxy
    lets only job series through) are said once instead of naming every node."""
    if until - since <= TAIL_S:  # too short to tell a missing node from a scrape interval
        return []
    window = promql_range(until - since)
    within = _nodes(api, f"count_over_time({NODE_ENERGY}[{window}])", until, warnings)
    hour = f"[{BASELINE_S}s]"
    node_before = _nodes(api, f"count_over_time({NODE_ENERGY}{hour})", since, warnings)
    if not within and not node_before:
        return [UNSEEN_NODES] if nodes else []
    tail = _nodes(api, f"count_over_time({NODE_ENERGY}[{TAIL_S}s])", until, warnings)
    before = node_before
    if selector:  # the job's nodes only
        before = _nodes(api, f"count_over_time({ENERGY}{selector}{hour})", since, warnings)
    return [
        f"node {instance} ({cluster or 'no cluster label'}) has no samples in the last"
        f" {TAIL_S // 60} minutes before {_iso(until)}: what it used after its last sample"
        " is not counted"
        for cluster, instance in sorted(nodes - tail)
    ] + [
        f"node {instance} ({cluster or 'no cluster label'}) has samples in the hour before"
        f" {_iso(since)} and none from then to {_iso(until)}: what it used is not counted"
        for cluster, instance in sorted(before - within)
    ]


def _nodes(api: PromQL, query: str, at: float, warnings: list) -> set[tuple[str, str]]:
    return {
        (s.labels.get("cluster", ""), s.labels.get("instance", ""))
        for s in ask(api, f"count by (cluster, instance) ({query})", at, warnings)
    }


def _intensities(api: PromQL, since: float, until: float, warnings: list) -> list[str]:
    """Which intensity providers, zones and bases the window's carbon used, and on how many
    nodes."""
    # A node counts once whatever else its series carry (a rolled DaemonSet pod's label).
    query = (
        "count by (provider, zone, signal, basis) (max by (cluster, instance, provider, zone, "
        "signal, basis) (last_over_time("
        f"wattwise_grid_carbon_intensity_grams_per_kwh[{promql_range(until - since)}])))"
    )
    return [
        f"carbon intensity: {s.labels.get('provider', '?')} zone {s.labels.get('zone', '?')},"
        f" {s.labels.get('signal', '?')} {s.labels.get('basis', '?')}, on {s.value:g} node(s)"
        for s in sorted(ask(api, query, until, warnings), key=lambda s: sorted(s.labels.items()))
    ]


def _buckets(since: float, until: float, per: str | None) -> Iterable[tuple[float, float]]:
    """[since, until) whole, or cut at UTC day or month starts."""
    if per is None:
        yield since, until
        return
    start = since
    while start < until:
        moment = datetime.fromtimestamp(start, UTC)
        if per == "day":
            nxt = datetime(moment.year, moment.month, moment.day, tzinfo=UTC).timestamp() + 86400
        else:
            year, month = divmod(moment.month, 12)
            if moment.year + year > MAXYEAR:  # December 9999: the window ends first
                yield start, until
                return
            nxt = datetime(moment.year + year, month + 1, 1, tzinfo=UTC).timestamp()
        yield start, min(nxt, until)
        start = min(nxt, until)


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")
