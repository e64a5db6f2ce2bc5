"""A real Prometheus (Debian's package) for end-to-end tests: started on a free port with the
scrape targets and rule files a test gives, stopped when the test ends."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.test_run import DEADLINE_S
from tests.support.cli import free_port

needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None, reason="Debian's prometheus package is not installed"
)


@contextmanager
def running_prometheus(
    workdir: Path,
    targets: dict[str, int],
    rule_files: list[Path] = (),  # type: ignore[assignment]
    job_settings: dict[str, list[str]] | None = None,
    labels: dict[str, str] | None = None,
    extra: list[str] = (),  # type: ignore[assignment]
    external_labels: dict[str, str] | None = None,
) -> Iterator[str]:
    """Scrapes 127.0.0.1:<port> for each scrape job name -> port, every second; yields its URL.
    `job_settings` adds YAML lines to a scrape job (scheme, tls_config, basic_auth); `labels`
    are set on every target (a `cluster`, as a central store sees the series); `extra` adds
    top-level YAML lines (remote_write); `external_labels` are what Prometheus adds to what it
    remote-writes (the `cluster` of docs/fleet.md), not to its own series."""
    port = free_port()
    config = workdir / "prometheus.yml"
    external = f", external_labels: {external_labels}" if external_labels else ""
    lines = [f"global: {{scrape_interval: 1s, evaluation_interval: 1s{external}}}"]
    if rule_files:
        lines += ["rule_files:", *(f"  - {path}" for path in rule_files)]
    lines += extra
    lines.append("scrape_configs:")
    for name, target in targets.items():
        lines += [
            f"  - job_name: {name}",
            f"    static_configs: [{{targets: ['127.0.0.1:{target}'], labels: {labels or {}}}}]",
            *(f"    {line}" for line in (job_settings or {}).get(name, [])),
        ]
    config.write_text("\n".join(lines) + "\n")
    process = subprocess.Popen(
        [
            "prometheus",
            f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--web.enable-lifecycle",  # a test may change its config and reload it
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{url}/-/ready", "prometheus")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)


def wait_ready(process: subprocess.Popen, url: str, what: str) -> None:
    """Until `url` answers 200; a daemon that exits first fails with what it printed."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert process.poll() is None, process.stderr.read()  # type: ignore[union-attr]
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"{what} did not become ready"
        time.sleep(0.1)


def relabel(workdir: Path, url: str, job_name: str, labels: dict[str, str]) -> None:
    """Sets one scrape job's target labels and reloads Prometheus, as a rolled DaemonSet pod
    would change its `pod` label."""
    config = workdir / "prometheus.yml"
    lines = config.read_text().splitlines()
    at = lines.index(f"  - job_name: {job_name}") + 1
    lines[at] = lines[at].split("labels:")[0] + f"labels: {labels}}}]"
    config.write_text("\n".join(lines) + "\n")
    assert httpx.post(f"{url}/-/reload", timeout=10).status_code == 200


def query(url: str, promql: str, **params: str) -> list[dict]:
    """The result of an instant query; a query Prometheus refuses fails with its error."""
    body = httpx.get(f"{url}/api/v1/query", params={"query": promql, **params}, timeout=10).json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


def prometheus_has(url: str, promql: str) -> bool:
    return bool(query(url, promql))


def wait_until_prometheus_has(
    url: str, promql: str, deadline_s: float = DEADLINE_S, alive: Iterable[Any] = ()
) -> None:
    """Waits on the condition itself (never a fixed sleep); `alive` are the daemons feeding
    Prometheus: one that died fails the wait at once, with what it printed."""
    deadline = time.monotonic() + deadline_s
    while not prometheus_has(url, promql):
        for daemon in alive:
            if daemon.process.poll() is not None:
                raise AssertionError(f"{daemon.url} exited: {daemon.process.stderr.read()}")
        if time.monotonic() >= deadline:
            targets = httpx.get(f"{url}/api/v1/targets", timeout=10).json()["data"]
            health = [
                (t["scrapeUrl"], t["health"], t["lastError"]) for t in targets["activeTargets"]
            ]
            raise AssertionError(f"prometheus never had data for {promql}; targets: {health}")
        time.sleep(0.25)


needs_victoriametrics = pytest.mark.skipif(
    shutil.which("victoria-metrics") is None,
    reason="Debian's victoria-metrics package is not installed",
)


@contextmanager
def running_victoriametrics(workdir: Path) -> Iterator[str]:
    """A real single-node VictoriaMetrics taking remote_write at /api/v1/write; yields its URL
    (its query API is Prometheus'). Recent samples are served at once (no latency offset)."""
    port = free_port()
    process = subprocess.Popen(
        [
            "victoria-metrics",
            f"-storageDataPath={workdir / 'vm'}",
            f"-httpListenAddr=127.0.0.1:{port}",
            "-search.latencyOffset=0s",
            "-search.disableCache",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(process, f"{url}/health", "victoria-metrics")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=DEADLINE_S)
