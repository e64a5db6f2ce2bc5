"""Every query the shipped dashboards and rules make, against a real Prometheus scraping a real
`wattwise run` (fixture trees whose counters move) and a real `wattwise facility`.

A dashboard whose queries return nothing is the common failure of shipped dashboards: here each
panel's PromQL, with its template variables resolved the way Grafana would, must parse and
return data; each recording rule must produce its series inside Prometheus; each alert's
condition must find the series it compares (its comparisons turned into `bool` ones, so a
healthy node still answers).
"""

from __future__ import annotations

import json
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import yaml

from tests.conftest import ROOT, subprocess_env
from tests.e2e.test_facility import start, stop
from tests.e2e.test_jobs import DOCKER, STEP, Node, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S
from tests.support.cli import command, free_port
from tests.support.fixtures.trees import h100, make_v2, set_energy, write_nvml_state
from tests.support.prometheus import (
    needs_prometheus,
    query,
    running_prometheus,
    wait_until_prometheus_has,
)
from tests.support.providers import Script, serve
from tests.unit.work.test_scrape import vllm_page

pytestmark = needs_prometheus

DEPLOY = ROOT / "deploy"
DASHBOARDS = sorted((DEPLOY / "grafana" / "dashboards").glob("*.json"))
RULE_FILES = sorted((DEPLOY / "prometheus").glob("*.yaml"))
# What Grafana puts in place of its own variables, for data scraped every second.
GRAFANA_VARIABLES = {"$__rate_interval": "5s", "$__interval": "1s", "$__range": "30s"}
COMPARISON = re.compile(r"(==|!=|>=|<=|>|<)(?!\s*bool)")


def with_bool(expr: str) -> str:
    """`a > 5` -> `a > bool 5` outside label matchers and strings: the series are there even
    when the alert does not fire."""
    out, depth, quote = [], 0, ""
    i = 0
    while i < len(expr):
        c = expr[i]
        if quote:
            quote = "" if c == quote else quote
        elif c in "\"'":
            quote = c
        elif c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
        elif depth == 0 and (m := COMPARISON.match(expr, i)) and expr[i - 1 : i] not in "=!~":
            out.append(m.group(1) + " bool")
            i = m.end()
            continue
        out.append(c)
        i += 1
    return "".join(out)


def test_with_bool_leaves_matchers_alone() -> None:
    expr = 'rate(a{x!="y"}[5m]) == 0 and on (i) b{s=~"c|d"} > 1'
    assert with_bool(expr) == 'rate(a{x!="y"}[5m]) == bool 0 and on (i) b{s=~"c|d"} > bool 1'


class Mover:
    """Moves every counter the agent reads, as a busy node would, until stopped."""

    def __init__(self, node: Node, work: Script, platform: Path, meter: Path) -> None:  # noqa: F811
        self.node, self.work, self.platform, self.meter = node, work, platform, meter
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        step = 0
        while not self._stop.wait(0.2):
            step += 1
            for zone in ("intel-rapl:0", "intel-rapl:1"):
                set_energy(self.node.sysfs, zone, 1_000_000 + step * 20_000_000)  # 100 W
            gpus = [
                h100(0, energy_mj=1_000_000 + step * 80_000, pids=[4242]),
                h100(1, energy_mj=1_000_000 + step * 14_000),
            ]
            write_nvml_state(self.node.nvml, gpus)
            make_v2(
                self.node.cgroups,
                {STEP: 1_000_000 + step * 150_000, DOCKER: 1_000_000 + step * 20_000},
            )
            self.work.body = vllm_page(step * 300)
            self.platform.write_text(json.dumps({"power_w": 1150 + step % 7}))
            # 40 J of RAPL and 94 J of GPU energy a step; the facility draws 1.25 times that.
            self.meter.write_text(json.dumps({"energy_j": 1e9 + step * 134 * 1.25}))

    def __enter__(self) -> Mover:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def rule_files_every_second(tmp_path: Path) -> list[Path]:
    """The shipped rule files with their groups evaluated every second instead of every minute."""
    copies = []
    for path in RULE_FILES:
        rules = yaml.safe_load(path.read_text())
        for group in rules["groups"]:
            group["interval"] = "1s"
        copy = tmp_path / path.name
        copy.write_text(yaml.safe_dump(rules))
        copies.append(copy)
    return copies


def resolve(variables: list[dict], prom_url: str) -> dict[str, str]:
    """Each query variable's first value, from Prometheus' label-values API as Grafana asks it."""
    values = {}
    for variable in variables:
        if variable["type"] != "query":
            continue
        found = re.fullmatch(r"label_values\((\w+), (\w+)\)", variable["definition"])
        assert found, f"unsupported variable query {variable['definition']}"
        metric, label = found.groups()
        body = httpx.get(
            f"{prom_url}/api/v1/label/{label}/values", params={"match[]": metric}
        ).json()
        assert body["data"], f"variable {variable['name']} has no values"
        values[variable["name"]] = body["data"][0]
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    for name, value in values.items():
        expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
    assert "$" not in expr, f"an unresolved variable in {expr}"
    return expr


def panel_targets(dashboard: dict) -> Iterator[tuple[str, str, bool]]:
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"], target["instant"]


@pytest.fixture
def live(node: Node, tmp_path: Path) -> Iterator[str]:  # noqa: F811
    """A node agent with jobs, carbon, wall power, work counters and a measured PUE, scraped
    by a real Prometheus with the shipped rules; yields Prometheus' URL once data is in."""
    # Job 12 holds both GPUs (GPU 1 stays idle: allocated-idle waste) under account nlp.
    (node.procfs / "4242" / "environ").write_bytes(
        b"SLURM_JOB_ID=12\0SLURM_JOB_NAME=llama\0SLURM_JOB_USER=alice\0"
        b"SLURM_JOB_ACCOUNT=nlp\0SLURM_JOB_GPUS=0,1\0"
    )
    platform, meter = tmp_path / "bmc.json", tmp_path / "facility-meter.json"
    platform.write_text(json.dumps({"power_w": 1150}))
    meter.write_text(json.dumps({"energy_j": 1e9}))
    facility_port = free_port()
    work = Script(body=vllm_page(0))
    with serve(work) as work_url, Mover(node, work, platform, meter):
        target = {
            "job_name": "llama",
            "url": f"{work_url}/metrics",
            "metric": "vllm:generation_tokens_total",
            "unit": "tokens",
        }
        agent = node.start(
            WATTWISE_WORK__TARGETS=json.dumps([target]),
            WATTWISE_WORK__SCRAPE_INTERVAL_S="1",
            WATTWISE_PLATFORM=json.dumps({"kind": "json", "path": str(platform)}),
            WATTWISE_PLATFORM_INTERVAL_S="1",
            WATTWISE_CARBON__PUE_URL=f"http://127.0.0.1:{facility_port}/metrics",
        )
        node_port = int(agent.url.rsplit(":", 1)[1].split("/")[0])
        targets = {"wattwise": node_port, "wattwise-facility": facility_port}
        facility = None
        try:
            with running_prometheus(tmp_path, targets, rule_files_every_second(tmp_path)) as prom:
                config = tmp_path / "facility.yaml"
                config.write_text(
                    "facility:\n  interval_s: 0.5\n"
                    f"  meter: {{kind: json, path: {meter}}}\n"
                    f"  it: {{kind: prometheus, url: '{prom}', query: wattwise_node_total_energy_joules_total}}\n"
                )
                facility = start(
                    command(
                        "facility",
                        "--config",
                        str(config),
                        "--listen",
                        f"127.0.0.1:{facility_port}",
                    ),
                    subprocess_env(None),
                    f"http://127.0.0.1:{facility_port}/metrics",
                )
                for promql in (
                    'wattwise_facility_pue{window="5m"}',
                    "cluster_scheduler_job_id_unit:wattwise_job_work_units_per_joule_with_estimate:rate5m",
                    "increase(wattwise_job_work_units_total[5s]) > 0",
                ):
                    wait_until_prometheus_has(prom, promql, alive=(agent, facility))
                yield prom
        finally:
            if facility is not None:
                stop(facility)
            agent.process.send_signal(signal.SIGTERM)
            agent.process.communicate(timeout=DEADLINE_S)


def range_query(url: str, promql: str) -> list[dict]:
    now = time.time()
    body = httpx.get(
        f"{url}/api/v1/query_range",
        params={"query": promql, "start": now - 20, "end": now, "step": 1},
        timeout=10,
    ).json()
    assert body["status"] == "success", f"{promql}: {body.get('error')}"
    return body["data"]["result"]


def eventually_has_data(ask: Callable[[], list[dict]], deadline: float) -> bool:
    """Whether `ask` returns data before the deadline. Waits on the condition, never on a fixed
    time: a rule evaluated every second may not have run yet on a loaded machine."""
    while True:
        if ask():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.25)


def test_every_panel_and_rule_returns_data(live: str) -> None:
    checks: list[tuple[str, Callable[[], list[dict]]]] = []
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        values = resolve(dashboard["templating"]["list"], live)
        for title, expr, instant in panel_targets(dashboard):
            promql = substitute(expr, values)
            ask = query if instant else range_query
            checks.append((f"{path.name} / {title}: {promql}", partial(ask, live, promql)))
    for path in RULE_FILES:
        for group in yaml.safe_load(path.read_text())["groups"]:
            for rule in group["rules"]:
                if "record" in rule:
                    # Evaluated by Prometheus itself: the recorded series exists.
                    name = f"{path.name} / {rule['record']}"
                    checks.append((name, partial(query, live, rule["record"])))
                else:
                    expr = with_bool(rule["expr"])
                    checks.append(
                        (f"{path.name} / {rule['alert']}: {expr}", partial(query, live, expr))
                    )
    deadline = time.monotonic() + DEADLINE_S
    empty = [name for name, ask in checks if not eventually_has_data(ask, deadline)]
    assert not empty, "queries that returned nothing:\n" + "\n".join(empty)


def test_the_figures_behind_the_panels_are_right(live: str) -> None:
    # The GPU job 12 holds idle shows up as allocated-idle waste; its account is its team; the
    # facility's PUE is valid. (Its value over a few seconds of 1 s scrapes is lumpy;
    # tests/e2e/test_facility.py checks it exactly.)
    deadline = time.monotonic() + DEADLINE_S
    assert eventually_has_data(
        partial(query, live, 'wattwise_facility_pue_valid{window="5m"} == 1'), deadline
    )
    idle_rate = 'rate(wattwise_node_gpu_energy_by_use_joules_total{state="allocated_idle"}[5s]) > 0'
    assert eventually_has_data(partial(query, live, idle_rate), deadline)
    teams = 'cluster_team_basis:wattwise_job_energy_joules:rate5m{team="nlp"}'
    assert eventually_has_data(partial(query, live, teams), deadline)
