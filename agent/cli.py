"""The `wattwise` command: thin, builds a Config and hands it on."""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from agent import __version__
from agent.config import Config, effective_values, load_config
from agent.errors import ConfigError, ListenError
from agent.model import Finding

app = typer.Typer(
    help="wattwise: energy of GPU servers from hardware counters (RAPL, NVML), for Prometheus.",
    no_args_is_help=True,
    add_completion=False,
)
config_app = typer.Typer(help="Work with configuration files.", no_args_is_help=True)
app.add_typer(config_app, name="config")

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


def _config(path: Path | None, **overrides: Any) -> Config:
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
    sysfs_root: SysfsOption = None,
    procfs_root: ProcfsOption = None,
    cgroup_root: CgroupOption = None,
) -> None:
    """Run the agent in the foreground: sample every interval, serve /metrics.

    SIGINT (Ctrl-C) or SIGTERM stops it within one interval.
    """
    from agent.daemon import serve

    cfg = _config(
        config,
        listen=listen,
        sysfs_root=sysfs_root,
        procfs_root=procfs_root,
        cgroup_root=cgroup_root,
    )
    _logging(cfg)
    try:
        serve(cfg)
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
    from agent.daemon import Agent

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

    from agent.daemon import Agent
    from exporters.prometheus import SnapshotCollector

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


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(help="Config file to validate.")],
) -> None:
    """Validate a config file (with WATTWISE_* overrides) and print the effective values."""
    cfg = _config(file)
    typer.echo(f"# {file}: valid. Effective values (file < WATTWISE_* environment):")
    typer.echo(yaml.safe_dump(effective_values(cfg), sort_keys=False), nl=False)


def main() -> None:
    app()
