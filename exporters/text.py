"""What the CLI prints: tables, CSV and JSON of a snapshot (`once`), the probe's findings, the
ledger's jobs (`jobs`, `job show`) and reports (`report`). Each function returns the text."""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from wattwise.model import BASIS_FIGURES, Finding, JobSummary, Snapshot

REPORT_COLUMNS = ("jobs", "energy_j", "measured_j", "estimated_j", "active_j", "idle_j")
SCI_COLUMNS = (
    "jobs",
    "job_hours",
    "energy_j",
    "estimated_j",
    "energy_kwh",
    "intensity_g_per_kwh",
    "operational_g",
    "embodied_g",
    "carbon_g",
    "sci_g_per_job_hour",
)


def table(rows: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
        for row in rows
    )


def snapshot_json(snapshot: Snapshot) -> str:
    data = dataclasses.asdict(snapshot)
    data["node_totals"] = [dataclasses.asdict(t) for t in snapshot.node_totals]
    return json.dumps(data, indent=2)


def findings_json(findings: Iterable[Finding]) -> str:
    return json.dumps([dataclasses.asdict(f) for f in findings], indent=2)


def findings_table(findings: Sequence[Finding]) -> str:
    """One line per finding (the detail unpadded, last), then how to fix each problem."""
    rows = [("SOURCE", "ITEM", "STATUS", "LOCATION", "DETAIL")]
    rows += [
        (f.source, f.item, "ok" if f.ok else "PROBLEM", f.location, f.detail) for f in findings
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + detail
        for *cells, detail in rows
    ]
    fixes = [f for f in findings if f.fix]
    if fixes:
        lines.append("\nHow to fix:")
        lines += [f"  {f.source} {f.item}: {f.fix}" for f in fixes]
    return "\n".join(lines)


def jobs_json(found: Iterable[JobSummary]) -> str:
    return json.dumps([_summary_row(j) for j in found], indent=2)


def jobs_table(found: Iterable[JobSummary]) -> str:
    rows = [["JOB", "STATE", "DURATION_S", "ENERGY_J", "ESTIMATED_J", "IDLE_J", "MEAN_W",
             "BY DOMAIN (J)"]]  # fmt: skip
    for j in found:
        domains = " ".join(f"{d}={e:.1f}" for d, e in sorted(j.energy_j.items()))
        power = f"{j.mean_power_w:.1f}" if j.mean_power_w is not None else "-"
        state = "ended" if j.ended_unix_s else "running"
        total = j.active_j + j.idle_j
        cells = [j.job_key, state, f"{j.duration_s:.0f}", f"{total:.1f}", f"{j.estimated_j:.1f}"]
        cells.append(f"{j.idle_j:.1f}")
        rows.append([*cells, power, domains])
    return table(rows)


def report_columns(rows: Iterable[Mapping[str, Any]], group_by: str, sci: bool) -> list[str]:
    """The group, the report's own columns, then any others (per work unit) in name order."""
    columns = [group_by, *(SCI_COLUMNS if sci else REPORT_COLUMNS)]
    return columns + sorted({k for r in rows for k in r} - set(columns))


FLEET_COLUMNS = (*BASIS_FIGURES, "carbon_g", "jobs", "nodes", "job_hours", "sci_g_per_job_hour")


def fleet_columns(rows: Iterable[Mapping[str, Any]]) -> list[str]:
    """The group's columns (cluster first), the period, then the figures."""
    keys = {k for r in rows for k in r}
    first = [k for k in ("cluster", "job", "job_name", "user", "team", "period") if k in keys]
    return first + [c for c in FLEET_COLUMNS if c in keys]


def report_json(
    since_unix_s: float, until_unix_s: float, notes: list[str], rows: list[dict[str, Any]]
) -> str:
    window = {"since_unix_s": since_unix_s, "until_unix_s": until_unix_s, "notes": notes}
    return json.dumps({**window, "rows": rows}, indent=2)


def rows_jsonl(rows: Iterable[Mapping[str, Any]]) -> str:
    return "".join(json.dumps(row, sort_keys=False) + "\n" for row in rows)


def report_csv(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _inert(v) for k, v in row.items()} for row in rows)
    return out.getvalue()


def _inert(value: Any) -> Any:
    """Text a spreadsheet would run as a formula (a job named `=HYPERLINK(...)`) starts with a
    quote, as OWASP's CSV injection advice says; numbers are left alone."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


def report_table(rows: Iterable[Mapping[str, Any]], columns: list[str]) -> str:
    cells = [[c.upper() for c in columns]]
    cells += [[_cell(r.get(c)) for c in columns] for r in rows]
    return table(cells)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def _summary_row(job: JobSummary) -> dict[str, Any]:
    return {
        "job_key": job.job_key,
        "scheduler": job.scheduler,
        "kind": job.kind,
        "job_id": job.job_id,
        "name": job.name,
        "user": job.user,
        "first_seen_unix_s": job.first_seen_unix_s,
        "last_seen_unix_s": job.last_seen_unix_s,
        "ended_unix_s": job.ended_unix_s,
        "duration_s": job.duration_s,
        "energy_j": job.energy_j,
        "active_j": job.active_j,
        "idle_j": job.idle_j,
        "measured_j": job.active_j + job.idle_j - job.estimated_j,
        "estimated_j": job.estimated_j,
        "mean_power_w": job.mean_power_w,
    }
