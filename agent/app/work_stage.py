"""Jobs' work for performance per watt: the counts the tick drains, the work API's socket, and
the scraper of jobs' own counters (work.targets and pod annotations)."""

from __future__ import annotations

import logging
from fnmatch import fnmatch
from typing import TYPE_CHECKING

from wattwise.accounts.totals import RunningTotals
from wattwise.config import Config
from wattwise.jobs.tracker import JobTracker
from wattwise.model import Finding
from wattwise.work.api import WorkCounts, WorkServer, probe_socket

if TYPE_CHECKING:  # imported where they are used: only when configured
    from wattwise.jobs.kubelet import PodNames
    from wattwise.work.scrape import Endpoint, WorkScraper

log = logging.getLogger(__name__)


class WorkStage:
    def __init__(
        self,
        config: Config,
        tracker: JobTracker,
        pod_names: PodNames | None,
        accounts: RunningTotals,
        durable: bool,
    ) -> None:
        self.config, self.tracker, self.pod_names = config, tracker, pod_names
        self.durable = durable
        self.counts = WorkCounts(accounts.work_totals())
        self.server: WorkServer | None = None
        self.scraper: WorkScraper | None = None
        self._bad_annotations: dict[str, str] = {}

    def start(self, connection_limit: int) -> None:
        """In run mode only: the socket, and the scraper where there is something to read."""
        work = self.config.work
        if not self.durable:
            return
        if work.enabled:
            tracker = self.tracker
            self.server = WorkServer(
                work.socket_path,
                self.counts,
                work.units,
                tracker.job_of_pid,
                tracker.job_user,
                tracker.known,
            )
            try:
                self.server.start(connection_limit)
            except OSError as exc:
                log.error("work API not available at %s: %s", work.socket_path, exc)
                self.server = None
        if work.targets or (work.pod_annotations and self.pod_names):
            from wattwise.work.scrape import WorkScraper

            self.scraper = WorkScraper(
                self.counts, self._endpoints, work.scrape_interval_s, work.scrape_timeout_s
            )
            self.scraper.start()

    def probe(self) -> list[Finding]:
        work = self.config.work
        return [probe_socket(work.socket_path)] if work.enabled else []

    @property
    def endpoints_state(self) -> tuple[int, int] | None:
        return self.scraper.state if self.scraper else None

    def _endpoints(self) -> dict[str, list[Endpoint]]:
        """The endpoints to read now: work.targets by job name, and annotated pods."""
        from wattwise.work.scrape import Endpoint, ScrapeError, endpoint_from_annotations

        work = self.config.work
        endpoints: dict[str, list[Endpoint]] = {}
        for key, ref, name in self.tracker.running():
            found = [Endpoint.of(t) for t in work.targets if name and fnmatch(name, t.job_name)]
            pod = self.pod_names.annotations(ref.job_id) if self.pod_names else None
            if pod is not None and work.pod_annotations:
                try:
                    found.append(endpoint_from_annotations(*pod, work.units))
                except ScrapeError as exc:
                    self._note_bad_annotation(key, str(exc))
            if found:
                endpoints[key] = found
        return endpoints

    def _note_bad_annotation(self, key: str, error: str) -> None:
        if self._bad_annotations.get(key) != error:
            log.warning("work annotations of %s not used: %s", key, error)
            self._bad_annotations[key] = error

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.scraper is not None:
            self.scraper.stop()
