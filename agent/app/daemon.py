"""The Agent: opens the sources, runs one tick (read -> account -> Snapshot), serves, shuts down."""

from __future__ import annotations

import logging
import time
from fnmatch import fnmatch
from typing import TYPE_CHECKING, Protocol

from wattwise.accounting import EnergyAccounts
from wattwise.accounts.ledger import JobSeen, Ledger, LedgerError, LedgerUnavailable, probe_ledger
from wattwise.accounts.totals import Accounts
from wattwise.attribution import attribute_tick, finite_only
from wattwise.carbon.embodied import EmbodiedRates, gpu_embodied_g, held_resources, split_embodied
from wattwise.carbon.file import FileProvider
from wattwise.carbon.grid import GridIntensity
from wattwise.carbon.intensity import Intensity, ProviderError
from wattwise.carbon.operational import grams_per_joule
from wattwise.carbon.pue_feed import CONFIG, FacilityPue
from wattwise.carbon.table import StaticProvider, TableProvider
from wattwise.clock import SYSTEM, Clock
from wattwise.config import Config
from wattwise.exporters.exposition import Exposition
from wattwise.exporters.prometheus import SnapshotCollector
from wattwise.jobs.cgroups import KUBERNETES, JobRef
from wattwise.jobs.metadata import JobMeta
from wattwise.jobs.tracker import JobTracker
from wattwise.model import (
    ESTIMATE,
    CarbonStatus,
    DomainEnergy,
    Finding,
    GpuStatus,
    Snapshot,
    SourceReadout,
)
from wattwise.net.listen import (
    MAX_CONNECTIONS,
    bind_tcp,
    descriptor_budget,
    metrics_routes,
    serve_http,
)
from wattwise.service import Service
from wattwise.signals import stop_requested
from wattwise.sources.estimate import EstimateSource
from wattwise.sources.nvml import NvmlSource
from wattwise.sources.rapl import RaplSource
from wattwise.work.api import WorkCounts, WorkServer

if TYPE_CHECKING:  # each imported where it is used: only what is configured is loaded
    from wattwise.facility.bmc import PlatformPower
    from wattwise.jobs.kubelet import PodNames
    from wattwise.work.scrape import Endpoint, WorkScraper

log = logging.getLogger(__name__)


class Source(Protocol):
    name: str

    def read(self) -> SourceReadout: ...
    def probe(self) -> list[Finding]: ...
    def close(self) -> None: ...


def _team(meta: JobMeta, scheduler: str) -> str:
    """The Slurm account, else a pod's namespace: who a job's carbon is reported under."""
    if scheduler == KUBERNETES:
        return meta.name.partition("/")[0] if "/" in meta.name else ""
    return meta.account


class Agent:
    """Owns the sources and the counter state; `tick()` swaps in a new immutable Snapshot."""

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
        self._connection_limit = connection_limit
        self.sources: list[Source] = []
        self._skipped: list[Finding] = []
        self._open_sources()
        self.accounts = EnergyAccounts()
        self.latest: Snapshot | None = None
        self._down: dict[str, str] = {}
        self.tracker: JobTracker | None = None
        self.pod_names: PodNames | None = None
        self.ledger: Ledger | None = None
        self.ledger_problem: str | None = None
        self._ledger_error: str | None = None
        self.job_accounts: Accounts | None = None
        self._durable = durable and config.jobs.enabled and config.ledger.enabled
        self._last_tick_monotonic_s: float | None = None
        self._identity_cache: dict[str, tuple[JobRef, JobMeta | None, JobSeen, tuple]] = {}
        self._identities_given: tuple[dict, dict] | None = None
        self.grid: GridIntensity | None = None
        self._carbon_findings: list[Finding] = []
        self._gpu_models: dict[int, str] = {}  # kept when a GPU falls off: it still exists
        self._rates: EmbodiedRates | None = None
        if config.carbon.enabled:
            providers, self._carbon_findings = _providers(config)
            self.grid = GridIntensity(providers, config.carbon.stale_after_s)
            self.grid.start()
        self.pue_feed: FacilityPue | None = None
        if config.carbon.enabled and config.carbon.pue_url:
            self.pue_feed = FacilityPue(
                config.carbon.pue_url, config.carbon.pue_window, config.carbon.pue_ratio
            )
            self.pue_feed.start()
        self.platform: PlatformPower | None = None
        self.work_server: WorkServer | None = None  # set when jobs are accounted, in run mode
        self.work_scraper: WorkScraper | None = None
        self._bad_annotations: dict[str, str] = {}
        if config.platform is not None:
            from wattwise.facility.bmc import PlatformPower

            self.platform = PlatformPower(config.platform, config.platform_interval_s)
            self.platform.start()
        if config.jobs.enabled:
            self._open_jobs(durable and config.ledger.enabled)

    def _open_jobs(self, durable: bool) -> None:
        config = self.config
        jobs = config.jobs
        if jobs.kubelet_url:
            from wattwise.jobs.kubelet import PodNames

            token = jobs.kubelet_token_file
            self.pod_names = PodNames(
                jobs.kubelet_url,
                token_file=token if token and token.is_file() else None,
                ca_file=jobs.kubelet_ca_file,
                verify=not jobs.kubelet_insecure_skip_verify,
            )
            self.pod_names.start()
        self.tracker = JobTracker(
            config.cgroup_root,
            config.procfs_root,
            jobs.schedulers,
            self.pod_names.get if self.pod_names else None,
            clock=self.clock.monotonic,
        )
        ledger_config = config.ledger
        if durable:
            try:
                self.ledger = Ledger(
                    ledger_config.path,
                    ledger_config.minutely_retention_s,
                    ledger_config.hourly_retention_s,
                )
                if not self.ledger.is_open:
                    log.warning("%s", self.ledger.last_error)
                self.job_accounts = Accounts(
                    config.jobs.finished_grace_s, self.ledger, ledger_config.commit_interval_s
                )
            except LedgerUnavailable as exc:  # locked while its totals were read: retried
                assert self.ledger is not None
                self.ledger.suspend(exc)
                log.warning("%s", exc)
            except LedgerError as exc:
                self._refuse_ledger(exc)
        if self.job_accounts is None:  # no ledger yet, or none at all
            self.job_accounts = Accounts(
                config.jobs.finished_grace_s, self.ledger, ledger_config.commit_interval_s
            )
        self.work = WorkCounts(self.job_accounts.work_totals())
        if durable and config.work.enabled:
            tracker = self.tracker
            self.work_server = WorkServer(
                config.work.socket_path,
                self.work,
                config.work.units,
                tracker.job_of_pid,
                tracker.job_user,
                tracker.known,
            )
            try:
                self.work_server.start(self._connection_limit)
            except OSError as exc:
                log.error("work API not available at %s: %s", config.work.socket_path, exc)
                self.work_server = None
        work = config.work
        if durable and (work.targets or (work.pod_annotations and self.pod_names)):
            from wattwise.work.scrape import WorkScraper

            self.work_scraper = WorkScraper(
                self.work, self._work_endpoints, work.scrape_interval_s, work.scrape_timeout_s
            )
            self.work_scraper.start()

    def _refuse_ledger(self, exc: LedgerError) -> None:
        """A ledger file that will never be usable: measure without one, saying so."""
        if self.ledger is not None:
            self.ledger.close_without_writing()
        self.ledger = None
        if self.job_accounts is not None:
            self.job_accounts.ledger = None
        self.ledger_problem = str(exc)
        log.error("%s. Measuring without a ledger: job totals are not kept.", exc)

    def _work_endpoints(self) -> dict[str, list[Endpoint]]:
        """The endpoints to read now: work.targets by job name, and annotated pods."""
        from wattwise.work.scrape import Endpoint, ScrapeError, endpoint_from_annotations

        assert self.tracker is not None
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

    def _open_sources(self) -> None:
        config = self.config
        rapl = RaplSource(config.sysfs_root) if config.rapl.enabled else None
        if rapl is not None:
            self.sources.append(rapl)
        if config.nvml.enabled:
            self.sources.append(NvmlSource(config.nvml.power_poll_hz))
        why = rapl.why_not_measuring_cpu() if rapl is not None else "RAPL disabled in config"
        if why is None:
            note = "not in use: RAPL measures the CPU"
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

    def tick(self) -> Snapshot:
        started = time.perf_counter()
        readouts = [source.read() for source in self.sources]
        counters = tuple(c for r in readouts for c in r.counters)
        domains = self.accounts.update(counters)
        self._log_changes(domains)
        gpus = tuple(g for r in readouts for g in r.gpus)
        now_unix_s = self.clock.wall()
        # One read per tick: the intensity charged is the one exported, even if the refresher
        # swaps in a new value meanwhile.
        intensity = self.grid.current(now_unix_s) if self.grid is not None else None
        pue = self.pue_feed.current() if self.pue_feed else (self.config.carbon.pue_ratio, CONFIG)
        if self.tracker is not None:
            self._charge_jobs(domains, gpus, now_unix_s, intensity, pue[0])
        jobs = self.job_accounts.views() if self.job_accounts is not None else ()
        if self.tracker is not None:
            self.work.retain({view.job_key for view in jobs})
        unattributed = self.job_accounts.unattributed() if self.job_accounts is not None else ()
        snapshot = Snapshot(
            taken_at_unix_s=now_unix_s,
            interval_s=self.config.interval_s,
            tick_duration_s=time.perf_counter() - started,
            domains=domains,
            gpus=gpus,
            sources=tuple(s for r in readouts for s in r.status),
            jobs=jobs,
            unattributed_j=unattributed,
            ledger_up=None
            if self.tracker is None or not self._durable
            else self.ledger is not None and self.ledger.last_error is None,
            carbon=self._carbon_status(now_unix_s, intensity, pue),
            platform_w=self.platform.watts() if self.platform else None,
            platform_age_s=self.platform.age_s() if self.platform else None,
            work_endpoints=self.work_scraper.state if self.work_scraper else None,
            gpu_use_j=tuple(self.job_accounts.gpu_use_j.items())
            if self.job_accounts is not None
            else (),
            embodied=self.job_accounts.embodied_status()
            if self.job_accounts is not None and self.config.embodied.enabled
            else None,
            services=tuple(service.state() for service in self._services()),
        )
        self.latest = snapshot  # one reference swap: a scrape sees this tick or the last, whole
        return snapshot

    def _charge_jobs(
        self,
        domains: tuple[DomainEnergy, ...],
        gpus: tuple[GpuStatus, ...],
        now_unix_s: float,
        intensity: Intensity | None,
        pue_ratio: float,
    ) -> None:
        assert self.tracker is not None
        now = self.clock.monotonic()
        elapsed_s = now - (self._last_tick_monotonic_s or now)
        self._last_tick_monotonic_s = now
        activity = self.tracker.observe(gpus)
        charged, left = attribute_tick(
            domains,
            activity.cpu,
            activity.gpu_sm_samples,
            activity.gpu_holders,
            self.config.jobs.idle_policy,
            # this interval's intensity and PUE, never an average
            grams_per_joule(pue_ratio, intensity.grams_per_kwh) if intensity is not None else 0.0,
        )
        charged, left, dropped = finite_only(charged, left)
        for share in dropped:
            log.error("not a finite share, dropped (please report this bug): %s", share)
        embodied = None
        if self.config.embodied.enabled:
            cpus_held, gpus_held = held_resources(
                activity.cpu, activity.gpu_sm_samples, activity.gpu_holders, elapsed_s
            )
            rates = self._embodied_rates(gpus)
            embodied = split_embodied(
                elapsed_s, rates, activity.cpu.total_cpus, cpus_held, gpus_held
            )
        seen, owners = self._identities(activity.jobs, activity.meta)
        work = self.work.drain()  # drained every tick, so it never piles up
        assert self.job_accounts is not None
        self.job_accounts.apply(
            now_unix_s, elapsed_s, activity.jobs, charged, left, seen, embodied, owners, work
        )
        self._commit(now_unix_s)

    def _identities(
        self, jobs: dict[str, JobRef], meta: dict[str, JobMeta]
    ) -> tuple[dict[str, JobSeen], dict[str, tuple[str, str]]]:
        """Each job as the ledger records it, and its (user, team); made again only for a job
        whose ref or metadata changed (the tracker keeps both objects while they hold)."""
        cache, fresh = self._identity_cache, {}
        changed = len(cache) != len(jobs) or self._identities_given is None
        for key, ref in jobs.items():
            known = meta.get(key)
            entry = cache.get(key)
            if entry is None or entry[0] is not ref or entry[1] is not known:
                name, user = (known.name, known.user) if known else ("", "")
                owner = (user, _team(known, ref.scheduler)) if known else ("", "")
                seen = JobSeen(key, ref.scheduler, ref.kind, ref.job_id, name, user)
                entry, changed = (ref, known, seen, owner), True
            fresh[key] = entry
        self._identity_cache = fresh
        if changed:  # the same mappings otherwise: the accounts then skip them
            self._identities_given = (
                {k: e[2] for k, e in fresh.items()},
                {k: e[3] for k, e in fresh.items()},
            )
        assert self._identities_given is not None
        return self._identities_given

    def _commit(self, now_unix_s: float, force: bool = False) -> None:
        """Commits the job accounts when their interval has passed; logs the ledger's state
        when it changes."""
        assert self.job_accounts is not None
        try:
            self.job_accounts.commit(now_unix_s, force, self.clock.monotonic())
        except LedgerUnavailable as exc:  # locked while its totals were read: retried
            assert self.ledger is not None
            self.ledger.suspend(exc)
        except LedgerError as exc:  # damaged while in use
            self._refuse_ledger(exc)
            return
        if self.ledger is None:
            return
        if self.ledger.last_error != self._ledger_error:
            if self.ledger.last_error:
                log.error("%s", self.ledger.last_error)
            else:
                log.info("ledger %s is written; nothing was lost", self.ledger.path)
            self._ledger_error = self.ledger.last_error

    def _services(self) -> list[Service]:
        """Every background service this agent runs, for wattwise_service_up."""
        owners = (self.grid, self.pue_feed, self.platform, self.pod_names, self.work_scraper)
        found = [getattr(owner, "service", None) for owner in owners]
        found += [s for source in self.sources for s in getattr(source, "services", ())]
        return [service for service in found if service is not None]

    def _embodied_rates(self, gpus: tuple[GpuStatus, ...]) -> EmbodiedRates:
        config = self.config.embodied
        models = {g.index: g.model for g in gpus if g.model}
        if self._rates is not None and models.items() <= self._gpu_models.items():
            return self._rates  # the same GPUs as before: the same rates
        self._gpu_models |= models
        self._rates = EmbodiedRates(
            server_g_per_s=config.server_embodied_g / config.server_lifespan_s,
            gpu_g_per_s={
                index: gpu_embodied_g(model, config.gpu_embodied_g, config.gpu_default_embodied_g)
                / config.gpu_lifespan_s
                for index, model in self._gpu_models.items()
            },
        )
        return self._rates

    def _carbon_status(
        self, now_unix_s: float, intensity: Intensity | None, pue: tuple[float, str]
    ) -> CarbonStatus | None:
        if intensity is None or self.tracker is None or self.grid is None:
            return None
        return CarbonStatus(
            grams_per_kwh=intensity.grams_per_kwh,
            zone=intensity.zone,
            provider=intensity.provider,
            signal=intensity.signal,
            basis=intensity.basis,
            age_s=intensity.age_s(now_unix_s),  # the data's own age, not the fetch's
            pue_ratio=pue[0],
            pue_source=pue[1],
            node_operational_g=self.job_accounts.node_carbon_g if self.job_accounts else 0.0,
            providers_up=tuple((s.name, s.up) for s in self.grid.states()),
        )

    def _log_changes(self, domains: tuple) -> None:
        for domain in domains:
            name = f"{domain.key.source} {domain.key.domain}-{domain.key.device}"
            if not domain.up and self._down.get(name) != domain.error:
                log.warning("%s is down: %s", name, domain.error)
                self._down[name] = domain.error or ""
            elif domain.up and name in self._down:
                log.info("%s is up again", name)
                del self._down[name]

    def probe(self) -> list[Finding]:
        findings = [f for source in self.sources for f in source.probe()] + self._skipped
        return findings + self._probe_jobs() + self._probe_carbon() + self._probe_embodied()

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

    def _probe_carbon(self) -> list[Finding]:
        if self.grid is None:
            return [Finding("carbon", "-", "-", True, "carbon accounting disabled in config")]
        findings = list(self._carbon_findings)
        for state in self.grid.states():
            value = state.last_good
            if value is not None:
                detail = f"{value.grams_per_kwh:g} g/kWh for {value.zone} ({value.signal})"
            else:
                detail = state.error or "no value yet"
            findings.append(Finding("carbon", state.name, "-", state.up, detail))
        if self.config.carbon.pue_ratio == 1.0:
            findings.append(
                Finding(
                    "carbon",
                    "pue",
                    "-",
                    True,
                    "PUE 1.0: IT energy only",
                    "set carbon.pue_ratio to your site's PUE",
                )
            )
        return findings

    def _probe_jobs(self) -> list[Finding]:
        config = self.config
        if self.tracker is None:
            return [Finding("jobs", "-", "-", True, "job accounting disabled in config")]
        hierarchy = self.tracker.hierarchy
        if hierarchy is None:
            fix = "mount cgroups, or point cgroup_root at the host's (a container needs it)"
            return [
                Finding(
                    "jobs",
                    "cgroups",
                    str(config.cgroup_root),
                    False,
                    "no cgroup v1 cpuacct or v2 hierarchy",
                    fix,
                )
            ]
        jobs = self.tracker.observe().jobs
        kinds = ", ".join(config.jobs.schedulers)
        detail = f"cgroup v{hierarchy.version}, {len(jobs)} job(s) now; accounting {kinds}"
        findings = [Finding("jobs", "cgroups", str(hierarchy.root), True, detail)]
        if config.ledger.enabled:
            findings.append(probe_ledger(config.ledger.path))
        return findings

    def close(self) -> None:
        for source in self.sources:
            source.close()
        if self.tracker is not None:
            self.tracker.close()
        if self.job_accounts is not None and self.latest is not None:
            self._commit(self.latest.taken_at_unix_s, force=True)  # the last partial minute too
            if self.ledger is not None and self.ledger.last_error:
                log.error(
                    "%s; what was counted since the last commit is lost", self.ledger.last_error
                )
        if self.ledger is not None:
            self.ledger.close()
        if self.pod_names is not None:
            self.pod_names.stop()
        if self.grid is not None:
            self.grid.stop()
        if self.pue_feed is not None:
            self.pue_feed.stop()
        if self.platform is not None:
            self.platform.stop()
        if self.work_server is not None:
            self.work_server.stop()
        if self.work_scraper is not None:
            self.work_scraper.stop()


def _ukgrid():  # the HTTP providers, imported only when configured
    from wattwise.carbon import ukgrid

    return ukgrid


def _electricitymaps():
    from wattwise.carbon import electricitymaps

    return electricitymaps


def _watttime():
    from wattwise.carbon import watttime

    return watttime


def _providers(config: Config) -> tuple[list, list[Finding]]:
    """The configured chain; a provider that cannot be built (a missing key) is left out and
    becomes a probe finding, so the rest of the chain still works."""
    carbon = config.carbon

    def secret(value) -> str:
        return value.get_secret_value() if value is not None else ""

    built = {
        "table": lambda: TableProvider(carbon.zone),
        "static": lambda: StaticProvider(carbon.static_g_per_kwh or 0.0, carbon.zone),
        "file": lambda: FileProvider(carbon.file_path, carbon.zone, carbon.file_signal),
        "ukgrid": lambda: _ukgrid().UkGridProvider(carbon.ukgrid_url, carbon.ukgrid_region_id),
        "electricitymaps": lambda: _electricitymaps().ElectricityMapsProvider(
            secret(carbon.electricitymaps_token),
            zone=carbon.electricitymaps_zone,
            lat_lon=carbon.electricitymaps_lat_lon,
            basis=carbon.electricitymaps_basis,
            base_url=carbon.electricitymaps_url,
        ),
        "watttime": lambda: _watttime().WattTimeProvider(
            carbon.watttime_username or "",
            secret(carbon.watttime_password),
            carbon.watttime_region or "",
            base_url=carbon.watttime_url,
        ),
    }
    providers, problems = [], []
    for name in carbon.providers:
        try:
            providers.append(built[name]())
        except ProviderError as exc:
            log.error("carbon provider %s left out: %s", name, exc)
            problems.append(Finding("carbon", name, "-", False, str(exc), "set it in config"))
    if not providers:  # every configured one failed: the world average keeps carbon going
        providers.append(TableProvider("WORLD"))
    return providers, problems


def serve(config: Config) -> None:
    """Runs until SIGINT or SIGTERM; stops within one interval and restores the signal handlers."""
    web = None
    if config.web_config_file:
        from wattwise.net.webconfig import WebConfig

        web = WebConfig(config.web_config_file)
    limit = descriptor_budget(listeners=2)  # /metrics and the work socket
    # Bind first: a taken port fails in one line, before any hardware is opened.
    sock = bind_tcp(config.listen_host, config.listen_port)
    try:
        agent = Agent(config, connection_limit=limit)
    except BaseException:
        sock.close()
        raise
    exposition = Exposition(
        lambda: agent.latest, lambda snapshot: SnapshotCollector(lambda: snapshot)
    )
    listener = serve_http(sock, metrics_routes(exposition), limit, web)
    scheduler = None
    try:
        with stop_requested() as stop:
            agent.tick()  # /metrics has figures from here on
            # Imported after the first tick: ~60 ms that need not delay the first scrape.
            from apscheduler.schedulers.background import BackgroundScheduler

            scheduler = BackgroundScheduler(daemon=True)
            scheduler.add_job(
                agent.tick,
                "interval",
                seconds=config.interval_s,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(config.interval_s)),
                id="tick",
            )
            scheduler.start()
            scheme = "https" if web is not None and web.uses_tls else "http"
            log.info(
                "serving %s://%s/metrics, sampling every %g s",
                scheme,
                config.listen,
                config.interval_s,
            )
            while not stop.wait(timeout=1.0):
                pass
    finally:
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=True)  # lets a tick in flight finish: at most one interval
        listener.stop()
        agent.close()
        log.info("stopped")
