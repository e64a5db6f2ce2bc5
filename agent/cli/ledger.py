"""`jobs`, `job show`, `report`, `ledger export`: read-only views of the ledger."""

from __future__ import annotations

import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from wattwise.cli import (
    ConfigOption,
    _config,
    app,
    job_app,
    ledger_app,
)


class ReportFormat(StrEnum):
    table = "table"
    csv = "csv"
    json = "json"


class ExportFormat(StrEnum):
    csv = "csv"
    jsonl = "jsonl"


class GroupBy(StrEnum):
    job = "job"
    user = "user"
    scheduler = "scheduler"  # the node's ledger only
    team = "team"  # --prometheus only
    cluster = "cluster"  # --prometheus only


class Period(StrEnum):
    day = "day"
    month = "month"


TIME_FORMS = "ISO 8601 (UTC if no zone), an age (30m, 24h, 7d), unix seconds or now"
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
    """Running jobs (with --all, finished ones too) from the ledger: energy (and how much of
    it was the CPU estimate rather than measured), duration, power."""
    from wattwise.accounts.reports import jobs
    from wattwise.exporters.text import jobs_json, jobs_table

    found = jobs(_ledger(config, ledger), include_ended)
    typer.echo(jobs_json(found) if as_json else jobs_table(found))


@job_app.command("show")
def job_show(
    job: Annotated[str, typer.Argument(metavar="JOB", help="Job key (slurm:42) or job id (42).")],
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


SciOption = Annotated[
    bool,
    typer.Option(
        "--sci",
        help="Software Carbon Intensity terms instead: E (energy_j, energy_kwh), I "
        "(intensity_g_per_kwh, effective, PUE included), O (operational_g), M (embodied_g) "
        "and SCI = (O + M) per job-hour. With --prometheus, every table has job_hours and "
        "sci_g_per_job_hour.",
    ),
]
PrometheusOption = Annotated[
    str | None,
    typer.Option(
        metavar="URL",
        help="Report the fleet from this Prometheus-compatible query API (Prometheus, Thanos "
        "Query, Mimir's /prometheus, VictoriaMetrics) instead of this node's ledger.",
    ),
]
PerOption = Annotated[
    Period | None, typer.Option(help="With --prometheus: a row per UTC day or month.")
]
JobOption = Annotated[
    str | None,
    typer.Option(metavar="JOBID", help="With --prometheus: one job (slurm:12, or a Slurm id)."),
]
TokenOption = Annotated[
    Path | None, typer.Option(help="With --prometheus: a file holding a bearer token.")
]
UserOption = Annotated[
    str | None, typer.Option(metavar="USER", help="With --prometheus: basic auth user.")
]
PasswordOption = Annotated[
    Path | None, typer.Option(help="With --prometheus: a file holding the password.")
]
CaOption = Annotated[Path | None, typer.Option(help="With --prometheus: CA bundle.")]
InsecureOption = Annotated[
    bool, typer.Option("--insecure-skip-verify", help="With --prometheus: skip TLS checks.")
]
PartialOption = Annotated[
    bool,
    typer.Option(
        help="With --prometheus: print totals even when the storage says part of the data is "
        "missing (they are then too small)."
    ),
]


@app.command("report")
def report_command(
    since: Annotated[str, typer.Option(metavar="TIME", help=f"Start: {TIME_FORMS}.")] = "24h",
    until: Annotated[str, typer.Option(metavar="TIME", help="End, same forms.")] = "now",
    group_by: Annotated[
        GroupBy,
        typer.Option(help="team and cluster with --prometheus only; scheduler without it."),
    ] = GroupBy.job,
    output_format: Annotated[ReportFormat, typer.Option("--format")] = ReportFormat.table,
    sci: SciOption = False,
    prometheus: PrometheusOption = None,
    per: PerOption = None,
    job: JobOption = None,
    bearer_token_file: TokenOption = None,
    basic_auth_user: UserOption = None,
    basic_auth_password_file: PasswordOption = None,
    ca_file: CaOption = None,
    insecure_skip_verify: InsecureOption = False,
    allow_partial: PartialOption = False,
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Energy (or, with --sci, carbon) per job, user or scheduler over a time window, from the
    per-minute ledger series; with --prometheus, per job (over all its nodes), user, team or
    cluster from the fleet's storage (docs/fleet.md). Measured and estimated energy are
    always apart."""
    start, end = _window(since, until)
    auth = store_auth(
        bearer_token_file, basic_auth_user, basic_auth_password_file, ca_file, insecure_skip_verify
    )
    fleet_only = {"--per": per, "--job": job, "--allow-partial": allow_partial, **auth}
    given = [name for name, value in fleet_only.items() if value not in (None, False)]
    if prometheus is None and given:
        names = ", ".join(n if n.startswith("--") else f"--{n.replace('_', '-')}" for n in given)
        typer.echo(f"wattwise: {names} need --prometheus", err=True)
        raise typer.Exit(2)
    if prometheus is not None and ledger is not None:
        typer.echo("wattwise: --ledger is for the node's ledger, not --prometheus", err=True)
        raise typer.Exit(2)
    by, period = group_by.value, per.value if per is not None else None
    if prometheus is None:
        rows, notes, columns = _ledger_report(config, ledger, start, end, by, sci)
    else:
        rows, notes, columns = _fleet_report(
            prometheus, auth, start, end, by, period, job, allow_partial
        )
    _print_report(rows, notes, columns, output_format.value, start, end)


def store_auth(
    bearer_token_file: Path | None,
    basic_auth_user: str | None,
    basic_auth_password_file: Path | None,
    ca_file: Path | None,
    insecure_skip_verify: bool,
) -> dict[str, Any]:
    """PromQL's keyword arguments from the store options the report and the epilog share."""
    return {
        "bearer_token_file": bearer_token_file,
        "basic_auth_user": basic_auth_user,
        "basic_auth_password_file": basic_auth_password_file,
        "ca_file": ca_file,
        "insecure_skip_verify": insecure_skip_verify,
    }


def _window(since: str, until: str) -> tuple[float, float]:
    """[since, until) in unix seconds, or exit 2 saying what is wrong with them."""
    from wattwise.accounts.reports import parse_time

    now = time.time()
    try:
        start, end = parse_time(since, now), parse_time(until, now)
    except ValueError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    if start >= end:
        typer.echo(f"wattwise: --since ({since}) is not before --until ({until})", err=True)
        raise typer.Exit(2)
    return start, end


def _ledger_report(
    config: Path | None, ledger: Path | None, start: float, end: float, group_by: str, sci: bool
) -> tuple[list, list[str], list[str]]:
    from wattwise.accounts.reports import (
        GROUPS,
        basis_notes,
        intensity_notes,
        report,
        sci_report,
        window_notes,
    )
    from wattwise.exporters.text import report_columns

    if group_by not in GROUPS:
        typer.echo("wattwise: --group-by team or cluster needs --prometheus", err=True)
        raise typer.Exit(2)
    db = _ledger(config, ledger)
    rows = (sci_report if sci else report)(db, start, end, group_by)
    notes = window_notes(db, start) + basis_notes(rows) + intensity_notes(db, start, end)
    return rows, notes, report_columns(rows, group_by, sci)


def _fleet_report(
    url: str,
    auth: dict,
    start: float,
    end: float,
    group_by: str,
    per: str | None,
    job: str | None,
    allow_partial: bool,
) -> tuple[list, list[str], list[str]]:
    from wattwise.accounts.fleet import FLEET_GROUPS, PartialData, TooManyPeriods, fleet_report
    from wattwise.errors import ConfigError, QueryError
    from wattwise.exporters.text import fleet_columns
    from wattwise.net.promql import PromQL

    if group_by not in FLEET_GROUPS:
        typer.echo("wattwise: --group-by scheduler is for the node's ledger", err=True)
        raise typer.Exit(2)
    try:
        api = PromQL(url, **auth)
    except (QueryError, ConfigError) as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        found = fleet_report(api, start, end, group_by, per, job, allow_partial)
    except PartialData as exc:
        typer.echo(f"wattwise: {exc}; --allow-partial prints them anyway", err=True)
        raise typer.Exit(3) from None
    except QueryError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None
    except TooManyPeriods as exc:  # asked nothing
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    finally:
        api.close()
    return found.rows, found.notes, fleet_columns(found.rows)


def _print_report(
    rows: list, notes: list[str], columns: list[str], output_format: str, start: float, end: float
) -> None:
    from wattwise.exporters.text import report_csv, report_json, report_table

    for note in notes:
        typer.echo(f"wattwise: note: {note}", err=True)
    if output_format == "json":
        typer.echo(report_json(start, end, notes, rows))
    elif output_format == "csv":
        typer.echo(report_csv(rows, columns), nl=False)
    else:
        typer.echo(report_table(rows, columns))


@ledger_app.command("export")
def export_command(
    since: Annotated[
        str, typer.Option(metavar="TIME", help=f"Jobs that ended from: {TIME_FORMS}.")
    ] = "30d",
    until: Annotated[str, typer.Option(metavar="TIME", help="Until, same forms.")] = "now",
    output_format: Annotated[ExportFormat, typer.Option("--format")] = ExportFormat.csv,
    config: ConfigOption = None,
    ledger: LedgerOption = None,
) -> None:
    """Finished jobs with their lifetime energy and carbon, one row each, for a GHG inventory
    or a data warehouse: the node and cluster they ran on (ledger.node, ledger.cluster),
    energy and operational carbon split into measured and estimated, embodied carbon, work
    units. Written to standard output."""
    from wattwise.accounts.reports import EXPORT_COLUMNS, finished_jobs
    from wattwise.exporters.text import report_csv, rows_jsonl

    start, end = _window(since, until)
    rows = finished_jobs(_ledger(config, ledger), start, end)
    if output_format is ExportFormat.jsonl:
        typer.echo(rows_jsonl(rows), nl=False)
        return
    units = sorted({k for row in rows for k in row} - set(EXPORT_COLUMNS))
    typer.echo(report_csv(rows, [*EXPORT_COLUMNS, *units]), nl=False)
