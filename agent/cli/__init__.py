"""The `wattwise` command: thin, builds a Config and hands it on. The commands live in the
modules beside this one, by what they work on; importing them registers them."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from wattwise.errors import ConfigError

if TYPE_CHECKING:  # each command imports what it uses: `--help` pays for none of it
    from wattwise.config import Config

# Plain help text: rendering it with rich would cost ~150 ms on every `--help`.
app = typer.Typer(
    help="wattwise: energy of GPU servers from hardware counters (RAPL, NVML), for Prometheus.",
    no_args_is_help=True,
    add_completion=True,  # --install-completion for bash, zsh, fish, PowerShell
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
ledger_app = typer.Typer(
    help="Take the ledger's finished jobs elsewhere.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(ledger_app, name="ledger")
slurm_app = typer.Typer(
    help="A job's energy and carbon kept in Slurm's own record (AdminComment).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(slurm_app, name="slurm")

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


def main() -> None:
    app()


# Registered in this order, which `wattwise --help` lists.
from wattwise.cli import daemons, ledger, work, checks, slurm  # noqa: E402, F401, I001
