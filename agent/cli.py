"""The `wattwise` command: thin, builds a Config and hands it on."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise.errors import ConfigError, ListenError

if TYPE_CHECKING:  # each command imports what it uses: `--help` pays for none of it
    from wattwise.accounts.reports import JobSummary
    from wattwise.config import Config
    from wattwise.model import Finding

# Plain help text: rendering it with rich would cost ~150 ms on every `--help`.
app = typer.Typer(
    help="wattwise: energy of GPU servers from hardware counters (RAPL, NVML), for Prometheus.",
    no_args_is_help=True,
    add_completion=False,
    rich_markup_mode=None,
    pretty_exceptions_enable=False,
)
config_app = typer.Typer(
    help="Work with configuration files.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(config_app, name="config")
job_app = typer.Typer(
    help="Look at one job's account.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(job_app, name="job")

ConfigOption = Annotated[
    Path | None,
    typer.Option("--config", "-c", help="YAML config file.", envvar="WATTWISE_CONFIG"),
]
SysfsOption = Annotated[
    Path | None, typer.Option(help="Root of sysfs (default /sys); a fixture tree in tests.")
]
ProcfsOption = Annotated[Path | None, typer.Option(help="Root of procfs (default /proc).")]
CgroupOption = Annotated[
    Path | None, typer.Option(help="Root of the cgroup trees (default /sys/fs/cgroup).")
]
WebConfigOption = Annotated[
    Path | None,
    typer.Option(
        "--web-config-file",
        "--web.config.file",
        help="exporter-toolkit web configuration (TLS, client certificates, basic auth), the "
        "file node_exporter takes; read again when it changes (web_config_file).",
    ),
]


def _config(path: Path | None, **overrides: Any) -> Config:
    from wattwise.config import load_config

    try:
        return load_config(path, overrides)
    except ConfigError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None


def _logging(config: Config) -> None:
    logging.basicConfig(
        level=config.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def _version(value: bool) -> None:
    if value:
        from wattwise import __version__

        typer.echo(f"wattwise {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print version.")
    ] = False,
) -> None:
    pass


@app.command()
def run(
    config: ConfigOption = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for /metrics (default 0.0.0.0:9877).")
    ] = None,
    web_config_file: WebConfigOption = None,
    sysfs_root: SysfsOption = None,
    procfs_root: ProcfsOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Run the agent in the foreground: sample every interval, serve /metrics.

    SIGINT (Ctrl-C) or SIGTERM stops it within one interval.
    """
    from wattwise.app.daemon import serve

    cfg = _config(
        config,
        listen=listen,
        web_config_file=web_config_file,
        sysfs_root=sysfs_root,
        procfs_root=procfs_root,
        cgroup_root=cgroup_root,
    )
    _logging(cfg)
    try:
        serve(cfg)
    except ConfigError as exc:  # the web configuration
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    except ListenError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def facility(
    config: ConfigOption = None,
    listen: Annotated[
        str | None, typer.Option(help="HOST:PORT for the facility's /metrics (default :9878).")
    ] = None,
    web_config_file: WebConfigOption = None,
) -> None:
    """Run the site's PUE daemon (one per site): read the facility meter and the IT energy
    (by default the node agents' counters through Prometheus) together, and serve
    wattwise_facility_pue{window="5m|1h|24h"} on /metrics.

    Node agents take their PUE from it with carbon.pue_url. SIGINT or SIGTERM stops it.
    """
    from wattwise.facility.daemon import serve_facility

    cfg = _config(
        config, facility={"listen": listen} if listen else None, web_config_file=web_config_file
    )
    _logging(cfg)
    try:
        serve_facility(cfg.facility, cfg.web_config_file)
    except ConfigError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    except ListenError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def probe(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    sysfs_root: SysfsOption = None,
    procfs_root: ProcfsOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """List every energy source looked for, what was found, and how to fix each problem."""
    from wattwise.app.daemon import Agent

    cfg = _config(config, sysfs_root=sysfs_root, procfs_root=procfs_root, cgroup_root=cgroup_root)
    _logging(cfg)
    agent = Agent(cfg, durable=False)
    try:
        findings = agent.probe()
    finally:
        agent.close()
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(f) for f in findings], indent=2))
        return
    rows = [("SOURCE", "ITEM", "STATUS", "LOCATION", "DETAIL")]
    rows += [(f.source, f.item, _status(f), f.location, f.detail) for f in findings]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for *cells, detail in rows:
        typer.echo(
            "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + "  " + detail
        )
    fixes = [f for f in findings if f.fix]
    if fixes:
        typer.echo("\nHow to fix:")
        for f in fixes:
            typer.echo(f"  {f.source} {f.item}: {f.fix}")


@app.command()
def once(
    config: ConfigOption = None,
    interval: Annotated[
        float, typer.Option(min=0.0, help="Seconds between the two readings.")
    ] = 1.0,
    output_format: Annotated[
        str, typer.Option("--format", help="prom (what /metrics serves) or json.")
    ] = "prom",
    sysfs_root: SysfsOption = None,
    procfs_root: ProcfsOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Take two readings INTERVAL seconds apart and print what /metrics would serve."""
    from prometheus_client import CollectorRegistry, generate_latest

    from wattwise.app.daemon import Agent
    from wattwise.exporters.prometheus import SnapshotCollector

    if output_format not in ("prom", "json"):
        typer.echo("wattwise: --format must be prom or json", err=True)
        raise typer.Exit(2)
    cfg = _config(config, sysfs_root=sysfs_root, procfs_root=procfs_root, cgroup_root=cgroup_root)
    _logging(cfg)
    agent = Agent(cfg, durable=False)
    try:
        agent.tick()
        time.sleep(interval)
        snapshot = agent.tick()
    finally:
        agent.close()
    if output_format == "json":
        data = dataclasses.asdict(snapshot)
        data["node_totals"] = [dataclasses.asdict(t) for t in snapshot.node_totals]
        typer.echo(json.dumps(data, indent=2))
        return
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    typer.echo(generate_latest(registry).decode(), nl=False)


def _status(finding: Finding) -> str:
    return "ok" if finding.ok else "PROBLEM"


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


@app.command("work")
def work_command(
    count: Annotated[float, typer.Argument(help="Units done since the last report (or --total).")],
    units: Annotated[str, typer.Option("--units", help="tokens, samples, requests, ...")],
    total: Annotated[
        bool, typer.Option("--total", help="COUNT is a cumulative counter; a drop is a restart.")
    ] = False,
    job: Annotated[
        str | None, typer.Option(help="Job id or key; default: the job this command runs in.")
    ] = None,
    socket_path: Annotated[
        Path | None, typer.Option("--socket", help="The agent's work socket (work.socket_path).")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Report a job's work (tokens generated, samples trained, ...) to the local agent, for
    performance per watt: wattwise work --units tokens 512.

    From inside a job it is charged to that job; root, or the job's own user, may name one
    with --job. Python code can call wattwise.work.client.report_work instead.
    """
    from wattwise.work.client import WorkReportError, report_work

    path = socket_path or _config(config).work.socket_path
    try:
        answer = report_work(
            units,
            add=None if total else count,
            total=count if total else None,
            job=job,
            socket_path=path,
        )
    except WorkReportError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{answer['job']}: {answer['total_units']:g} {answer['unit']}")


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_command(
    ctx: typer.Context,
    job_name: Annotated[str | None, typer.Option(help="Name for the job (default: CMD).")] = None,
    config: ConfigOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Run CMD as its own job: wattwise exec [--job-name NAME] -- CMD [ARGS...].

    A transient systemd scope where systemd runs, else a cgroup wattwise creates. CMD's exit
    status is passed through.
    """
    from wattwise.jobs.exec import run_as_job

    if not ctx.args:
        typer.echo(
            "wattwise exec: give a command after --, e.g. wattwise exec -- python train.py",
            err=True,
        )
        raise typer.Exit(2)
    cfg = _config(config, cgroup_root=cgroup_root)
    try:
        code = run_as_job(list(ctx.args), job_name, cfg.cgroup_root)
    except FileNotFoundError:
        typer.echo(f"wattwise exec: command not found: {ctx.args[0]}", err=True)
        raise typer.Exit(127) from None
    raise typer.Exit(code)


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="Config file to validate.")],
) -> None:
    """Validate a config file (with WATTWISE_* overrides) and print the effective values."""
    import yaml

    from wattwise.config import effective_values

    cfg = _config(file)
    typer.echo(f"# {file}: valid. Effective values (file < WATTWISE_* environment):")
    typer.echo(yaml.safe_dump(effective_values(cfg), sort_keys=False), nl=False)


def main() -> None:
    app()


@app.command("health")
def health_command(
    url: Annotated[
        str | None,
        typer.Option(
            help="The agent's /metrics. [default: http://127.0.0.1:9877/metrics, https:// when "
            "the web configuration sets up TLS]"
        ),
    ] = None,
    max_age_s: Annotated[
        float, typer.Option(help="Oldest acceptable last tick, in seconds.")
    ] = 30.0,
    web_config_file: WebConfigOption = None,
    ca_file: Annotated[
        Path | None,
        typer.Option(
            help="CA bundle to verify the agent's certificate; default with a web configuration: "
            "trust the agent's own certificate (cert_file), as on the same host."
        ),
    ] = None,
    cert_file: Annotated[
        Path | None, typer.Option(help="Client certificate, where the agent requires one.")
    ] = None,
    key_file: Annotated[Path | None, typer.Option(help="The client certificate's key.")] = None,
    username: Annotated[str | None, typer.Option(help="Basic auth user.")] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the basic auth password.")
    ] = None,
) -> None:
    """Exit 0 if the agent answers and its sampling loop ticked within --max-age-s, else 1 with
    the reason: for a container HEALTHCHECK or a Kubernetes exec probe. With the agent's web
    configuration it speaks TLS, presents a client certificate and basic auth as told."""
    import time

    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    from wattwise.app.health import client_settings

    try:
        target, verify, auth = client_settings(
            url, web_config_file, ca_file, cert_file, key_file, username, password_file
        )
    except ConfigError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        response = httpx.get(target, timeout=5, verify=verify, auth=auth)
        response.raise_for_status()
        last = [
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "wattwise_last_tick_timestamp_seconds"
        ]
    except (httpx.HTTPError, ValueError) as exc:
        typer.echo(f"wattwise: unhealthy: {target}: {exc}", err=True)
        raise typer.Exit(1) from None
    if not last:
        typer.echo(f"wattwise: unhealthy: {target} has not ticked yet", err=True)
        raise typer.Exit(1)
    age_s = time.time() - last[0]
    if age_s > max_age_s:
        typer.echo(
            f"wattwise: unhealthy: last tick {age_s:.0f} s ago (> {max_age_s:g} s)", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"healthy: last tick {age_s:.1f} s ago")
