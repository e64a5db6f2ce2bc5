"""`slurm epilog` and `slurm show`: a job's energy and carbon written into Slurm's own record
(AdminComment) from the fleet's store, and read back."""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise.cli import slurm_app
from wattwise.cli.ledger import (
    CaOption,
    InsecureOption,
    PasswordOption,
    TokenOption,
    UserOption,
    store_auth,
)

if TYPE_CHECKING:
    from wattwise.net.promql import PromQL

SettleOption = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=3600.0,
        metavar="SECONDS",
        help="Wait this long (0 to 3600) first, for the nodes' last figures to be scraped.",
    ),
]
ClusterOption = Annotated[
    str | None,
    typer.Option(metavar="NAME", help="Only this cluster's series. [default: $SLURM_CLUSTER_NAME]"),
]


@slurm_app.command("epilog")
def epilog_command(
    prometheus: Annotated[
        str,
        typer.Option(
            metavar="URL", help="The fleet's Prometheus-compatible query API (docs/fleet.md)."
        ),
    ],
    job: Annotated[
        str | None,
        typer.Option(
            metavar="JOBID", help="The job's id. [default: $SLURM_JOB_ID, as Slurm sets it]"
        ),
    ] = None,
    cluster: ClusterOption = None,
    settle_s: SettleOption = 30.0,
    bearer_token_file: TokenOption = None,
    basic_auth_user: UserOption = None,
    basic_auth_password_file: PasswordOption = None,
    ca_file: CaOption = None,
    insecure_skip_verify: InsecureOption = False,
) -> None:
    """Run as the controller's EpilogSlurmctld: reads the ended job's energy, carbon and SCI
    over all its nodes from the store and writes them into its AdminComment (`wattwise1:...`)
    through sacctmgr, where sacct keeps them after the store's retention. A comment that holds
    another tool's summary is left alone. An array task is its own job (SLURM_JOB_ID). Exits 0
    without writing when the store has no figures for the job (a job too short to be
    scraped), saying so on stderr."""
    job_id = job or os.environ.get("SLURM_JOB_ID", "")
    if not job_id.isdigit():
        typer.echo("wattwise: no job: give --job or run as EpilogSlurmctld", err=True)
        raise typer.Exit(2)
    cluster = cluster if cluster is not None else os.environ.get("SLURM_CLUSTER_NAME", "")
    auth = store_auth(
        bearer_token_file, basic_auth_user, basic_auth_password_file, ca_file, insecure_skip_verify
    )
    api = _store(prometheus, auth, job_id)  # unusable settings are said before the wait
    try:
        time.sleep(settle_s)
        _write_back(api, job_id, cluster)
    finally:
        api.close()


def _store(url: str, auth: dict[str, Any], job_id: str) -> PromQL:
    from wattwise.errors import ConfigError, QueryError
    from wattwise.net.promql import PromQL

    try:
        return PromQL(url, **auth)
    except (QueryError, ConfigError) as exc:
        typer.echo(f"wattwise: job {job_id}: nothing written: {exc}", err=True)
        raise typer.Exit(2) from None


def _write_back(api: PromQL, job_id: str, cluster: str) -> None:
    from wattwise.accounts import slurm_comment

    try:
        fields = slurm_comment.job_fields(job_id)
    except slurm_comment.SlurmError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None
    totals = _job_totals(api, job_id, fields, cluster)
    if totals is None:
        return
    existing = slurm_comment.others(fields.get("AdminComment", ""))
    if existing:
        typer.echo(
            f"wattwise: job {job_id}: its AdminComment holds another tool's summary "
            f"({existing[:40]}...): not rewritten, as sacctmgr would lowercase it",
            err=True,
        )
        return
    try:
        ours = slurm_comment.comment(totals, slurm_comment.runtime_s(fields), cluster)
        where = slurm_comment.write(job_id, fields, ours)
    except slurm_comment.SlurmError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"wattwise: job {job_id}: written by {where}: {ours}", err=True)


def _job_totals(
    api: PromQL, job_id: str, fields: dict[str, str], cluster: str
) -> dict[str, float] | None:
    """The job's totals over its nodes from the store, read from its start (scontrol's
    StartTime, local time on the controller) to now; None (said) when there are none."""
    from wattwise.accounts import slurm_comment
    from wattwise.accounts.fleet import UnknownJob, fleet_report
    from wattwise.errors import QueryError

    now = time.time()
    since = slurm_comment.start_s(fields, now)
    try:
        found = fleet_report(api, since, now + 1, "job", job=f"slurm:{job_id}")
    except UnknownJob as exc:  # too short to be scraped: nothing to keep
        typer.echo(f"wattwise: job {job_id}: nothing written: {exc}", err=True)
        return None
    except QueryError as exc:
        typer.echo(f"wattwise: job {job_id}: nothing written: {exc}", err=True)
        raise typer.Exit(1) from None
    # This cluster's series; a store whose series carry no cluster label has only this one's.
    rows = [r for r in found.rows if r.get("cluster") == cluster] or [
        r for r in found.rows if not r.get("cluster")
    ]
    if not rows:
        typer.echo(f"wattwise: job {job_id}: no series of cluster {cluster!r}", err=True)
        return None
    for note in found.notes:
        if not note.startswith("carbon intensity"):
            typer.echo(f"wattwise: job {job_id}: note: {note}", err=True)
    totals = {k: sum(float(r[k]) for r in rows) for k in slurm_comment.KEPT}
    totals["nodes"] = sum(int(r["nodes"]) for r in rows)
    return totals


@slurm_app.command("show")
def show_command(
    job: Annotated[str, typer.Argument(metavar="JOBID", help="The job's id.")],
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of a table.")] = False,
) -> None:
    """A job's energy, carbon and SCI as the epilog wrote them into Slurm: from sacct (the
    accounting database, kept for good), else from `scontrol show job` while the controller
    holds the job."""
    from wattwise.accounts import slurm_comment
    from wattwise.exporters.text import table

    if not job.replace("_", "").isdigit():
        typer.echo(f"wattwise: {job!r} is not a Slurm job id", err=True)
        raise typer.Exit(2)
    figures, where = slurm_comment.read_back(job)
    if figures is None:
        typer.echo(
            f"wattwise: job {job} has no wattwise figures in Slurm (no epilog ran for it, or "
            "sacct and scontrol do not know it)",
            err=True,
        )
        raise typer.Exit(1)
    if as_json:
        typer.echo(json.dumps({"job": job, "from": where, **figures}, indent=2))
        return
    typer.echo(table([["FIELD", "VALUE"], *([k, str(v)] for k, v in figures.items())]))
    typer.echo(f"(from {where})", err=True)
