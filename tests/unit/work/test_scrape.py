"""Work counters read from jobs' own /metrics pages: parsing, pod annotations, resets per series
over real HTTP, and a real `wattwise run` that reads a Slurm job's counter by its name."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from tests.e2e.test_jobs import Node, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S
from tests.support.providers import Script, serve
from wattwise.jobs.kubelet import PodNames
from wattwise.work.api import WorkCounts
from wattwise.work.scrape import (
    Endpoint,
    ScrapeError,
    WorkScraper,
    counter_series,
    endpoint_from_annotations,
)

UNITS = ("tokens", "samples")


def vllm_page(*totals: float) -> bytes:
    """A vLLM-shaped page: the generation-tokens counter, one series per model, among others."""
    lines = [
        "# HELP vllm:num_requests_running Number of requests currently running on GPU.",
        "# TYPE vllm:num_requests_running gauge",
        'vllm:num_requests_running{model_name="a"} 3.0',
        "# HELP vllm:generation_tokens_total Number of generation tokens processed.",
        "# TYPE vllm:generation_tokens_total counter",
    ]
    lines += [
        f'vllm:generation_tokens_total{{model_name="m{i}"}} {total}'
        for i, total in enumerate(totals)
    ]
    lines += [
        "# HELP vllm:prompt_tokens_total Number of prefill tokens processed.",
        "# TYPE vllm:prompt_tokens_total counter",
        'vllm:prompt_tokens_total{model_name="m0"} 99999.0',
    ]
    return ("\n".join(lines) + "\n").encode()


def test_the_counter_series_are_found_by_sample_or_family_name() -> None:
    page = vllm_page(100, 50).decode()
    series = counter_series(page, "vllm:generation_tokens_total", ())
    assert series == {"model_name=m0": 100.0, "model_name=m1": 50.0}
    assert counter_series(page, "vllm:generation_tokens", ()) == series
    only = counter_series(page, "vllm:generation_tokens_total", (("model_name", "m1"),))
    assert only == {"model_name=m1": 50.0}


@pytest.mark.parametrize(
    ("page", "message"),
    [
        ("vllm:prompt_tokens_total 5\n", "no series vllm:generation_tokens_total{} on the page"),
        ("<html>502 Bad Gateway</html>\n", "not Prometheus text format"),
        ("vllm:generation_tokens_total NaN\n", "is nan, not a counter value"),
        ("vllm:generation_tokens_total -4\n", "is -4, not a counter value"),
    ],
)
def test_pages_without_a_usable_counter_say_why(page: str, message: str) -> None:
    with pytest.raises(ScrapeError, match=message.replace("{", r"\{").replace("}", r"\}")):
        counter_series(page, "vllm:generation_tokens_total", ())


def annotations(**extra: str) -> dict[str, str]:
    base = {
        "wattwise.io/work-metric": "vllm:generation_tokens_total",
        "wattwise.io/work-unit": "tokens",
        "wattwise.io/work-port": "8000",
        "other.io/ignored": "x",
    }
    return base | {f"wattwise.io/{k.replace('_', '-')}": v for k, v in extra.items()}


def test_pod_annotations_name_the_endpoint() -> None:
    endpoint = endpoint_from_annotations("10.1.2.3", annotations(), UNITS)
    assert endpoint == Endpoint(
        "http://10.1.2.3:8000/metrics", "vllm:generation_tokens_total", "tokens"
    )
    custom = endpoint_from_annotations(
        "fd00::7", annotations(work_path="stats/prom", work_scheme="https"), UNITS
    )
    assert custom.url == "https://[fd00::7]:8000/stats/prom"


@pytest.mark.parametrize(
    ("pod_ip", "extra", "message"),
    [
        ("10.1.2.3", {"work_port": "http"}, "work-port 'http' is not a port number"),
        ("10.1.2.3", {"work_unit": "furlongs"}, "work-unit 'furlongs' is not one of work.units"),
        ("10.1.2.3", {"work_metric": "tokens per second"}, "is not a metric name"),
        ("10.1.2.3", {"work_scheme": "ftp"}, "'ftp' is not http or https"),
        ("", {}, "the pod has no IP yet"),
    ],
)
def test_bad_pod_annotations_say_why(pod_ip: str, extra: dict[str, str], message: str) -> None:
    with pytest.raises(ScrapeError, match=message):
        endpoint_from_annotations(pod_ip, annotations(**extra), UNITS)
    with pytest.raises(ScrapeError, match=r"wattwise\.io/work-unit is missing"):
        endpoint_from_annotations("10.1.2.3", {"wattwise.io/work-metric": "a"}, UNITS)


def test_the_kubelet_list_gives_the_pod_ip_and_only_our_annotations(tmp_path: Path) -> None:
    pods = {
        "kind": "PodList",
        "items": [
            {
                "metadata": {
                    "name": "vllm-0",
                    "namespace": "inference",
                    "uid": "u1",
                    "annotations": annotations(),
                },
                "status": {"podIP": "10.1.2.3"},
            },
            {"metadata": {"name": "plain", "namespace": "default", "uid": "u2"}, "status": {}},
        ],
    }
    with serve(Script(body=pods)) as url:
        names = PodNames(url)
        assert names.refresh_once()
        names.stop()
    ip, ours = names.annotations("u1")  # type: ignore[misc]
    assert ip == "10.1.2.3" and "other.io/ignored" not in ours and len(ours) == 3
    assert names.annotations("u2") is None and names.get("u2") == "default/plain"


def test_each_series_resets_on_its_own_and_a_failing_page_loses_nothing() -> None:
    script = Script(body=vllm_page(100, 50))
    counts = WorkCounts()
    with serve(script) as url:
        endpoint = Endpoint(f"{url}/metrics", "vllm:generation_tokens_total", "tokens")
        scraper = WorkScraper(counts, lambda: {"slurm:7": [endpoint]}, timeout_s=2)
        scraper.scrape_once()
        assert counts.total("slurm:7", "tokens") == 150  # all of it is the job's work
        assert scraper.state == (1, 0)

        script.body = vllm_page(130, 20)  # model m1's server restarted and counted 20 anew
        scraper.scrape_once()
        assert counts.total("slurm:7", "tokens") == 150 + 30 + 20

        script.status = 500
        scraper.scrape_once()
        assert scraper.state == (0, 1)
        assert counts.total("slurm:7", "tokens") == 200

        script.status, script.body = 200, vllm_page(140, 25)
        scraper.scrape_once()
        assert counts.total("slurm:7", "tokens") == 200 + 10 + 5
        scraper.stop()
    assert all(path == "/metrics" for path, _ in script.requests)


def test_after_an_agent_restart_counters_resume_without_counting_twice() -> None:
    counts = WorkCounts({("slurm:7", "tokens"): 215.0})  # from the ledger
    counts.report_total("slurm:7", "tokens", 140, "m0")
    counts.report_total("slurm:7", "tokens", 25, "m1")
    assert counts.total("slurm:7", "tokens") == 215
    counts.report_total("slurm:7", "tokens", 150, "m0")
    assert counts.total("slurm:7", "tokens") == 225
    fresh = WorkCounts()  # a job first seen now: everything it counted is its work
    fresh.report_total("slurm:8", "tokens", 140, "m0")
    fresh.report_total("slurm:8", "tokens", 25, "m1")
    assert fresh.total("slurm:8", "tokens") == 165


def test_a_running_agent_reads_a_slurm_jobs_counter_by_its_name(node: Node) -> None:  # noqa: F811
    script = Script(body=vllm_page(1000))
    with serve(script) as url:
        targets = [
            {
                "job_name": "lla*",  # job 12 is called llama
                "url": f"{url}/metrics",
                "metric": "vllm:generation_tokens_total",
                "unit": "tokens",
            },
            {"job_name": "nothing-*", "url": f"{url}/other", "metric": "x", "unit": "tokens"},
        ]
        agent = node.start(
            WATTWISE_WORK__TARGETS=json.dumps(targets), WATTWISE_WORK__SCRAPE_INTERVAL_S="1"
        )
        try:
            agent.wait_for(lambda m: work_units(m) == {"12": 1000.0})
            script.body = vllm_page(200)  # the job's server restarted
            m = agent.wait_for(lambda m: work_units(m) == {"12": 1200.0})
            assert m[("wattwise_work_endpoints", ("state", "up"))] == 1
            script.status = 503
            m = agent.wait_for(lambda m: m.get(("wattwise_work_endpoints", ("state", "down"))))
            assert work_units(m) == {"12": 1200.0}
        finally:
            agent.process.send_signal(signal.SIGTERM)
            _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert "work counter of slurm:12 not read" in stderr and "HTTP 503" in stderr
    assert not any(path == "/other" for path, _ in script.requests)


def work_units(m: dict) -> dict[str, float]:
    return {
        dict(k[1:])["job_id"]: v
        for k, v in m.items()
        if k[0] == "wattwise_job_work_units_total" and ("unit", "tokens") in k
    }
