"""Read-only views of the ledger for `wattwise jobs`, `job show` and `report`."""

from __future__ import annotations

import math
import sqlite3
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from wattwise.accounts.ledger import INTENSITY, MICRO, NANO, LedgerError
from wattwise.accounts.schema import SCHEMA_VERSION
from wattwise.clock import unix_s_from_iso
from wattwise.model import BASIS_FIGURES, ESTIMATE, J_PER_KWH, JobSummary

GROUPS = ("job", "user", "scheduler")
MEASURED, ESTIMATED = "measured", "estimated"


def open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}: has `wattwise run` written one? (ledger.path)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        version = db.execute("PRAGMA user_version").fetchone()[0]
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc}") from None
    if version != SCHEMA_VERSION:
        db.close()
        raise LedgerError(
            f"ledger {path} has schema {version}; this wattwise reads schema {SCHEMA_VERSION}: "
            + (
                "start `wattwise run` once, which migrates it in place"
                if version < SCHEMA_VERSION
                else "upgrade wattwise"
            )
        )
    return db


def jobs(
    db: sqlite3.Connection, include_ended: bool, job_key: str | None = None
) -> list[JobSummary]:
    query = (
        "SELECT j.job_key, scheduler, kind, job_id, name, user, first_seen_unix_s, "
        "last_seen_unix_s, ended_unix_s, s.a, s.b, s.c, t.amount "
        "FROM jobs j LEFT JOIN totals t ON t.job = j.id "
        "LEFT JOIN series s ON s.id = t.series AND s.measure = 'energy' "
        "WHERE j.id != 0 AND (? OR ended_unix_s IS NULL) "
        "AND (? IS NULL OR j.job_key = ? OR job_id = ?) "
        "ORDER BY first_seen_unix_s, j.job_key"
    )
    found: dict[str, JobSummary] = {}
    for row in db.execute(query, (include_ended, job_key, job_key, job_key)):
        key, *meta, domain, source, state, joules = row
        summary = found.setdefault(key, JobSummary(key, *meta))
        if domain is None:
            continue
        summary.energy_j[domain] = summary.energy_j.get(domain, 0.0) + joules
        if basis_of(source) == ESTIMATED:
            summary.estimated_j += joules
        if state == "active":
            summary.active_j += joules
        else:
            summary.idle_j += joules
    return list(found.values())


@dataclass(frozen=True, slots=True)
class WindowRow:
    """One job's sum of one series over a report's window."""

    job_key: str
    user: str
    scheduler: str
    first_seen_unix_s: float
    last_seen_unix_s: float
    measure: str
    a: str
    b: str
    c: str
    amount: float
    carbon_g: float


def window(
    db: sqlite3.Connection,
    since_unix_s: float,
    until_unix_s: float,
    measures: tuple[str, ...] | None = None,
    node: bool = False,
) -> list[WindowRow]:
    """Each job's sums per series (of `measures` only, if given) over [since, until), from the
    coarsest level that answers exactly: whole hours already rolled up from `hours`, the partial
    hours at either edge (and the hours not rolled up yet) from `minutes`. A month is a few
    hundred rows per job. `node`: the node's own series instead of the jobs'."""
    hours_until = db.execute("SELECT value FROM meta WHERE key = 'hours_until'").fetchone()[0]
    first_hour = math.ceil(since_unix_s / 3600) * 3600
    last_hour = min(until_unix_s // 3600 * 3600, hours_until)
    if first_hour < last_hour:
        parts = [
            ("hours", "hour", first_hour, last_hour),
            ("minutes", "minute", since_unix_s, first_hour),
            ("minutes", "minute", last_hour, until_unix_s),
        ]
    else:
        parts = [("minutes", "minute", since_unix_s, until_unix_s)]
    # Table and column names come from the fixed list above, never from user text.
    union = " UNION ALL ".join(
        f"SELECT job, series, amount, carbon_ng FROM {table} WHERE {column} >= ? AND {column} < ?"
        for table, column, _, _ in parts
    )
    only = f"AND s.measure IN ({', '.join('?' * len(measures))})" if measures else ""
    rows = db.execute(
        "SELECT j.job_key, j.user, j.scheduler, j.first_seen_unix_s, j.last_seen_unix_s, "
        "s.measure, s.a, s.b, s.c, sum(w.amount), sum(w.carbon_ng) "
        f"FROM ({union}) w JOIN jobs j ON j.id = w.job JOIN series s ON s.id = w.series "
        f"WHERE j.id {'=' if node else '!='} 0 {only} GROUP BY w.job, w.series",
        [*(bound for *_, start, end in parts for bound in (start, end)), *(measures or ())],
    )
    return [WindowRow(*fields, amount / MICRO, grams / NANO) for *fields, amount, grams in rows]


def window_notes(db: sqlite3.Connection, since_unix_s: float) -> list[str]:
    """What the window cannot answer exactly: minutes retention has deleted."""
    row = db.execute("SELECT value FROM meta WHERE key = 'minutes_deleted_before'").fetchone()
    if row is not None and since_unix_s % 3600 and since_unix_s < row[0]:
        return [
            "per-minute rows before "
            + datetime.fromtimestamp(row[0], UTC).isoformat(timespec="minutes")
            + " are no longer kept (ledger.minutely_retention_s): the report starts at the "
            "first whole hour after --since"
        ]
    return []


def report(
    db: sqlite3.Connection, since_unix_s: float, until_unix_s: float, group_by: str
) -> list[dict[str, float | str]]:
    """Energy per group over [since, until)."""
    groups: dict[str, dict] = defaultdict(
        lambda: {
            "energy_j": 0.0,
            "measured_j": 0.0,
            "estimated_j": 0.0,
            "active_j": 0.0,
            "idle_j": 0.0,
            "jobs": set(),
        }
    )
    for row in window(db, since_unix_s, until_unix_s, ("energy",)):
        entry = groups[_group(row, group_by)]
        entry["energy_j"] += row.amount
        entry[f"{basis_of(row.b)}_j"] += row.amount
        entry[f"{row.c}_j"] += row.amount
        entry[f"{row.a}_j"] = entry.get(f"{row.a}_j", 0.0) + row.amount
        entry["jobs"].add(row.job_key)
    result = []
    for group, entry in sorted(groups.items(), key=lambda kv: -kv[1]["energy_j"]):
        entry["jobs"] = len(entry["jobs"])
        result.append({group_by: group, **entry})
    return result


def sci_report(
    db: sqlite3.Connection, since_unix_s: float, until_unix_s: float, group_by: str
) -> list[dict[str, float | str]]:
    """The Software Carbon Intensity terms per group over [since, until) (ISO/IEC 21031):
    E energy, I the effective intensity (operational grams / E, so PUE is included), O = E x I
    summed per interval, M embodied, and SCI = (O + M) per job-hour (R = one hour of a job)."""
    groups: dict[str, dict] = defaultdict(
        lambda: {
            "energy_j": 0.0,
            "estimated_j": 0.0,
            "operational_g": 0.0,
            "embodied_g": 0.0,
            "jobs": {},
        }
    )
    work: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    for row in window(db, since_unix_s, until_unix_s):
        group = _group(row, group_by)
        entry = groups[group]
        if row.measure == "energy":
            entry["energy_j"] += row.amount
            entry["operational_g"] += row.carbon_g
            if basis_of(row.b) == ESTIMATED:
                entry["estimated_j"] += row.amount
        elif row.measure == "embodied":
            entry["embodied_g"] += row.carbon_g
        elif row.measure == "work":
            work[group][row.a] += row.amount
            continue
        else:
            continue
        entry["jobs"][row.job_key] = (row.first_seen_unix_s, row.last_seen_unix_s)
    rows = []
    for group, entry in groups.items():
        spans = entry.pop("jobs").values()
        # Time reserved inside the window: from first to last sight, clipped to it.
        hours = (
            sum(
                max(min(last, until_unix_s) - max(first, since_unix_s), 0.0)
                for first, last in spans
            )
            / 3600
        )
        energy_kwh = entry["energy_j"] / J_PER_KWH
        total_g = entry["operational_g"] + entry["embodied_g"]
        rows.append(
            {
                group_by: group,
                "jobs": len(spans),
                "job_hours": hours,
                **entry,
                "energy_kwh": energy_kwh,
                "intensity_g_per_kwh": entry["operational_g"] / energy_kwh if energy_kwh else 0.0,
                "carbon_g": total_g,
                "sci_g_per_job_hour": total_g / hours if hours > 0 else None,
                **efficiency(work.get(group, {}), entry["energy_j"], total_g),
            }
        )
    return sorted(rows, key=lambda r: -float(r["carbon_g"]))


EXPORT_COLUMNS = (
    "node",
    "cluster",
    "job_key",
    "scheduler",
    "job_id",
    "name",
    "user",
    "started_unix_s",
    "ended_unix_s",
    *BASIS_FIGURES,
)


def finished_jobs(
    db: sqlite3.Connection, since_unix_s: float, until_unix_s: float
) -> list[dict[str, float | str]]:
    """Each job that ended in [since, until) with its lifetime totals, the node and cluster it
    ran on, and its energy and operational carbon split into measured and estimated (a GHG
    inventory's rows; work units as units_<unit>)."""
    identity = dict(db.execute("SELECT key, value FROM node_info"))
    where = {"node": identity.get("node", ""), "cluster": identity.get("cluster", "")}
    described: dict[str, dict[str, float | str]] = {}
    figures: dict[str, dict[str, float]] = {}
    query = (
        "SELECT j.job_key, j.scheduler, j.job_id, j.name, j.user, j.first_seen_unix_s, "
        "j.ended_unix_s, s.measure, s.a, s.b, t.amount, t.carbon_g "
        "FROM jobs j LEFT JOIN totals t ON t.job = j.id LEFT JOIN series s ON s.id = t.series "
        "WHERE j.id != 0 AND j.ended_unix_s >= ? AND j.ended_unix_s < ? "
        "ORDER BY j.ended_unix_s, j.job_key"
    )
    for key, *job, measure, a, b, amount, grams in db.execute(query, (since_unix_s, until_unix_s)):
        if key not in described:
            described[key] = {**where, **dict(zip(EXPORT_COLUMNS[2:9], (key, *job), strict=True))}
            figures[key] = dict.fromkeys(EXPORT_COLUMNS[9:], 0.0)
        sums = figures[key]
        if measure == "energy":
            basis = basis_of(b)
            sums["energy_j"] += amount
            sums[f"{basis}_j"] += amount
            sums["operational_g"] += grams
            if basis == ESTIMATED:
                sums["estimated_operational_g"] += grams
        elif measure == "embodied":
            sums["embodied_g"] += grams
        elif measure == "work":
            sums[f"units_{a}"] = sums.get(f"units_{a}", 0.0) + amount
    return [{**described[key], **figures[key]} for key in described]


def intensity_notes(db: sqlite3.Connection, since_unix_s: float, until_unix_s: float) -> list[str]:
    """Which grid intensity the window's carbon was charged at: each provider, zone, signal
    and basis, with its share of the time the agent charged carbon."""
    rows = window(db, since_unix_s, until_unix_s, (INTENSITY,), node=True)
    total = sum(row.amount for row in rows)
    return [
        f"carbon intensity: {row.a} zone {row.b} ({row.c}) for {row.amount / total:.0%} of"
        " the window's charged time"
        for row in sorted(rows, key=lambda r: -r.amount)
        if total > 0
    ]


def basis_notes(rows: list[dict[str, float | str]]) -> list[str]:
    """What a report must say of how its energy was obtained: the estimated part, if any."""
    total = sum(float(row.get("energy_j", 0.0)) for row in rows)
    estimated = sum(float(row.get("estimated_j", 0.0)) for row in rows)
    if estimated <= 0:
        return []
    return [
        f"{estimated:.1f} J of {total:.1f} J ({estimated / total:.0%}) is the agent's CPU "
        "estimate (from utilisation and estimate.cpu_tdp_w: no RAPL or hwmon on the node), "
        "not measured; see estimated_j"
    ]


def basis_of(source: str) -> str:
    """measured for energy read from a counter, estimated for the agent's CPU estimate."""
    return ESTIMATED if source == ESTIMATE else MEASURED


def _group(row: WindowRow, group_by: str) -> str:
    value = {"job": row.job_key, "user": row.user, "scheduler": row.scheduler}[group_by]
    return value or "(unknown)"


def efficiency(work: dict[str, float], energy_j: float, carbon_g: float) -> dict[str, float]:
    """Per work unit: units per joule, joules per unit, and grams per unit (SCI per R)."""
    figures: dict[str, float] = {}
    for unit, units in sorted(work.items()):
        figures[unit] = units
        if energy_j > 0:
            figures[f"{unit}_per_j"] = units / energy_j
        if units > 0:
            figures[f"j_per_{unit}"] = energy_j / units
            figures[f"g_per_{unit}"] = carbon_g / units
    return figures


LAST_UNIX_S = 253402300799.0  # 9999-12-31T23:59:59Z: the last time ISO 8601 writes plainly


def parse_time(text: str, now_unix_s: float) -> float:
    """Unix seconds, ISO 8601 (UTC if no zone), an age such as 30m, 24h, 7d, or `now`; a
    ValueError for anything else, and for a time before 1970 or after 9999 (NaN and inf too)."""
    found = _parse_time(text.strip(), now_unix_s)
    if not 0.0 <= found <= LAST_UNIX_S:  # false for NaN as well
        raise ValueError(f"{text!r} is out of range: give a time between 1970 and 9999")
    return found


def _parse_time(text: str, now_unix_s: float) -> float:
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text == "now":
        return now_unix_s
    if text[:-1].replace(".", "", 1).isdigit() and text[-1] in units:
        return now_unix_s - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return unix_s_from_iso(text)
    except (ValueError, OverflowError):
        raise ValueError(
            f"{text!r} is not a time: use 2026-11-01T00:00, 24h, now or unix seconds"
        ) from None
