"""How `wattwise health` reaches an agent, also one served with a web configuration (the URL's
scheme, which certificate to trust, the client certificate and basic auth to present), and how
long ago it last ticked."""

from __future__ import annotations

import ssl
import time
from pathlib import Path

from wattwise.errors import ConfigError, Unhealthy
from wattwise.net.http import ca_context
from wattwise.net.webconfig_file import load_file


def local_metrics_url(listen: str, tls: bool) -> str:
    """Where an agent listening on `listen` (HOST:PORT) answers on this host: a wildcard
    address is reached on the loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)
    if ":" in host:
        host = f"[{host}]"
    return f"{'https' if tls else 'http'}://{host}:{port}/metrics"


def client_settings(
    url: str | None,
    listen: str,
    web_config_file: Path | None,
    ca_file: Path | None,
    cert_file: Path | None,
    key_file: Path | None,
    username: str | None,
    password_file: Path | None,
) -> tuple[str, bool | ssl.SSLContext, tuple[str, str] | None]:
    """(url, httpx's verify, basic auth). With a web configuration that sets up TLS and no
    --ca-file, the agent's own certificate is trusted as it is (pinned: health runs beside the
    agent, where its name may not match 127.0.0.1)."""
    tls = load_file(web_config_file).tls_server_config if web_config_file else None
    target = url or local_metrics_url(listen, tls is not None)
    trusted = ca_file
    if tls is not None and trusted is None and tls.cert_file is not None:
        trusted = web_config_file.parent / tls.cert_file  # type: ignore[union-attr]
    verify: bool | ssl.SSLContext = True
    if trusted is not None or cert_file or key_file:
        context = ca_context(trusted) if trusted else ssl.create_default_context()
        if trusted is not None and ca_file is None:  # pinned to the agent's own certificate
            context.check_hostname = False
            context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        if cert_file or key_file:
            if not (cert_file and key_file):
                raise ConfigError("--cert-file and --key-file go together")
            try:
                context.load_cert_chain(cert_file, key_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(f"cannot load the client certificate: {exc}") from None
        verify = context
    auth = None
    if username is not None or password_file is not None:
        if username is None or password_file is None:
            raise ConfigError("--username and --password-file go together")
        try:
            password = password_file.read_text().rstrip("\n")
        except OSError as exc:
            raise ConfigError(f"cannot read {password_file}: {exc.strerror}") from None
        auth = (username, password)
    return target, verify, auth


def last_tick_age_s(
    target: str, verify: bool | ssl.SSLContext, auth: tuple[str, str] | None
) -> float:
    """Seconds since the agent at `target` last ticked, from its own
    wattwise_last_tick_timestamp_seconds; Unhealthy when it cannot be told."""
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    try:
        response = httpx.get(target, timeout=5, verify=verify, auth=auth)
        if response.status_code != 200:
            raise Unhealthy(
                f"{target} answered HTTP {response.status_code} (the agent serves /metrics)"
            )
        last = [
            sample.value
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == "wattwise_last_tick_timestamp_seconds"
        ]
    except (httpx.HTTPError, ValueError) as exc:
        raise Unhealthy(f"{target}: {exc}") from None
    if not last:
        raise Unhealthy(f"{target} has not ticked yet")
    return time.time() - last[0]
