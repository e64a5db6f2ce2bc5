"""Read-only views of the ledger for `wattwise jobs`, `job show` and `report`."""

from __future__ import annotations

import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from agent.ledger import LedgerError

GROUPS = ("job", "user", "scheduler")


@dataclass
class JobSummary:
    job_key: str
    scheduler: str
    kind: str
    job_id: str
    name: str
    user: str
    first_seen_unix_s: float
    last_seen_unix_s: float
    ended_unix_s: float | None
    energy_j: dict[str, float] = field(default_factory=dict)  # domain -> joules
    active_j: float = 0.0
    idle_j: float = 0.0

    @property
    def duration_s(self) -> float:
        return max(self.last_seen_unix_s - self.first_seen_unix_s, 0.0)

    @property
    def mean_power_w(self) -> float | None:
        return (self.active_j + self.idle_j) / self.duration_s if self.duration_s > 0 else None


def open_read_only(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise LedgerError(f"no ledger at {path}: has `wattwise run` written one? (ledger.path)")
    try:
        db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
        db.execute("SELECT count(*) FROM jobs").fetchone()
    except sqlite3.DatabaseError as exc:
        raise LedgerError(f"cannot read ledger {path}: {exc}") from None
    return db


def jobs(
    db: sqlite3.Connection, include_ended: bool, job_key: str | None = None
) -> list[JobSummary]:
    query = (
        "SELECT j.job_key, scheduler, kind, job_id, name, user, first_seen_unix_s, "
        "last_seen_unix_s, ended_unix_s, domain, state, energy_j "
        "FROM jobs j LEFT JOIN job_energy e ON e.job_key = j.job_key "
        "WHERE (? OR ended_unix_s IS NULL) AND (? IS NULL OR j.job_key = ? OR job_id = ?) "
        "ORDER BY first_seen_unix_s, j.job_key"
    )
    found: dict[str, JobSummary] = {}
    for row in db.execute(query, (include_ended, job_key, job_key, job_key)):
        key, *meta, domain, state, joules = row
        summary = found.setdefault(key, JobSummary(key, *meta))
        if domain is None:
            continue
        summary.energy_j[domain] = summary.energy_j.get(domain, 0.0) + joules
        if state == "active":
            summary.active_j += joules
        else:
            summary.idle_j += joules
    return list(found.values())


def report(
    db: sqlite3.Connection, since_unix_s: float, until_unix_s: float, group_by: str
) -> list[dict[str, float | str]]:
    """Energy per group over [since, until), from the per-minute series."""
    # The column comes from this fixed mapping, never from user text.
    column = {"job": "j.job_key", "user": "j.user", "scheduler": "j.scheduler"}[group_by]
    rows = db.execute(
        f"SELECT {column}, j.job_key, m.domain, m.state, sum(m.energy_j) "
        "FROM job_energy_minutely m JOIN jobs j ON j.job_key = m.job_key "
        "WHERE m.minute_unix_s >= ? AND m.minute_unix_s < ? "
        f"GROUP BY {column}, j.job_key, m.domain, m.state",
        (since_unix_s, until_unix_s),
    )
    groups: dict[str, dict] = defaultdict(
        lambda: {"energy_j": 0.0, "active_j": 0.0, "idle_j": 0.0, "jobs": set()}
    )
    for group, key, domain, state, joules in rows:
        entry = groups[group or "(unknown)"]
        entry["energy_j"] += joules
        entry[f"{state}_j"] += joules
        entry[f"{domain}_j"] = entry.get(f"{domain}_j", 0.0) + joules
        entry["jobs"].add(key)
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
    column = {"job": "j.job_key", "user": "j.user", "scheduler": "j.scheduler"}[group_by]
    window = (since_unix_s, until_unix_s)
    groups: dict[str, dict] = defaultdict(
        lambda: {"energy_j": 0.0, "operational_g": 0.0, "embodied_g": 0.0, "jobs": {}}
    )
    for group, key, first, last, joules, grams in db.execute(
        f"SELECT {column}, j.job_key, j.first_seen_unix_s, j.last_seen_unix_s, "
        "sum(m.energy_j), sum(m.carbon_g) "
        "FROM job_energy_minutely m JOIN jobs j ON j.job_key = m.job_key "
        "WHERE m.minute_unix_s >= ? AND m.minute_unix_s < ? GROUP BY j.job_key",
        window,
    ):
        entry = groups[group or "(unknown)"]
        entry["energy_j"] += joules
        entry["operational_g"] += grams
        entry["jobs"][key] = (first, last)
    if _has_table(db, "job_embodied_minutely"):  # schema 3 and later
        for group, key, first, last, grams in db.execute(
            f"SELECT {column}, j.job_key, j.first_seen_unix_s, j.last_seen_unix_s, "
            "sum(m.carbon_g) FROM job_embodied_minutely m JOIN jobs j ON j.job_key = m.job_key "
            "WHERE m.minute_unix_s >= ? AND m.minute_unix_s < ? GROUP BY j.job_key",
            window,
        ):
            entry = groups[group or "(unknown)"]
            entry["embodied_g"] += grams
            entry["jobs"][key] = (first, last)
    work: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    if _has_table(db, "job_work_minutely"):  # schema 4 and later
        for group, unit, units in db.execute(
            f"SELECT {column}, m.unit, sum(m.units) FROM job_work_minutely m "
            "JOIN jobs j ON j.job_key = m.job_key "
            f"WHERE m.minute_unix_s >= ? AND m.minute_unix_s < ? GROUP BY {column}, m.unit",
            window,
        ):
            work[group or "(unknown)"][unit] += units
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
        energy_kwh = entry["energy_j"] / 3.6e6
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


def _has_table(db: sqlite3.Connection, name: str) -> bool:
    query = "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?"
    return db.execute(query, (name,)).fetchone()[0] > 0


def parse_time(text: str, now_unix_s: float) -> float:
    """Unix seconds, ISO 8601 (UTC if no zone), or an age such as 30m, 24h, 7d."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[:-1].replace(".", "", 1).isdigit() and text[-1] in units:
        return now_unix_s - float(text[:-1]) * units[text[-1]]
    try:
        return float(text)
    except ValueError:
        pass
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: use 2026-11-01T00:00, 24h or unix seconds"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
