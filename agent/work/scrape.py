"""Work counters read from the jobs' own Prometheus endpoints (vLLM's generation tokens, a
training loop's samples), for jobs that do not report to the work API themselves.

Endpoints come from work.targets (by job-name pattern) and from pods' wattwise.io/work-*
annotations. They are read on a thread of their own, never in the tick. Each series of the
counter is its own counter in WorkCounts, so one restarted replica is one counter reset and
not a drop of the sum. An endpoint that fails is logged once per change and skipped; what it
reported before stays counted.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from wattwise.config import METRIC_NAME, WorkTarget
from wattwise.errors import ScrapeError
from wattwise.jobs.kubelet import ANNOTATION_PREFIX
from wattwise.net.http import HttpClient
from wattwise.service import Service
from wattwise.statelog import ProblemLog
from wattwise.work.api import MAX_UNITS, WorkCounts

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 8 * 1024 * 1024  # a /metrics page; anything larger is not read


@dataclass(frozen=True, slots=True)
class Endpoint:
    url: str
    metric: str
    unit: str
    labels: tuple[tuple[str, str], ...] = ()

    @classmethod
    def of(cls, target: WorkTarget) -> Endpoint:
        return cls(target.url, target.metric, target.unit, tuple(sorted(target.labels.items())))


def endpoint_from_annotations(
    pod_ip: str, annotations: Mapping[str, str], units: Iterable[str]
) -> Endpoint:
    """wattwise.io/work-metric, -unit and -port (required), -path (/metrics), -scheme (http)."""

    def get(name: str, default: str | None = None) -> str:
        value = annotations.get(ANNOTATION_PREFIX + name, default)
        if value is None:
            raise ScrapeError(f"annotation {ANNOTATION_PREFIX}{name} is missing")
        return value.strip()

    metric, unit, port = get("work-metric"), get("work-unit"), get("work-port")
    path, scheme = get("work-path", "/metrics"), get("work-scheme", "http")
    if not METRIC_NAME.match(metric):
        raise ScrapeError(f"{ANNOTATION_PREFIX}work-metric {metric!r} is not a metric name")
    if unit not in units:
        raise ScrapeError(f"{ANNOTATION_PREFIX}work-unit {unit!r} is not one of work.units")
    if not port.isdigit() or not 0 < int(port) < 65536:
        raise ScrapeError(f"{ANNOTATION_PREFIX}work-port {port!r} is not a port number")
    if scheme not in ("http", "https"):
        raise ScrapeError(f"{ANNOTATION_PREFIX}work-scheme {scheme!r} is not http or https")
    if not pod_ip:
        raise ScrapeError("the pod has no IP yet")
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return Endpoint(f"{scheme}://{host}:{port}/{path.lstrip('/')}", metric, unit)


def counter_series(text: str, metric: str, labels: tuple[tuple[str, str], ...]) -> dict[str, float]:
    """Each series of `metric` (its sample name; `_total` may be left off) -> its value."""
    names = {metric, metric + "_total"}
    found: dict[str, float] = {}
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name not in names:
                    continue
                if any(sample.labels.get(k) != v for k, v in labels):
                    continue
                if not 0 <= sample.value <= MAX_UNITS:  # NaN and infinities fail too
                    raise ScrapeError(f"{sample.name} is {sample.value}, not a counter value")
                found[",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))] = sample.value
    except ValueError as exc:  # the parser's word for a page that is not exposition format
        raise ScrapeError(f"not Prometheus text format: {exc}") from None
    if not found:
        wanted = f"{metric}{{{','.join(f'{k}={v!r}' for k, v in labels)}}}"
        raise ScrapeError(f"no series {wanted} on the page")
    return found


class WorkScraper:
    """`endpoints()` -> {job key: [Endpoint]} for the jobs running now."""

    def __init__(
        self,
        counts: WorkCounts,
        endpoints: Callable[[], Mapping[str, list[Endpoint]]],
        interval_s: float = 15.0,
        timeout_s: float = 5.0,
    ) -> None:
        self.counts, self.endpoints, self.interval_s = counts, endpoints, interval_s
        self._http = HttpClient(deadline_s=timeout_s, max_bytes=MAX_BODY_BYTES)
        self._problems = ProblemLog(log, "work counter of %s is read again")
        self.state = (0, 0)  # endpoints (read, failed) at the last pass: one tuple, never torn
        self.service = Service("work-scrape", self.scrape_once, interval_s, interval_s)

    def scrape_once(self) -> None:
        errors: dict[tuple[str, str], str] = {}
        read: set[tuple[str, str]] = set()
        for job, endpoints in self.endpoints().items():
            for endpoint in endpoints:
                origin = f"{job} at {endpoint.url}"
                try:
                    page = self._get(endpoint.url)
                    series = counter_series(page, endpoint.metric, endpoint.labels)
                except Exception as exc:  # a page the parser chokes on costs that page only
                    why = str(exc)
                    if not isinstance(exc, ScrapeError):
                        why = f"unreadable page: {type(exc).__name__}: {exc}"
                    errors[(job, endpoint.url)] = why
                    self._problems.problem(origin, f"work counter of {job} not read: {why}")
                    continue
                self._problems.clear(origin)
                read.add((job, endpoint.url))
                for name, value in series.items():
                    self.counts.report_total(job, endpoint.unit, value, f"{endpoint.url} {name}")
        self.state = (len(read), len(errors))

    def _get(self, url: str) -> str:
        return self._http.get(url, error=ScrapeError).text

    def start(self) -> None:
        self.service.start()

    def stop(self) -> None:
        self.service.stop()
        self._http.close()
