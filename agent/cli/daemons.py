"""`run`, `facility`, `probe`, `once`: the daemons and their one-shot views."""

from __future__ import annotations

import time
from enum import StrEnum
from typing import Annotated, Any

import typer

from wattwise.cli import (
    CgroupOption,
    ConfigOption,
    ProcfsOption,
    SysfsOption,
    WebConfigOption,
    _config,
    _logging,
    app,
)
from wattwise.errors import ConfigError, ListenError


def _serve(daemon: Any, *args: Any) -> None:
    """Runs a daemon until it is stopped; a bad configuration found only now (the web
    configuration, the facility's meter) exits 2, a port that cannot be bound exits 1."""
    try:
        daemon(*args)
    except ConfigError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    except ListenError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(1) from None


@app.command()
def run(
    config: ConfigOption = None,
    listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Where /metrics listens. [default: listen from config, 0.0.0.0:9877]",
        ),
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
    _serve(serve, cfg)


@app.command()
def facility(
    config: ConfigOption = None,
    listen: Annotated[
        str | None,
        typer.Option(
            metavar="HOST:PORT",
            help="Where the facility's /metrics listens. [default: facility.listen from "
            "config, 0.0.0.0:9878]",
        ),
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
    _serve(serve_facility, cfg.facility, cfg.web_config_file)


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
    from wattwise.exporters.text import findings_json, findings_table

    roots = {"sysfs_root": sysfs_root, "procfs_root": procfs_root, "cgroup_root": cgroup_root}
    cfg = _config(config, **roots)
    _logging(cfg)
    agent = Agent(cfg, durable=False)
    try:
        findings = agent.probe()
    finally:
        agent.close()
    typer.echo(findings_json(findings) if as_json else findings_table(findings))


class OnceFormat(StrEnum):
    prom = "prom"
    json = "json"


@app.command()
def once(
    config: ConfigOption = None,
    interval: Annotated[
        float,
        typer.Option(
            min=0.05,
            max=60,
            metavar="SECONDS",
            help="Seconds (0.05 to 60) between the two readings (the sampling interval).",
        ),
    ] = 1.0,
    output_format: Annotated[
        OnceFormat, typer.Option("--format", help="prom is what /metrics serves.")
    ] = OnceFormat.prom,
    sysfs_root: SysfsOption = None,
    procfs_root: ProcfsOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Take two readings INTERVAL seconds apart and print what /metrics would serve."""
    from prometheus_client import CollectorRegistry, generate_latest

    from wattwise.app.daemon import Agent
    from wattwise.exporters.prometheus import SnapshotCollector
    from wattwise.exporters.text import snapshot_json

    roots = {"sysfs_root": sysfs_root, "procfs_root": procfs_root, "cgroup_root": cgroup_root}
    cfg = _config(config, interval_s=interval, **roots)  # what the readings' interval was
    _logging(cfg)
    agent = Agent(cfg, durable=False)
    try:
        agent.tick()
        time.sleep(interval)
        snapshot = agent.tick()
    finally:
        agent.close()
    if output_format is OnceFormat.json:
        typer.echo(snapshot_json(snapshot))
        return
    registry = CollectorRegistry()
    registry.register(SnapshotCollector(lambda: snapshot))
    typer.echo(generate_latest(registry).decode(), nl=False)
