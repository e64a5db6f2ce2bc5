"""The per-job stage of the tick: find the jobs, split the tick's energy and carbon among them,
count it, commit it, and take their work. `NoJobs` stands in when jobs are off."""

from __future__ import annotations

import logging
import socket
from typing import TYPE_CHECKING

from wattwise.accounts.ledger import Ledger
from wattwise.accounts.ledger_file import probe_ledger
from wattwise.accounts.totals import RunningTotals
from wattwise.app.work_stage import WorkStage
from wattwise.attribution import attribute_tick, finite_only
from wattwise.carbon.embodied import EmbodiedRates, held_resources, node_rates, split_embodied
from wattwise.clock import Clock
from wattwise.config import Config
from wattwise.errors import LedgerError, LedgerUnavailable
from wattwise.jobs.metadata import JobMeta, team_of
from wattwise.jobs.mig_activity import MigActivity
from wattwise.jobs.tracker import JobTracker
from wattwise.model import (
    DomainEnergy,
    EmbodiedStatus,
    Finding,
    GpuStatus,
    JobRef,
    JobSeen,
    JobView,
)
from wattwise.service import Service

if TYPE_CHECKING:  # imported where it is used: only when configured
    from wattwise.jobs.kubelet import PodNames

log = logging.getLogger(__name__)


class JobStage:
    on = True

    def __init__(self, config: Config, clock: Clock, durable: bool, connection_limit: int):
        """`durable=False` (probe, once): charges jobs, but opens no ledger and no socket."""
        self.config, self.clock = config, clock
        self.durable = durable
        self.pod_names: PodNames | None = None
        if config.jobs.kubelet_url:  # imported only where configured
            from wattwise.jobs.kubelet import start_pod_names

            self.pod_names = start_pod_names(config.jobs)
        self.mig_activity: MigActivity | None = None
        if config.nvml.enabled and config.nvml.dcgm_exporter_url:
            self.mig_activity = MigActivity(
                config.nvml.dcgm_exporter_url, config.nvml.dcgm_exporter_interval_s
            )
        self.tracker = JobTracker(
            config.cgroup_root,
            config.procfs_root,
            config.jobs.schedulers,
            self.pod_names.get if self.pod_names else None,
            clock=clock.monotonic,
            mig_activity=self.mig_activity,
        )
        self.ledger: Ledger | None = None
        self.ledger_problem: str | None = None
        self._ledger_error: str | None = None
        self.accounts = self._open_accounts()
        self.work = WorkStage(config, self.tracker, self.pod_names, self.accounts, durable)
        self.work.start(connection_limit)
        self._last_tick_monotonic_s: float | None = None
        self._identity_cache: dict[str, tuple[JobRef, JobMeta | None, JobSeen, tuple]] = {}
        self._identities_given: tuple[dict, dict] | None = None
        self._gpu_models: dict[int, str] = {}  # kept when a GPU falls off: it still exists
        self._rates: EmbodiedRates | None = None

    def _open_accounts(self) -> RunningTotals:
        ledger_config, grace_s = self.config.ledger, self.config.jobs.finished_grace_s
        if self.durable:
            try:
                self.ledger = Ledger(
                    ledger_config.path,
                    ledger_config.minutely_retention_s,
                    ledger_config.hourly_retention_s,
                    node=ledger_config.node or socket.gethostname(),
                    cluster=ledger_config.cluster,
                )
                if not self.ledger.is_open:
                    log.warning("%s", self.ledger.last_error)
                return RunningTotals(grace_s, self.ledger, ledger_config.commit_interval_s)
            except LedgerUnavailable as exc:  # locked while its totals were read: retried
                assert self.ledger is not None
                self.ledger.suspend(exc)
                log.warning("%s", exc)
            except LedgerError as exc:
                self._refuse_ledger(exc)
        # no ledger yet, or none at all
        return RunningTotals(grace_s, self.ledger, ledger_config.commit_interval_s)

    def _refuse_ledger(self, exc: LedgerError) -> None:
        """A ledger file that will never be usable: measure without one, saying so."""
        if self.ledger is not None:
            self.ledger.close_without_writing()
        self.ledger = None
        if getattr(self, "accounts", None) is not None:
            self.accounts.ledger = None
        self.ledger_problem = str(exc)
        log.error("%s. Measuring without a ledger: job totals are not kept.", exc)

    def charge(
        self,
        domains: tuple[DomainEnergy, ...],
        gpus: tuple[GpuStatus, ...],
        now_unix_s: float,
        grams_per_j: float,
        intensity: tuple[str, str, str] | None = None,
    ) -> tuple[JobView, ...]:
        """Splits the tick among the jobs, counts and commits it; the jobs as /metrics shows
        them. `intensity`: the provider, zone and kind of the intensity charged (kept in the
        ledger, so its reports can name it)."""
        now = self.clock.monotonic()
        elapsed_s = now - (self._last_tick_monotonic_s or now)
        self._last_tick_monotonic_s = now
        gpu_power_w = {
            int(d.key.device): d.power_w
            for d in domains
            if d.key.domain == "gpu" and d.power_w is not None
        }
        activity = self.tracker.observe(gpus, gpu_power_w)
        charged, left = attribute_tick(
            domains,
            activity.cpu,
            activity.gpu_sm_samples,
            activity.gpu_holders,
            self.config.jobs.idle_policy,
            grams_per_j,  # this interval's intensity and PUE, never an average
            activity.gpu_shares,
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
        figures = self.work.counts.drain()  # drained every tick, so it never piles up
        self.accounts.apply(
            now_unix_s, elapsed_s, activity.jobs, charged, left, seen, embodied, owners, figures
        )
        if intensity is not None:
            self.accounts.note_intensity(now_unix_s, elapsed_s, *intensity)
        self.commit(now_unix_s)
        views = self.accounts.views()
        self.work.counts.retain({view.job_key for view in views})
        return views

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
                owner = (user, team_of(known, ref.scheduler)) if known else ("", "")
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

    def commit(self, now_unix_s: float, force: bool = False) -> None:
        """Commits the job accounts when their interval has passed; logs the ledger's state
        when it changes."""
        try:
            self.accounts.commit(now_unix_s, force, self.clock.monotonic())
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

    def _embodied_rates(self, gpus: tuple[GpuStatus, ...]) -> EmbodiedRates:
        models = {g.index: g.model for g in gpus if g.model}
        if self._rates is None or not models.items() <= self._gpu_models.items():
            self._gpu_models |= models  # the same GPUs as before: the same rates
            self._rates = node_rates(self.config.embodied, self._gpu_models)
        return self._rates

    def unattributed(self) -> tuple[tuple[str, str, str, float], ...]:
        return self.accounts.unattributed()

    def work_endpoints(self) -> tuple[int, int] | None:
        return self.work.endpoints_state

    def gpu_use(self) -> tuple[tuple[str, float], ...]:
        return tuple(self.accounts.gpu_use_j.items())

    def embodied_status(self) -> EmbodiedStatus | None:
        return self.accounts.embodied_status() if self.config.embodied.enabled else None

    def ledger_up(self) -> bool | None:
        if not self.durable:
            return None
        return self.ledger is not None and self.ledger.last_error is None

    @property
    def node_operational_g(self) -> float:
        return self.accounts.node_carbon_g

    def services(self) -> list[Service]:
        owners = (self.pod_names, self.work.scraper)
        found = [s for s in (getattr(o, "service", None) for o in owners) if s is not None]
        if self.mig_activity is not None and self.mig_activity.started:
            found.append(self.mig_activity.service)
        return found

    def probe(self) -> list[Finding]:
        findings = [self._probe_cgroups()]
        if self.config.ledger.enabled:
            findings.append(probe_ledger(self.config.ledger.path))
        findings += self.work.probe()
        if self.mig_activity is not None:
            findings.append(self.mig_activity.probe())
        return findings

    def _probe_cgroups(self) -> Finding:
        config = self.config
        hierarchy = self.tracker.hierarchy
        if hierarchy is None:
            fix = "mount cgroups, or point cgroup_root at the host's (a container needs it)"
            detail = "no cgroup v1 cpuacct or v2 hierarchy"
            return Finding("jobs", "cgroups", str(config.cgroup_root), False, detail, fix)
        jobs = self.tracker.observe().jobs
        kinds = ", ".join(config.jobs.schedulers)
        detail = f"cgroup v{hierarchy.version}, {len(jobs)} job(s) now; accounting {kinds}"
        if hierarchy.elsewhere:
            others = ", ".join(path.name for path in hierarchy.elsewhere)
            detail += (
                f"; a Slurm job missing from cpuacct is looked for in {others}, and timed by "
                "its processes (docs/concepts.md, CPU time)"
            )
        return Finding("jobs", "cgroups", str(hierarchy.root), True, detail)

    def close(self, last_unix_s: float | None) -> None:
        """Commits what is left (the last partial minute too) and stops every helper."""
        self.tracker.close()
        if self.mig_activity is not None:
            self.mig_activity.close()
        if last_unix_s is not None:
            self.commit(last_unix_s, force=True)
            if self.ledger is not None and self.ledger.last_error:
                log.error(
                    "%s; what was counted since the last commit is lost", self.ledger.last_error
                )
        if self.ledger is not None:
            self.ledger.close()
        if self.pod_names is not None:
            self.pod_names.stop()
        self.work.stop()


class NoJobs:
    """Job accounting disabled in config: the node is measured, nothing is charged."""

    on = False
    ledger: Ledger | None = None
    ledger_problem: str | None = None
    tracker = None

    def charge(self, *_: object) -> tuple[JobView, ...]:
        return ()

    def unattributed(self) -> tuple[tuple[str, str, str, float], ...]:
        return ()

    def work_endpoints(self) -> None:
        return None

    def gpu_use(self) -> tuple[tuple[str, float], ...]:
        return ()

    def embodied_status(self) -> None:
        return None

    def ledger_up(self) -> None:
        return None

    node_operational_g = 0.0

    def services(self) -> list[Service]:
        return []

    def probe(self) -> list[Finding]:
        return [Finding("jobs", "-", "-", True, "job accounting disabled in config")]

    def close(self, last_unix_s: float | None) -> None:
        pass
