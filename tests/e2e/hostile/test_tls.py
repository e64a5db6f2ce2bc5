"""Issue item 9: TLS, client certificates and basic auth on every listener, from the
exporter-toolkit web configuration file that node_exporter, dcgm-exporter, Kepler and CEEMS
take. Certificates are made in the test (trustme); a real Prometheus scrapes over TLS."""

from __future__ import annotations

import logging
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

import bcrypt
import httpx
import pytest
import trustme

from tests.conftest import subprocess_env
from tests.e2e.test_facility import start, stop
from tests.e2e.test_jobs import Node, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S, Agent
from tests.support.cli import command, free_port, wattwise
from tests.support.prometheus import needs_prometheus, running_prometheus, wait_until_prometheus_has
from wattwise.errors import ConfigError
from wattwise.net.webconfig import WebConfig
from wattwise.net.webconfig_file import parse_duration

PASSWORD = "correct horse battery staple"


@dataclass
class Pki:
    dir: Path
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    stranger_cert: Path  # signed by another CA
    stranger_key: Path


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    ca, other_ca = trustme.CA(), trustme.CA()
    server = ca.issue_cert("127.0.0.1", "localhost")
    client = ca.issue_cert("prometheus.example", "scraper@example.org")
    stranger = other_ca.issue_cert("mallory.example")
    paths = Pki(
        tmp_path,
        *(tmp_path / n for n in ("ca.pem", "s.pem", "s.key", "c.pem", "c.key", "x.pem", "x.key")),
    )
    ca.cert_pem.write_to_path(str(paths.ca))
    ca.private_key_pem.write_to_path(str(tmp_path / "ca.key"))
    server.cert_chain_pems[0].write_to_path(str(paths.server_cert))
    server.private_key_pem.write_to_path(str(paths.server_key))
    client.cert_chain_pems[0].write_to_path(str(paths.client_cert))
    client.private_key_pem.write_to_path(str(paths.client_key))
    stranger.cert_chain_pems[0].write_to_path(str(paths.stranger_cert))
    stranger.private_key_pem.write_to_path(str(paths.stranger_key))
    return paths


def web_config(pki: Pki, extra: str = "", client_auth: str = "RequireAndVerifyClientCert") -> Path:
    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=4)).decode()
    path = pki.dir / "web.yml"
    path.write_text(
        "tls_server_config:\n"
        "  cert_file: s.pem\n"  # relative to the file, as the toolkit reads it
        "  key_file: s.key\n"
        f"  client_auth_type: {client_auth}\n"
        + ("  client_ca_file: ca.pem\n" if client_auth != "NoClientCert" else "")
        + "  min_version: TLS12\n"
        "http_server_config:\n"
        "  headers:\n"
        "    X-Content-Type-Options: nosniff\n"
        "basic_auth_users:\n"
        f"  prometheus: '{hashed}'\n" + extra
    )
    return path


def client(pki: Pki, cert: bool = True, stranger: bool = False) -> dict:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if cert:
        chain = (
            (pki.stranger_cert, pki.stranger_key) if stranger else (pki.client_cert, pki.client_key)
        )
        context.load_cert_chain(*chain)
    return {"verify": context, "timeout": 5}


@pytest.fixture
def tls_agent(node: Node, pki: Pki) -> Iterator[tuple[Agent, Path]]:  # noqa: F811
    config = web_config(pki)
    agent = node.start(WATTWISE_WEB_CONFIG_FILE=str(config))
    agent.url = agent.url.replace("http://", "https://")
    try:
        yield agent, config
    finally:
        agent.process.terminate()
        agent.process.communicate(timeout=DEADLINE_S)


def wait_https(agent: Agent, pki: Pki) -> httpx.Response:
    import time

    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert agent.process.poll() is None, agent.process.stderr.read()
        try:
            return httpx.get(agent.url, auth=("prometheus", PASSWORD), **client(pki))
        except httpx.TransportError:
            assert time.monotonic() < deadline
            time.sleep(0.1)


def test_item9_tls_client_certificates_and_basic_auth_guard_metrics(
    tls_agent: tuple[Agent, Path], pki: Pki
) -> None:
    agent, _ = tls_agent
    ok = wait_https(agent, pki)
    assert ok.status_code == 200 and "wattwise_build_info" in ok.text
    assert ok.headers["x-content-type-options"] == "nosniff"
    wrong = httpx.get(agent.url, auth=("prometheus", "guess"), **client(pki))
    assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Basic"
    assert "wattwise_" not in wrong.text
    assert httpx.get(agent.url, auth=("root", PASSWORD), **client(pki)).status_code == 401
    assert httpx.get(agent.url, **client(pki)).status_code == 401
    for refused in (client(pki, cert=False), client(pki, stranger=True)):
        with pytest.raises(httpx.TransportError):  # the handshake fails: no, or a foreign, cert
            httpx.get(agent.url, auth=("prometheus", PASSWORD), **refused)
    with pytest.raises(httpx.TransportError):  # plain HTTP to the TLS port
        httpx.get(agent.url.replace("https://", "http://"), timeout=5)
    ok = httpx.get(agent.url, auth=("prometheus", PASSWORD), **client(pki))
    assert ok.status_code == 200  # the listener is still fine after all that


def test_item9_client_allowed_sans_admits_only_the_named_client(pki: Pki, node: Node) -> None:  # noqa: F811
    config = web_config(pki, client_auth="RequireAndVerifyClientCert")
    config.write_text(
        config.read_text().replace(
            "  min_version: TLS12\n",
            "  min_version: TLS12\n  client_allowed_sans: [prometheus.example]\n",
        )
    )
    other = trustme.CA.from_pem(pki.ca.read_bytes(), (pki.dir / "ca.key").read_bytes())
    grafana = other.issue_cert("grafana.example")
    grafana.cert_chain_pems[0].write_to_path(str(pki.dir / "g.pem"))
    grafana.private_key_pem.write_to_path(str(pki.dir / "g.key"))
    agent = node.start(WATTWISE_WEB_CONFIG_FILE=str(config))
    agent.url = agent.url.replace("http://", "https://")
    try:
        assert wait_https(agent, pki).status_code == 200  # prometheus.example: named
        context = ssl.create_default_context(cafile=str(pki.ca))
        context.load_cert_chain(str(pki.dir / "g.pem"), str(pki.dir / "g.key"))
        with pytest.raises(httpx.TransportError):  # same CA, but not a name allowed
            httpx.get(agent.url, auth=("prometheus", PASSWORD), verify=context, timeout=5)
    finally:
        agent.process.terminate()
        agent.process.communicate(timeout=DEADLINE_S)


def test_item9_health_speaks_tls_and_auth_from_the_same_file(
    tls_agent: tuple[Agent, Path], pki: Pki
) -> None:
    agent, config = tls_agent
    wait_https(agent, pki)
    password = pki.dir / "password"
    password.write_text(PASSWORD + "\n")
    env = subprocess_env(None)
    common = ["health", "--url", agent.url, "--web-config-file", str(config)]
    client_cert = ["--cert-file", str(pki.client_cert), "--key-file", str(pki.client_key)]
    result = wattwise(
        *common, *client_cert, "--username", "prometheus", "--password-file", str(password), env=env
    )
    assert result.returncode == 0 and result.stdout.startswith("healthy"), result.stderr
    result = wattwise(*common, *client_cert, env=env)  # no credentials
    assert result.returncode == 1 and "401" in result.stderr
    result = wattwise(*common, env=env)  # no client certificate
    assert result.returncode == 1 and "unhealthy" in result.stderr


@needs_prometheus
def test_item9_a_real_prometheus_scrapes_over_tls_with_basic_auth(
    tls_agent: tuple[Agent, Path], pki: Pki, tmp_path: Path
) -> None:
    agent, _ = tls_agent
    wait_https(agent, pki)
    port = int(agent.url.rsplit(":", 1)[1].split("/")[0])
    tls = f"ca_file: {pki.ca}, cert_file: {pki.client_cert}, key_file: {pki.client_key}"
    settings = [
        "scheme: https",
        f"tls_config: {{{tls}}}",
        f"basic_auth: {{username: prometheus, password: '{PASSWORD}'}}",
    ]
    wrong = [*settings[:2], "basic_auth: {username: prometheus, password: guess}"]
    targets = {"wattwise": port, "wattwise-wrong": port}
    jobs = {"wattwise": settings, "wattwise-wrong": wrong}
    with running_prometheus(tmp_path, targets, job_settings=jobs) as prom:
        wait_until_prometheus_has(prom, 'up{job="wattwise"} == 1', alive=[agent])
        wait_until_prometheus_has(prom, 'wattwise_jobs{job="wattwise"}', alive=[agent])
        wait_until_prometheus_has(prom, 'up{job="wattwise-wrong"} == 0', alive=[agent])


def test_item9_the_facility_daemon_takes_the_same_file(pki: Pki, tmp_path: Path) -> None:
    meter = tmp_path / "meter.json"
    meter.write_text('{"energy_j": 1000}')
    config = tmp_path / "facility.yaml"
    config.write_text(
        f"facility:\n  interval_s: 0.5\n  meter: {{kind: json, path: {meter}}}\n"
        f"  it: {{kind: json, path: {meter}}}\n"
    )
    port = free_port()
    facility = start(
        command(
            "facility",
            "--config",
            str(config),
            "--listen",
            f"127.0.0.1:{port}",
            "--web.config.file",
            str(web_config(pki, client_auth="NoClientCert").with_name("web.yml")),
        ),
        subprocess_env(None),
        f"https://127.0.0.1:{port}/metrics",
    )
    try:
        response = wait_https(facility, pki)
        assert response.status_code == 200 and "wattwise_facility_meter_up" in response.text
        assert httpx.get(facility.url, **client(pki)).status_code == 401
    finally:
        stop(facility)


def test_item9_certificates_and_users_are_reloaded_without_a_restart(
    pki: Pki, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import wattwise.filestamp as filestamp

    caplog.set_level(logging.INFO)
    config = web_config(pki)
    hashed = bcrypt.hashpw(b"new", bcrypt.gensalt(rounds=4)).decode()
    config.write_text(config.read_text() + f"  grafana: '{hashed}'\n")
    files = (config, pki.dir / "s.pem", pki.dir / "s.key", pki.dir / "ca.pem")
    mtime_ns = 1_800_000_000 * 10**9

    def stamp_all(ns: int) -> None:
        for name in files:
            os.utime(name, ns=(ns, ns))

    stamp_all(mtime_ns)
    wall = [mtime_ns / 1e9 + 0.5]  # the files' clock, pinned: just written
    monkeypatch.setattr(filestamp, "time", SimpleNamespace(time=lambda: wall[0]))
    web = WebConfig(config)
    first = web.current()
    assert "grafana" in first.users
    # Settling but unchanged: the same settings (each rebuild costs bcrypt checks on the event
    # loop and resets the rate limit), not one per connection.
    assert web.current() is first
    # Rewritten in place within one mtime tick, the same size: still picked up while it settles
    # (mtime, size and inode alone did not tell the versions apart).
    config.write_text(config.read_text().replace("grafana:", "grafanb:"))
    stamp_all(mtime_ns)
    assert "grafanb" in web.current().users
    wall[0] += 10  # settled
    settled = web.current()
    assert web.current() is settled  # unchanged files: the same settings
    stamp_all(mtime_ns + 86_400 * 10**9)  # dated tomorrow: a server clock ahead
    tomorrow = web.current()
    assert web.current() is tomorrow  # not rebuilt at every connection until tomorrow
    assert caplog.text.count("reloaded") == 2  # grafanb, and the new mtime; not the settling
    config.write_text("tls_server_config: {cert_file: nope.pem, key_file: s.key}\n")
    assert "grafanb" in web.current().users  # a broken new version: the last good stays


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("tls_server_config: {cert_file: s.pem}\n", "missing one of key or key_file"),
        (
            "tls_server_config: {cert_file: s.pem, key_file: s.key,\n"
            "  client_auth_type: RequireAnyClientCert}\n",
            "asks for a client certificate without verifying it",
        ),
        (
            "tls_server_config: {cert_file: s.pem, key_file: s.key, client_ca_file: ca.pem}\n",
            "client CA's have been configured without a client_auth_type",
        ),
        (
            "tls_server_config: {cert_file: s.pem, key_file: s.key, cipher_suites: [RC4]}\n",
            "unknown cipher: RC4",
        ),
        (
            "tls_server_config: {cert_file: s.pem, key_file: s.key, curve_preferences: [X25519]}\n",
            "curve_preferences cannot be set",
        ),
        ("basic_auth_users: {a: plaintext}\n", "not a bcrypt hash"),
        ("http_server_config: {headers: {Server: x}}\n", "'Server' can not be configured"),
        ("tls_server_config: {cert_file: missing.pem, key_file: s.key}\n", "No such file"),
        ("rate_limit: {interval: soon, burst: 1}\n", "is not a duration"),
        ("unknown_section: 1\n", "unknown_section"),
    ],
)
def test_item9_a_web_configuration_the_toolkit_would_refuse_is_refused(
    pki: Pki, text: str, message: str
) -> None:
    path = pki.dir / "web.yml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        WebConfig(path)


def test_item9_a_bad_web_configuration_exits_2_before_listening(pki: Pki) -> None:
    path = pki.dir / "web.yml"
    path.write_text("basic_auth_users: {a: plaintext}\n")
    result = wattwise(
        "run",
        "--listen",
        f"127.0.0.1:{free_port()}",
        "--web-config-file",
        str(path),
        env=subprocess_env(None),
    )
    assert result.returncode == 2 and "not a bcrypt hash" in result.stderr


def test_item9_go_durations() -> None:
    assert parse_duration("1m30s") == 90.0 and parse_duration("250ms") == 0.25
    assert parse_duration("0") == 0.0


def test_item9_the_rate_limit_answers_429(pki: Pki) -> None:
    import asyncio

    from wattwise.net.listen import Request

    path = pki.dir / "web.yml"
    path.write_text("rate_limit: {interval: 1h, burst: 2}\n")
    settings = WebConfig(path).current()
    request = Request("GET", "/metrics", {})
    answers = [asyncio.run(settings.admit(request)) for _ in range(3)]
    assert answers[:2] == [None, None] and answers[2] is not None and answers[2].status == 429


def test_item9_evicting_a_connection_in_its_handshake_leaves_the_listener_whole(pki: Pki) -> None:
    """A connection evicted while its TLS handshake was pending once left a stale selector key
    behind, and the next connection that reused its descriptor was never read."""
    import socket

    from wattwise.net.listen import bind_tcp, metrics_routes, serve_http

    class Page:
        def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, bool]:
            return b"ok\n", "text/plain", False

    path = pki.dir / "web.yml"
    path.write_text("tls_server_config: {cert_file: s.pem, key_file: s.key}\n")
    sock = bind_tcp("127.0.0.1", 0)
    port = sock.getsockname()[1]
    listener = serve_http(sock, metrics_routes(Page()), limit=2, web=WebConfig(path))
    silent = []
    try:
        for _ in range(6):  # never start a handshake: each new one evicts the longest idle
            silent.append(socket.create_connection(("127.0.0.1", port)))
        context = ssl.create_default_context(cafile=str(pki.ca))
        for _ in range(3):
            answer = httpx.get(f"https://127.0.0.1:{port}/metrics", verify=context, timeout=5)
            assert answer.text == "ok\n"
    finally:
        for conn in silent:
            conn.close()
        listener.stop()


def test_item9_a_flood_of_wrong_passwords_never_delays_a_known_good_one(pki: Pki) -> None:
    import asyncio

    from wattwise.net.listen import Request

    hashed = bcrypt.hashpw(PASSWORD.encode(), bcrypt.gensalt(rounds=12)).decode()  # ~0.25 s
    path = pki.dir / "web.yml"
    path.write_text(f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    settings = WebConfig(path).current()

    def ask(password: str) -> Request:
        import base64

        token = base64.b64encode(f"prometheus:{password}".encode()).decode()
        return Request("GET", "/metrics", {"authorization": f"Basic {token}"})

    async def flood() -> tuple[list, object]:
        assert await settings.admit(ask(PASSWORD)) is None  # checked once, then cached
        wrong = [asyncio.ensure_future(settings.admit(ask(f"guess{n}"))) for n in range(12)]
        good = await settings.admit(ask(PASSWORD))  # answered from the cache, ahead of them
        pending = sum(not task.done() for task in wrong)
        return [await task for task in wrong], (good, pending)

    answers, (good, pending_when_good_answered) = asyncio.run(flood())
    assert good is None and pending_when_good_answered > 0
    statuses = sorted(answer.status for answer in answers)
    assert set(statuses) == {401, 429} and statuses.count(401) == 4  # at most 4 queued checks


def test_item9_a_password_longer_than_72_bytes_is_compared_as_bcrypt_does(pki: Pki) -> None:
    import asyncio
    import base64

    from wattwise.net.listen import Request

    long_password = "x" * 100
    hashed = bcrypt.hashpw(long_password[:72].encode(), bcrypt.gensalt(rounds=4)).decode()
    path = pki.dir / "web.yml"
    path.write_text(f"basic_auth_users: {{prometheus: '{hashed}'}}\n")
    settings = WebConfig(path).current()
    token = base64.b64encode(f"prometheus:{long_password}".encode()).decode()
    request = Request("GET", "/metrics", {"authorization": f"Basic {token}"})
    assert asyncio.run(settings.admit(request)) is None  # once: ValueError, connection dropped


def test_item9_the_web_configuration_is_read_within_the_same_bounds_as_the_config(
    pki: Pki,
) -> None:
    from tests.e2e.hostile.test_config import bomb

    path = pki.dir / "web.yml"
    path.write_text(bomb(9))
    with pytest.raises(ConfigError, match="holds more than 100000 values"):
        WebConfig(path)
