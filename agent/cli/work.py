"""`work` and `exec`: jobs reporting their work, and running a command as a job."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattwise.cli import (
    CgroupOption,
    ConfigOption,
    _config,
    app,
)


@app.command("work")
def work_command(
    count: Annotated[
        float,
        typer.Argument(metavar="COUNT", help="Units done since the last report (or --total)."),
    ],
    units: Annotated[
        str, typer.Option("--units", metavar="NAME", help="tokens, samples, requests, ...")
    ],
    total: Annotated[
        bool, typer.Option("--total", help="COUNT is a cumulative counter; a drop is a restart.")
    ] = False,
    job: Annotated[
        str | None,
        typer.Option(metavar="JOB", help="Job id or key; default: the job this command runs in."),
    ] = None,
    socket_path: Annotated[
        Path | None,
        typer.Option(
            "--socket",
            help="The agent's work socket. [default: work.socket_path from config, "
            "/run/wattwise/wattwise.sock]",
        ),
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Report a job's work (tokens generated, samples trained, ...) to the local agent, for
    performance per watt: wattwise work --units tokens 512.

    From inside a job it is charged to that job; root, or the job's own user, may name one
    with --job. Python code can call wattwise.work.client.report_work_or_drop instead.
    """
    from wattwise.work.client import MAX_COUNT, WorkReportError, report_work

    if not 0 <= count <= MAX_COUNT:  # NaN too
        typer.echo(
            f"wattwise: COUNT must be a number from 0 to {MAX_COUNT:g}, not {count}", err=True
        )
        raise typer.Exit(2)
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


@app.command(
    "exec",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
    options_metavar="[OPTIONS] -- CMD [ARGS]...",
)
def exec_command(
    ctx: typer.Context,
    job_name: Annotated[
        str | None, typer.Option(metavar="NAME", help="Name for the job (default: CMD).")
    ] = None,
    config: ConfigOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Run CMD as its own job, e.g. wattwise exec --job-name train -- python train.py.

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
