"""The Agent: wires the stages from a Config and runs one tick (read -> account -> charge ->
Snapshot); serve() runs it as `wattwise run`."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from wattwise.accounting import EnergyCounters
from wattwise.app.carbon_stage import CarbonStage, NoCarbon
from wattwise.app.job_stage import JobStage, NoJobs
from wattwise.carbon.embodied import gpu_embodied_g
from wattwise.clock import SYSTEM, Clock
from wattwise.config import Config
from wattwise.exporters.prometheus import SnapshotCollector
from wattwise.model import ESTIMATE, DomainEnergy, Finding, Snapshot, SourceReadout
from wattwise.net.listen import bind_tcp
from wattwise.net.pool import MAX_CONNECTIONS, descriptor_budget
from wattwise.runtime import run
from wattwise.service import Service
from wattwise.sources.amd import AmdSmiSource
from wattwise.sources.estimate import EstimateSource
from wattwise.sources.hwmon import HwmonSource
from wattwise.sources.nvml import NvmlSource
from wattwise.sources.rapl import RaplSource
from wattwise.statelog import ProblemLog

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def read(self) -> SourceReadout: ...
    def probe(self) -> list[Finding]: ...
    def close(self) -> None: ...


class NoPlatformPower:
    """No BMC configured: no wall power."""

    service = None

    def watts(self) -> None:
        return None

    def age_s(self) -> None:
        return None

    def stop(self) -> None:
        pass


class Agent:
    """Owns the stages and the counter state; `tick()` swaps in a new immutable Snapshot."""

    def __init__(
        self,
        config: Config,
        durable: bool = True,
        connection_limit: int = MAX_CONNECTIONS,
        clock: Clock = SYSTEM,
    ) -> None:
        """`durable=False` (probe, once) charges jobs but never opens the ledger nor listens;
        `connection_limit` bounds the work socket's connections; `clock` is the tick's time."""
        self.config = config
        self.clock = clock
        self.sources: list[Source] = []
        self._skipped: list[Finding] = []
        self._open_sources()
        self.accounts = EnergyCounters()
        self.latest: Snapshot | None = None
        self._down = ProblemLog(log, "%s is up again")
        self.carbon = CarbonStage(config) if config.carbon.enabled else NoCarbon()
        self.platform = _platform(config)
        on_disk = durable and config.ledger.enabled
        self.jobs = (
            JobStage(config, clock, on_disk, connection_limit) if config.jobs.enabled else NoJobs()
        )

    # What tests and the CLI look at.
    ledger = property(lambda self: self.jobs.ledger)
    ledger_problem = property(lambda self: self.jobs.ledger_problem)
    tracker = property(lambda self: self.jobs.tracker)
    work_server = property(lambda self: self.jobs.work.server if self.jobs.on else None)

    def tick(self) -> Snapshot:
        started = time.perf_counter()
        readouts = [source.read() for source in self.sources]
        domains = self.accounts.update(tuple(c for r in readouts for c in r.counters))
        self._log_changes(domains)
        gpus = tuple(g for r in readouts for g in r.gpus)
        now_unix_s = self.clock.wall()
        carbon = self.carbon.now(now_unix_s)  # read once: what is charged is what is shown
        intensity = carbon.intensity
        basis = (
            None
            if intensity is None
            else (intensity.provider, intensity.zone, f"{intensity.signal} {intensity.basis}")
        )
        jobs = self.jobs.charge(domains, gpus, now_unix_s, carbon.grams_per_joule, basis)
        snapshot = Snapshot(
            taken_at_unix_s=now_unix_s,
            interval_s=self.config.interval_s,
            tick_duration_s=time.perf_counter() - started,
            domains=domains,
            gpus=gpus,
            sources=tuple(s for r in readouts for s in r.status),
            jobs=jobs,
            unattributed_j=self.jobs.unattributed(),
            ledger_up=self.jobs.ledger_up(),
            # Operational carbon is charged through the jobs' accounts: none without them.
            carbon=self.carbon.status(now_unix_s, carbon, self.jobs.node_operational_g)
            if self.jobs.on
            else None,
            platform_w=self.platform.watts(),
            platform_age_s=self.platform.age_s(),
            work_endpoints=self.jobs.work_endpoints(),
            gpu_use_j=self.jobs.gpu_use(),
            embodied=self.jobs.embodied_status(),
            services=tuple(service.state() for service in self._services()),
        )
        self.latest = snapshot  # one reference swap: a scrape sees this tick or the last, whole
        return snapshot

    def _open_sources(self) -> None:
        config = self.config
        rapl = RaplSource(config.sysfs_root) if config.rapl.enabled else None
        if rapl is not None:
            self.sources.append(rapl)
        if config.nvml.enabled:
            self.sources.append(NvmlSource(config.nvml.power_poll_hz))
        if config.amdsmi.enabled:
            amd = AmdSmiSource()
            if amd.gpus:
                self.sources.append(amd)
            else:
                self._skipped += amd.probe() if amd.problem else []
                amd.close()
        why = rapl.why_not_measuring_cpu() if rapl is not None else "RAPL disabled in config"
        hwmon = HwmonSource(config.sysfs_root, why is None) if config.hwmon.enabled else None
        if hwmon is not None and hwmon.sensors:
            self.sources.append(hwmon)
        if why is None:
            note = "not in use: RAPL measures the CPU"
            self._skipped.append(Finding(ESTIMATE, "cpu", "-", True, note))
        elif hwmon is not None and hwmon.measures_cpu:
            note = f"not in use: hwmon measures the CPU ({hwmon.measures_cpu})"
            self._skipped.append(Finding(ESTIMATE, "cpu", "-", True, note))
        elif config.estimate.enabled:
            self.sources.append(
                EstimateSource(config.estimate, config.sysfs_root, config.procfs_root, why)
            )
            log.warning("CPU energy is estimated, not measured: %s", why)
        else:
            note = "disabled in config, and no RAPL: CPU energy is not reported"
            fix = "enable estimate or RAPL"
            self._skipped.append(Finding(ESTIMATE, "cpu", "-", False, note, fix))

    def _services(self) -> list[Service]:
        """Every background service this agent runs, for wattwise_service_up."""
        found = self.carbon.services() + self.jobs.services()
        if self.platform.service is not None:
            found.append(self.platform.service)
        return found + [s for source in self.sources for s in getattr(source, "services", ())]

    def _log_changes(self, domains: tuple[DomainEnergy, ...]) -> None:
        for domain in domains:
            name = f"{domain.key.source} {domain.key.domain}-{domain.key.device}"
            if domain.up:
                self._down.clear(name)
            else:
                self._down.problem(name, f"{name} is down: {domain.error}")

    def probe(self) -> list[Finding]:
        findings = [f for source in self.sources for f in source.probe()] + self._skipped
        return findings + self.jobs.probe() + self.carbon.probe() + self._probe_embodied()

    def _probe_embodied(self) -> list[Finding]:
        config = self.config.embodied
        if not config.enabled:
            return [Finding("embodied", "-", "-", True, "embodied carbon disabled in config")]
        per_hour = 3600 / config.server_lifespan_s
        server = (
            f"{config.server_embodied_g / 1000:g} kg: {config.server_embodied_g * per_hour:.2f} g/h"
        )
        findings = [Finding("embodied", "server", "-", True, server)]
        gpus = [g for source in self.sources for g in source.read().gpus if g.model]
        for model in sorted({g.model for g in gpus}):
            grams = gpu_embodied_g(model, config.gpu_embodied_g, -1.0)
            known = grams >= 0
            grams = grams if known else config.gpu_default_embodied_g
            detail = (
                f"{model}: {grams / 1000:g} kg each, {grams * 3600 / config.gpu_lifespan_s:.2f} g/h"
            )
            if not known:
                detail += " (the default: no figure for this model)"
            fix = "" if known else "add the model's PCF to embodied.gpu_embodied_g"
            findings.append(Finding("embodied", "gpu", model, True, detail, fix))
        return findings

    def close(self) -> None:
        for source in self.sources:
            source.close()
        self.jobs.close(self.latest.taken_at_unix_s if self.latest is not None else None)
        self.carbon.close()
        self.platform.stop()


def _platform(config: Config):
    """This server's BMC, read on a thread of its own; imported only when configured."""
    if config.platform is None:
        return NoPlatformPower()
    from wattwise.facility.platform_power import PlatformPower

    platform = PlatformPower(config.platform, config.platform_interval_s)
    platform.start()
    return platform


def serve(config: Config) -> None:
    """Runs until SIGINT or SIGTERM; stops within one interval and restores the signal handlers."""
    web = None
    if config.web_config_file:
        from wattwise.net.webconfig import WebConfig

        web = WebConfig(config.web_config_file)
    limit = descriptor_budget(listeners=2)  # /metrics and the work socket
    sock = bind_tcp(config.listen_host, config.listen_port)  # before any hardware is opened
    scheme = "https" if web is not None and web.uses_tls else "http"
    run(
        sock,
        lambda: Agent(config, connection_limit=limit),
        lambda snapshot: SnapshotCollector(lambda: snapshot),
        config.interval_s,
        limit,
        web,
        f"serving {scheme}://{config.listen}/metrics, sampling every {config.interval_s:g} s",
    )
