"""`health` and `config check`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from wattwise.cli import (
    ConfigOption,
    WebConfigOption,
    _config,
    app,
    config_app,
)
from wattwise.errors import ConfigError, Unhealthy

DEFAULT_LISTEN = "0.0.0.0:9877"  # the agent's default listen


@app.command("health")
def health_command(
    url: Annotated[
        str | None,
        typer.Option(
            metavar="URL",
            help="The agent's /metrics. [default: this host, at the config's listen port "
            "(127.0.0.1:9877), https:// when the web configuration sets up TLS]",
        ),
    ] = None,
    max_age_s: Annotated[
        float,
        typer.Option(min=0.0, metavar="SECONDS", help="Oldest acceptable last tick, in seconds."),
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
    username: Annotated[str | None, typer.Option(metavar="USER", help="Basic auth user.")] = None,
    password_file: Annotated[
        Path | None, typer.Option(help="File holding the basic auth password.")
    ] = None,
    config: ConfigOption = None,
) -> None:
    """Exit 0 if the agent answers and its sampling loop ticked within --max-age-s, else 1 with
    the reason: for a container HEALTHCHECK or a Kubernetes exec probe. Without --url, the
    agent is looked for on this host where its configuration (--config) has it listen. With
    the agent's web configuration it speaks TLS, presents a client certificate and basic auth
    as told. Exit 2 for wrong arguments."""

    from wattwise.app.health import client_settings, last_tick_age_s

    listen = DEFAULT_LISTEN
    if url is None:
        listen, web_config_file = _agent_address(config, web_config_file)
    try:
        target, verify, auth = client_settings(
            url, listen, web_config_file, ca_file, cert_file, key_file, username, password_file
        )
    except ConfigError as exc:
        typer.echo(f"wattwise: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        age_s = last_tick_age_s(target, verify, auth)
    except Unhealthy as exc:
        typer.echo(f"wattwise: unhealthy: {exc}", err=True)
        raise typer.Exit(1) from None
    if age_s > max_age_s:
        typer.echo(
            f"wattwise: unhealthy: last tick {age_s:.0f} s ago (> {max_age_s:g} s)", err=True
        )
        raise typer.Exit(1)
    typer.echo(f"healthy: last tick {age_s:.1f} s ago")


def _agent_address(config: Path | None, web_config_file: Path | None) -> tuple[str, Path | None]:
    """The agent's listen address and web configuration, from its configuration. A file that
    cannot be read now (edited while the agent runs) is said, and the default address tried:
    the probe judges the running agent, not the next start."""
    from wattwise.config import load_config

    try:
        cfg = load_config(config)
    except ConfigError as exc:
        typer.echo(f"wattwise: note: {exc}; trying {DEFAULT_LISTEN}", err=True)
        return DEFAULT_LISTEN, web_config_file
    if cfg.listen_port == 0:
        typer.echo("wattwise: the agent listens on a port the system picks: give --url", err=True)
        raise typer.Exit(2)
    return cfg.listen, web_config_file or cfg.web_config_file


@config_app.command("check")
def config_check(
    file: Annotated[Path, typer.Argument(metavar="FILE", help="Config file to validate.")],
) -> None:
    """Validate a config file (with WATTWISE_* overrides) and print the effective values."""
    import yaml

    from wattwise.config import effective_values

    cfg = _config(file)
    typer.echo(f"# {file}: valid. Effective values (file < WATTWISE_* environment):")
    typer.echo(yaml.safe_dump(effective_values(cfg), sort_keys=False), nl=False)
