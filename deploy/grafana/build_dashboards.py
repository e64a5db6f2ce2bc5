"""Writes the Grafana dashboards in deploy/grafana/dashboards/ from the definitions below.

The JSON is generated so every panel is built the same way (datasource variable, units,
legends); edit this file and run `python deploy/grafana/build_dashboards.py`. The test suite
checks the JSON matches and runs every query against a real Prometheus.

Queries use raw wattwise series, not the recording rules, so the dashboards work before the
rules are installed. They filter by `instance` and never by the scrape's `job` label.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).parent / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
NODE = 'instance=~"$instance"'
JOB = 'job_id="$job_id"'


def datasource_variable() -> dict[str, Any]:
    return {
        "name": "datasource",
        "label": "Prometheus",
        "type": "datasource",
        "query": "prometheus",
    }


def query_variable(name: str, label: str, query: str, multi: bool) -> dict[str, Any]:
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "query": {"query": query, "refId": f"{name}-values"},
        "definition": query,
        "refresh": 2,  # on time range change: jobs come and go
        "sort": 1,
        "multi": multi,
        "includeAll": multi,
        **({"allValue": ".+"} if multi else {}),
    }


INSTANCE = query_variable("instance", "Node", "label_values(wattwise_build_info, instance)", True)
JOB_ID = query_variable(
    "job_id", "Job id", "label_values(wattwise_job_energy_joules_total, job_id)", False
)


def panel(
    title: str,
    targets: list[tuple[str, str]],
    unit: str,
    kind: str = "timeseries",
    description: str = "",
    width: int = 12,
) -> dict[str, Any]:
    """targets: (PromQL, legend). Instant queries for tables and bar gauges."""
    instant = kind in ("table", "bargauge", "stat")
    return {
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"w": width, "h": 8},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "options": {"legend": {"displayMode": "table", "placement": "right"}}
        if kind == "timeseries"
        else {"reduceOptions": {"calcs": ["lastNotNull"]}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "datasource": DS,
                "expr": expr,
                "legendFormat": legend,
                "instant": instant,
                "range": not instant,
                **({"format": "table"} if kind == "table" else {}),
            }
            for i, (expr, legend) in enumerate(targets)
        ],
    }


def row(title: str) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"w": 24, "h": 1},
        "panels": [],
    }


def dashboard(uid: str, title: str, description: str, variables: list, panels: list) -> dict:
    x = y = 0
    for p in panels:  # lay panels out left to right, wrapping at 24 columns
        w, h = p["gridPos"]["w"], p["gridPos"]["h"]
        if x + w > 24 or p["type"] == "row":
            x, y = 0, y + (8 if x else 0)
        p["gridPos"] |= {"x": x, "y": y}
        x, y = (0, y + h) if p["type"] == "row" else (x + w, y)
    for i, p in enumerate(panels, 1):
        p["id"] = i
    return {
        "uid": uid,
        "title": title,
        "description": description,
        "tags": ["wattwise", "energy", "carbon"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "",
        "templating": {"list": [datasource_variable(), *variables]},
        "annotations": {"list": []},
        "links": [
            {"type": "dashboards", "tags": ["wattwise"], "asDropdown": True, "title": "wattwise"}
        ],
        "panels": panels,
    }


def node_dashboard() -> dict:
    return dashboard(
        "wattwise-node",
        "wattwise / Nodes",
        "Measured power per domain and source, GPUs, wall power, and the agent's own health.",
        [INSTANCE],
        [
            row("Power"),
            panel(
                "Node power by domain and source",
                [
                    (
                        f"sum by (instance, domain, source) (wattwise_node_power_watts{{{NODE}}})",
                        "{{instance}} {{domain}} ({{source}})",
                    )
                ],
                "watt",
                description="RAPL zones overlap (core and uncore are inside package): compare domains, do not stack them.",
            ),
            panel(
                "Node IT power by source",
                [
                    (
                        f"sum by (instance, source) (wattwise_node_total_power_watts{{{NODE}}})",
                        "{{instance}} {{source}}",
                    )
                ],
                "watt",
                description="Non-overlapping domains only; source=estimate is a labelled model, not a measurement.",
            ),
            panel(
                "GPU power",
                [
                    (f"wattwise_gpu_power_watts{{{NODE}}}", "{{instance}} GPU {{gpu}}"),
                    (f"wattwise_gpu_power_limit_watts{{{NODE}}}", "{{instance}} GPU {{gpu}} limit"),
                ],
                "watt",
            ),
            panel(
                "GPU utilisation",
                [(f"wattwise_gpu_utilization_ratio{{{NODE}}}", "{{instance}} GPU {{gpu}}")],
                "percentunit",
            ),
            panel(
                "Wall power vs measured components",
                [
                    (f"wattwise_node_platform_watts{{{NODE}}}", "{{instance}} wall (BMC)"),
                    (
                        f'sum by (instance) (wattwise_node_total_power_watts{{{NODE}, source!="estimate"}})',
                        "{{instance}} RAPL + GPUs",
                    ),
                ],
                "watt",
                description="Needs `platform` (the node's BMC) in the agent's config. The gap is fans, PSU losses, NICs, drives.",
            ),
            panel(
                "Wall / components ratio",
                [(f"wattwise_node_platform_to_components_ratio{{{NODE}}}", "{{instance}}")],
                "none",
            ),
            row("Agent health"),
            panel(
                "Agents up",
                [
                    (
                        f"up{{{NODE}}} * on (instance) group_left () (max by (instance) (wattwise_build_info))",
                        "{{instance}}",
                    )
                ],
                "none",
                kind="stat",
                width=6,
            ),
            panel(
                "Sources up",
                [(f"wattwise_source_up{{{NODE}}}", "{{instance}} {{source}}")],
                "none",
                kind="table",
                width=6,
            ),
            panel(
                "Seconds since the last tick",
                [(f"time() - wattwise_last_tick_timestamp_seconds{{{NODE}}}", "{{instance}}")],
                "s",
                width=6,
            ),
            panel(
                "Tick duration",
                [(f"wattwise_tick_duration_seconds{{{NODE}}}", "{{instance}}")],
                "s",
                width=6,
            ),
            panel(
                "Ledger, carbon providers and work endpoints",
                [
                    (f"wattwise_ledger_up{{{NODE}}}", "{{instance}} ledger"),
                    (f"wattwise_carbon_provider_up{{{NODE}}}", "{{instance}} {{provider}}"),
                    (f"wattwise_work_endpoints{{{NODE}}}", "{{instance}} work endpoints {{state}}"),
                ],
                "none",
                width=24,
            ),
        ],
    )


def jobs_dashboard() -> dict:
    by_job = "scheduler, job_id, job_name"
    return dashboard(
        "wattwise-jobs",
        "wattwise / Jobs",
        "Which jobs use the energy and emit the carbon, per user and team, and GPUs held idle.",
        [INSTANCE],
        [
            panel(
                "Top jobs by energy (time range)",
                [
                    (
                        f"topk(10, sum by ({by_job}) (increase(wattwise_job_energy_joules_total{{{NODE}}}[$__range])))",
                        "{{job_name}} {{job_id}}",
                    )
                ],
                "joule",
                kind="bargauge",
                description="Summed over every node a job ran on.",
            ),
            panel(
                "Top jobs by carbon (time range)",
                [
                    (
                        f"topk(10, sum by ({by_job}) (increase(wattwise_job_carbon_grams_total{{{NODE}}}[$__range])))",
                        "{{job_name}} {{job_id}}",
                    )
                ],
                "massg",
                kind="bargauge",
                description="Operational (energy x PUE x grid intensity) plus embodied.",
            ),
            panel(
                "Job power",
                [
                    (
                        f"topk(10, sum by ({by_job}) (wattwise_job_power_watts{{{NODE}}}))",
                        "{{job_name}} {{job_id}}",
                    )
                ],
                "watt",
                width=24,
            ),
            panel(
                "Energy by team (time range)",
                [
                    (
                        f"sum by (team) (sum by (instance, scheduler, job_id) (increase(wattwise_job_energy_joules_total{{{NODE}}}[$__range])) "
                        "* on (instance, scheduler, job_id) group_left (team) wattwise_job_info)",
                        "{{team}}",
                    )
                ],
                "joule",
                kind="bargauge",
                description="Team: the Slurm account, or the pod's namespace.",
            ),
            panel(
                "Carbon by user (time range)",
                [
                    (
                        f"sum by (user) (sum by (instance, scheduler, job_id) (increase(wattwise_job_carbon_grams_total{{{NODE}}}[$__range])) "
                        "* on (instance, scheduler, job_id) group_left (user) wattwise_job_info)",
                        "{{user}}",
                    )
                ],
                "massg",
                kind="bargauge",
            ),
            panel(
                "GPU energy by use",
                [
                    (
                        f"sum by (state) (rate(wattwise_node_gpu_energy_by_use_joules_total{{{NODE}}}[$__rate_interval]))",
                        "{{state}}",
                    )
                ],
                "watt",
                description="active: jobs' work; allocated_idle: held by a job and doing nothing (waste); unallocated_idle: no job.",
            ),
            panel(
                "Allocated-idle GPU power by job",
                [
                    (
                        f"topk(10, sum by ({by_job}) (rate(wattwise_job_gpu_allocated_idle_joules_total{{{NODE}}}[$__rate_interval])))",
                        "{{job_name}} {{job_id}}",
                    )
                ],
                "watt",
            ),
            panel(
                "Unattributed energy",
                [
                    (
                        f"sum by (domain, reason) (rate(wattwise_unattributed_energy_joules_total{{{NODE}}}[$__rate_interval]))",
                        "{{domain}} {{reason}}",
                    )
                ],
                "watt",
                description="Energy no job caused: busy outside jobs (system) or idle. Jobs + this = the node total.",
                width=24,
            ),
        ],
    )


def job_dashboard() -> dict:
    return dashboard(
        "wattwise-job",
        "wattwise / Job drill-down",
        "One job across the nodes it ran on: power, energy, carbon and work per joule.",
        [JOB_ID],
        [
            panel(
                "Power per node",
                [(f"sum by (instance) (wattwise_job_power_watts{{{JOB}}})", "{{instance}}")],
                "watt",
            ),
            panel(
                "Energy by domain and state",
                [
                    (
                        f"sum by (domain, state) (rate(wattwise_job_energy_joules_total{{{JOB}}}[$__rate_interval]))",
                        "{{domain}} {{state}}",
                    )
                ],
                "watt",
            ),
            panel(
                "Energy so far",
                [(f"sum(wattwise_job_energy_joules_total{{{JOB}}})", "energy")],
                "joule",
                kind="stat",
                width=6,
            ),
            panel(
                "Carbon so far",
                [(f"sum by (scope) (wattwise_job_carbon_grams_total{{{JOB}}})", "{{scope}}")],
                "massg",
                kind="stat",
                width=6,
            ),
            panel(
                "GPU allocated idle",
                [(f"sum(wattwise_job_gpu_allocated_idle_joules_total{{{JOB}}})", "idle")],
                "joule",
                kind="stat",
                width=6,
            ),
            panel(
                "Work rate",
                [
                    (
                        f"sum by (unit) (rate(wattwise_job_work_units_total{{{JOB}}}[$__rate_interval]))",
                        "{{unit}}/s",
                    )
                ],
                "none",
                width=6,
            ),
            panel(
                "Work per joule (performance per watt)",
                [
                    (
                        f"sum by (unit) (rate(wattwise_job_work_units_total{{{JOB}}}[$__rate_interval])) "
                        f"/ scalar(sum(wattwise_job_power_watts{{{JOB}}}))",
                        "{{unit}} per J",
                    )
                ],
                "none",
                description="Units per second over watts: tokens/J, samples/J.",
            ),
            panel(
                "Grams CO2e per unit of work",
                [
                    (
                        f"scalar(sum(rate(wattwise_job_carbon_grams_total{{{JOB}}}[$__rate_interval]))) "
                        f"/ sum by (unit) (rate(wattwise_job_work_units_total{{{JOB}}}[$__rate_interval]))",
                        "g per {{unit}}",
                    )
                ],
                "massg",
                description="SCI per functional unit: operational and embodied grams over work done.",
            ),
        ],
    )


def carbon_dashboard() -> dict:
    return dashboard(
        "wattwise-carbon",
        "wattwise / Carbon and PUE",
        "Grid carbon intensity, the PUE charged and measured, and the fleet's carbon rate.",
        [INSTANCE],
        [
            panel(
                "Grid carbon intensity",
                [
                    (
                        f"max by (zone, provider, signal) (wattwise_grid_carbon_intensity_grams_per_kwh{{{NODE}}})",
                        "{{zone}} {{provider}} ({{signal}})",
                    )
                ],
                "none",
                description="gCO2e/kWh used for each interval.",
            ),
            panel(
                "Carbon data age",
                [
                    (
                        f"wattwise_grid_carbon_intensity_age_seconds{{{NODE}}}",
                        "{{instance}} {{provider}}",
                    )
                ],
                "s",
            ),
            panel(
                "PUE charged by nodes",
                [(f"wattwise_pue_ratio{{{NODE}}}", "{{instance}} ({{source}})")],
                "none",
                description="source=facility: measured by `wattwise facility`; config: the configured fallback.",
            ),
            panel(
                "Measured facility PUE",
                [("wattwise_facility_pue", "{{window}}")],
                "none",
                description="From `wattwise facility`: facility energy / IT energy per window. New large sites must stay below 1.3.",
            ),
            panel(
                "Carbon rate by scope",
                [
                    (
                        f"sum by (scope) (rate(wattwise_node_carbon_grams_total{{{NODE}}}[$__rate_interval]))",
                        "{{scope}}",
                    )
                ],
                "none",
                description="Grams per second: operational and embodied.",
            ),
            panel(
                "Embodied carbon of idle hardware",
                [
                    (
                        f"sum by (state) (wattwise_node_embodied_grams_per_second{{{NODE}}})",
                        "{{state}}",
                    )
                ],
                "none",
                description="Grams per second of manufacturing carbon: reserved by jobs, or unreserved (the cost of idle hardware).",
            ),
            panel(
                "Facility and IT power",
                [("wattwise_facility_power_watts", "{{scope}}")],
                "watt",
                width=24,
            ),
        ],
    )


DASHBOARDS = {
    "wattwise-node.json": node_dashboard,
    "wattwise-jobs.json": jobs_dashboard,
    "wattwise-job.json": job_dashboard,
    "wattwise-carbon.json": carbon_dashboard,
}


def render() -> dict[str, str]:
    return {name: json.dumps(build(), indent=2) + "\n" for name, build in DASHBOARDS.items()}


def main() -> int:
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
