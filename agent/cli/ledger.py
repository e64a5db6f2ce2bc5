"""`jobs`, `job show`, `report`: read-only views of the ledger."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise.cli import (
    ConfigOption,
    _config,
    app,
    job_app,
)

if TYPE_CHECKING:  # each command imports what it uses: `--help` pays for none of it
    from wattwise.accounts.reports import JobSummary


LedgerOption = Annotated[
    Path | None, typer.Option("--ledger", help="Ledger file (default: ledger.path from config).")
]


def _ledger(config: Path | None, ledger: Path | None):
    from wattwise.accounts.ledger import LedgerError
    from wattwise.accounts.reports import open_read_only

    # --ledger needs no configuration: loading it (pydantic) would be most of a report's time.
    path = ledger if ledger is not None else _config(config).ledger.path
    try:
        return open_read_only(path)
    except LedgerError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None


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
        "mean_power_w": job.mean_power_w,
    }


def _table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())


@app.command("jobs")
def jobs_command(
    config: ConfigOption = None,
    ledger: LedgerOption = None,
    include_ended: Annotated[bool, typer.Option("--all", help="Include finished jobs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Running jobs (with --all, finished ones too) from the ledger: energy, duration, power."""
    from wattwise.accounts.reports import jobs

    found = jobs(_ledger(config, ledger), include_ended)
    if as_json:
        typer.echo(json.dumps([_summary_row(j) for j in found], indent=2))
        return
    rows = [["JOB", "STATE", "DURATION_S", "ENERGY_J", "IDLE_J", "MEAN_W", "BY DOMAIN (J)"]]
    for j in found:
        domains = " ".join(f"{d}={e:.1f}" for d, e in sorted(j.energy_j.items()))
        power = f"{j.mean_power_w:.1f}" if j.mean_power_w is not None else "-"
        state = "ended" if j.ended_unix_s else "running"
        total = j.active_j + j.idle_j
        rows.append(
            [
                j.job_key,
                state,
                f"{j.duration_s:.0f}",
                f"{total:.1f}",
                f"{j.idle_j:.1f}",
                power,
                domains,
            ]
        )
    _table(rows)


@job_app.command("show")
def job_show(
    job: Annotated[str, typer.Argument(help="Job key (slurm:42) or job id (42).")],
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """One job's account from the ledger, as JSON."""
    from wattwise.accounts.reports import jobs

    found = jobs(_ledger(config, ledger), include_ended=True, job_key=job)
    if not found:
        typer.echo(f"wattwise: no job {job!r} in the ledger", err=True)
        raise typer.Exit(1)
    typer.echo(json.dumps([_summary_row(j) for j in found], indent=2))


SCI_COLUMNS = (
    "jobs",
    "job_hours",
    "energy_j",
    "energy_kwh",
    "intensity_g_per_kwh",
    "operational_g",
    "embodied_g",
    "carbon_g",
    "sci_g_per_job_hour",
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


@app.command("report")
def report_command(
    since: Annotated[
        str, typer.Option(help="Start: ISO 8601 (UTC if no zone), 24h, or unix s.")
    ] = "24h",
    until: Annotated[str, typer.Option(help="End, same forms. [default: now]")] = "0s",
    group_by: Annotated[str, typer.Option(help="job, user or scheduler.")] = "job",
    output_format: Annotated[str, typer.Option("--format", help="table, csv or json.")] = "table",
    sci: Annotated[
        bool,
        typer.Option(
            "--sci",
            help="Software Carbon Intensity terms instead: E (energy_j, energy_kwh), I "
            "(intensity_g_per_kwh, effective, PUE included), O (operational_g), M (embodied_g) "
            "and SCI = (O + M) per job-hour.",
        ),
    ] = False,
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Energy (or, with --sci, carbon) per job, user or scheduler over a time window, from the
    per-minute ledger series."""
    import csv

    from wattwise.accounts.reports import GROUPS, parse_time, report, sci_report, window_notes

    if group_by not in GROUPS or output_format not in ("table", "csv", "json"):
        typer.echo(
            "wattwise: --group-by is job, user or scheduler; --format table, csv or json", err=True
        )
        raise typer.Exit(2)
    now = time.time()
    try:
        start, end = parse_time(since, now), parse_time(until, now)
    except ValueError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    db = _ledger(config, ledger)
    rows = (sci_report if sci else report)(db, start, end, group_by)
    notes = window_notes(db, start)
    for note in notes:
        typer.echo(f"wattwise: note: {note}", err=True)
    if output_format == "json":
        window = {"since_unix_s": start, "until_unix_s": end, "notes": notes}
        typer.echo(json.dumps({**window, "rows": rows}, indent=2))
        return
    if sci:
        columns = [group_by, *SCI_COLUMNS]
        columns += sorted({k for r in rows for k in r} - set(columns))  # per work unit
    else:
        columns = [group_by, "jobs", "energy_j", "active_j", "idle_j"]
        columns += sorted({k for r in rows for k in r} - set(columns))
    if output_format == "csv":
        writer = csv.DictWriter(sys.stdout, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return
    table = [[c.upper() for c in columns]]
    table += [[_cell(r.get(c)) for c in columns] for r in rows]
    _table(table)
