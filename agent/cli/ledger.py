"""`jobs`, `job show`, `report`, `ledger export`: read-only views of the ledger."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated

import typer

from wattwise.cli import (
    ConfigOption,
    _config,
    app,
    job_app,
    ledger_app,
)

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


@app.command("jobs")
def jobs_command(
    config: ConfigOption = None,
    ledger: LedgerOption = None,
    include_ended: Annotated[bool, typer.Option("--all", help="Include finished jobs.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Running jobs (with --all, finished ones too) from the ledger: energy, duration, power."""
    from wattwise.accounts.reports import jobs
    from wattwise.exporters.text import jobs_json, jobs_table

    found = jobs(_ledger(config, ledger), include_ended)
    typer.echo(jobs_json(found) if as_json else jobs_table(found))


@job_app.command("show")
def job_show(
    job: Annotated[str, typer.Argument(help="Job key (slurm:42) or job id (42).")],
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """One job's account from the ledger, as JSON."""
    from wattwise.accounts.reports import jobs
    from wattwise.exporters.text import jobs_json

    found = jobs(_ledger(config, ledger), include_ended=True, job_key=job)
    if not found:
        typer.echo(f"wattwise: no job {job!r} in the ledger", err=True)
        raise typer.Exit(1)
    typer.echo(jobs_json(found))


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
    from wattwise.accounts.reports import (
        GROUPS,
        basis_notes,
        parse_time,
        report,
        sci_report,
        window_notes,
    )
    from wattwise.exporters.text import report_columns, report_csv, report_json, report_table

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
    notes = window_notes(db, start) + basis_notes(rows)
    for note in notes:
        typer.echo(f"wattwise: note: {note}", err=True)
    if output_format == "json":
        typer.echo(report_json(start, end, notes, rows))
        return
    columns = report_columns(rows, group_by, sci)
    if output_format == "csv":
        typer.echo(report_csv(rows, columns), nl=False)
    else:
        typer.echo(report_table(rows, columns))


@ledger_app.command("export")
def export_command(
    since: Annotated[
        str, typer.Option(help="Jobs that ended from: ISO 8601 (UTC if no zone), 30d, unix s.")
    ] = "30d",
    until: Annotated[str, typer.Option(help="Until, same forms. [default: now]")] = "0s",
    output_format: Annotated[str, typer.Option("--format", help="csv or jsonl.")] = "csv",
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Finished jobs with their lifetime energy and carbon, one row each, for a GHG inventory
    or a data warehouse: the node and cluster they ran on (ledger.node, ledger.cluster),
    energy and operational carbon split into measured and estimated, embodied carbon, work
    units. Written to standard output."""
    from wattwise.accounts.reports import EXPORT_COLUMNS, finished_jobs, parse_time
    from wattwise.exporters.text import report_csv, rows_jsonl

    if output_format not in ("csv", "jsonl"):
        typer.echo("wattwise: --format is csv or jsonl", err=True)
        raise typer.Exit(2)
    now = time.time()
    try:
        start, end = parse_time(since, now), parse_time(until, now)
    except ValueError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    if start >= end:
        typer.echo(f"wattwise: --since ({since}) is not before --until ({until})", err=True)
        raise typer.Exit(2)
    rows = finished_jobs(_ledger(config, ledger), start, end)
    if output_format == "jsonl":
        typer.echo(rows_jsonl(rows), nl=False)
        return
    units = sorted({k for row in rows for k in row} - set(EXPORT_COLUMNS))
    typer.echo(report_csv(rows, [*EXPORT_COLUMNS, *units]), nl=False)
