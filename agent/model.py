"""Frozen records passed between stages. Every quantity carries its SI unit in its name."""

from __future__ import annotations

import errno
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

# Energy sources, as they appear in the `source` label.
RAPL = "rapl"
NVML = "nvml"
NVML_POWER = "nvml_power"
ESTIMATE = "estimate"
HWMON = "hwmon"
AMDSMI = "amdsmi"
J_PER_KWH = 3.6e6  # joules in a kilowatt-hour


# --- counters and GPUs ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CounterKey:
    """Identity of one cumulative energy counter."""

    domain: str  # package, core, uncore, dram, psys, gpu
    device: str  # socket index, GPU index, or "all" for a node-wide estimate
    source: str  # rapl, nvml, nvml_power, estimate


@dataclass(frozen=True, slots=True)
class CounterReading:
    """One raw read of a hardware (or synthetic) energy counter."""

    key: CounterKey
    raw_uj: int | None  # None: could not be read this tick, see `error`
    wrap_uj: int | None  # counter modulus (RAPL max_energy_range_uj); None: a decrease is a reset
    monotonic_s: float  # time.monotonic() of the read
    in_node_total: bool  # False for subzones already inside their parent (core, uncore)
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DomainEnergy:
    """A counter after accounting: monotonic joules since the first reading."""

    key: CounterKey
    energy_j: float  # hardware reading at first sample + every corrected delta since
    power_w: float | None  # mean over the last interval; None before two good readings
    up: bool
    error: str | None
    in_node_total: bool
    wraps: int
    resets: int
    interval_energy_j: float = 0.0  # added by this tick's reading (0 when first or down)
    read: bool = True  # False: not one good reading yet, so energy_j is no counter value


@dataclass(frozen=True, slots=True)
class GpuStatus:
    index: int
    uuid: str
    model: str
    up: bool
    error: str | None
    energy_source: str  # nvml (hardware counter) or nvml_power (polled and integrated)
    power_w: float | None = None
    power_limit_w: float | None = None
    utilization_ratio: float | None = None
    memory_used_bytes: float | None = None
    memory_total_bytes: float | None = None
    temperature_celsius: float | None = None
    sm_clock_hz: float | None = None
    # Compute processes on the GPU and the SM utilisation they were sampled at since the last
    # tick (summed per pid; 0 where NVML kept no sample). Under MIG: every instance's.
    processes: tuple[GpuProcess, ...] = ()
    mig_slices: int = 0  # the GPU's MIG slices (7 on A100 and H100, 4 on A30); 0: MIG off
    mig: tuple[MigInstance, ...] = ()


@dataclass(frozen=True, slots=True)
class MigInstance:
    """One MIG device (a GPU instance and its compute instance) of a GPU in MIG mode."""

    gpu_instance: int
    compute_instance: int
    uuid: str  # MIG-<uuid>: what CUDA_VISIBLE_DEVICES and the device plugin name
    profile: str  # 1g.10gb, 3g.40gb, ...
    slices: int  # of the GPU's mig_slices
    processes: tuple[GpuProcess, ...] = ()  # no SM samples: NVML has none under MIG


@dataclass(frozen=True, slots=True)
class GpuProcess:
    pid: int
    sm_samples: float


# --- jobs -----------------------------------------------------------------------------------

SLURM, KUBERNETES, DOCKER, PODMAN, SYSTEMD, EXEC = (
    "slurm",
    "kubernetes",
    "docker",
    "podman",
    "systemd",
    "exec",
)
# The ledger's job kinds, by scheduler.
KIND = {
    SLURM: "slurm",
    KUBERNETES: "pod",
    DOCKER: "container",
    PODMAN: "container",
    SYSTEMD: "service",
    EXEC: "exec",
}


@dataclass(frozen=True, slots=True)
class JobRef:
    """A job as its cgroup path names it."""

    scheduler: str  # slurm, kubernetes, docker, podman, systemd, exec
    job_id: str  # Slurm job id or SLUID, pod UID, short container id, unit name, exec id
    cgroup: str  # the job's top cgroup, relative to the hierarchy root
    container: str = ""  # container id inside a pod, when the path names one
    uid: int | None = None  # Slurm v1 paths carry the job's user id

    @property
    def kind(self) -> str:
        return KIND[self.scheduler]


@dataclass(frozen=True, slots=True)
class JobSeen:
    """A job as the ledger's jobs table records it."""

    job_key: str
    scheduler: str
    kind: str
    job_id: str
    name: str = ""
    user: str = ""


@dataclass(frozen=True, slots=True)
class CpuActivity:
    """What the node's CPUs did during one interval."""

    busy_s: float  # node CPU time not idle (summed over CPUs), from /proc/stat
    idle_s: float  # node idle CPU time (idle + iowait)
    job_cpu_s: Mapping[str, float]  # each job's cgroup CPU time in the interval
    reserved_cpus: Mapping[str, float]  # CPUs each job holds, where the scheduler says
    total_cpus: int


# A report's energy and carbon columns, measured and estimated apart (ledger export, the fleet
# report, their text): energy_j = measured_j + estimated_j.
BASIS_FIGURES = (
    "energy_j",
    "measured_j",
    "estimated_j",
    "operational_g",
    "estimated_operational_g",
    "embodied_g",
)


class GpuShare(NamedTuple):
    """A part of one GPU's energy, split on its own: a MIG instance's slices."""

    fraction: float  # of the GPU's energy: the instance's slices over the GPU's
    sm_samples: Mapping[str, float]  # job key -> SM samples (0 under MIG: an equal split)
    holder: str | None  # the job the scheduler allocated the instance to, if one


class JobEnergy(NamedTuple):
    """Energy charged to one job in one interval. A NamedTuple, not a frozen dataclass: several
    are made per job per tick, and a tuple is made four times faster."""

    job_key: str  # "<scheduler>:<job_id>"
    domain: str
    source: str
    state: str  # active, or idle (reserved CPUs, or a held GPU doing nothing)
    energy_j: float
    carbon_g: float = 0.0  # operational: energy x PUE x grid intensity of this interval


class UnattributedEnergy(NamedTuple):
    """Energy of one interval that no job caused."""

    domain: str
    source: str
    reason: str  # system (busy, no job) or idle
    energy_j: float
    carbon_g: float = 0.0


@dataclass(frozen=True, slots=True)
class EmbodiedSplit:
    """One interval's embodied grams: each job's by component, and what no job held."""

    jobs_g: Mapping[str, Mapping[str, float]]  # job key -> component -> grams
    unreserved_g: Mapping[str, float]  # component -> grams no job held


# Every total the agent keeps is a series (measure, a, b, c) holding [amount, grams]:
# ("energy", domain, source, state) per job; ("unattributed", domain, source, reason),
# ("unreserved", component, "", "") and ("node", "operational" or "embodied", "", "") for the
# node; and per job, one series per label of each JOB_FIGURES measure, (measure, label, "", "").
SeriesKey = tuple[str, str, str, str]
Sums = list[float]  # [amount, grams]

# Per-job figures kept as (label, value) pairs: ledger measure -> (the JobTotals field that
# shows it, which of its series' sums holds the value: 0 the amount, 1 the grams).
JOB_FIGURES: dict[str, tuple[str, int]] = {
    "embodied": ("embodied_g", 1),  # label: component (server, gpu)
    "work": ("work_units", 0),  # label: unit (tokens, samples, ...)
}


class JobFigure(NamedTuple):
    """An increment of one per-job figure of JOB_FIGURES in one interval."""

    job_key: str
    measure: str  # a key of JOB_FIGURES
    label: str
    value: float


@dataclass(frozen=True, slots=True)
class JobTotals:
    """One job's running totals: what the ledger holds, what /metrics and reports show. A new
    per-job figure is a field here, its measure in JOB_FIGURES, the JobFigure the tick hands in,
    and its family in the exporter; the running totals and the ledger keep it unchanged."""

    energy_j: tuple[tuple[str, str, str, float], ...] = ()  # (domain, source, state, joules)
    carbon_g: tuple[tuple[str, str, float], ...] = ()  # (domain, source, operational grams)
    gpu_allocated_idle_j: float = 0.0  # GPU energy while held and doing nothing
    embodied_g: tuple[tuple[str, float], ...] = ()  # (component, embodied grams)
    work_units: tuple[tuple[str, float], ...] = ()  # (unit, units the job reported)

    @classmethod
    def of(cls, series: Mapping[SeriesKey, Sums]) -> JobTotals:
        """A job's series, as the ledger and the running totals hold them. Operational grams
        are summed over states, always in the same order (the exported value is reproducible)."""
        energy: list[tuple[str, str, str, float]] = []
        carbon: dict[tuple[str, str], float] = {}
        figures: dict[str, list[tuple[str, float]]] = {f: [] for f, _ in JOB_FIGURES.values()}
        allocated_idle = 0.0
        for (measure, a, b, c), sums in sorted(series.items()):
            if measure == "energy":
                energy.append((a, b, c, sums[0]))
                carbon[(a, b)] = carbon.get((a, b), 0.0) + sums[1]
                if a == "gpu" and c == "idle":
                    allocated_idle += sums[0]
            elif measure in JOB_FIGURES:
                name, column = JOB_FIGURES[measure]
                figures[name].append((a, sums[column]))
        return cls(
            tuple(energy),
            tuple((d, s, g) for (d, s), g in sorted(carbon.items())),
            allocated_idle,
            **{name: tuple(pairs) for name, pairs in figures.items()},
        )


@dataclass(frozen=True, slots=True)
class JobView:
    """One job as /metrics shows it: running totals that continue across agent restarts."""

    job_key: str
    scheduler: str
    job_id: str
    name: str
    power_w: float | None  # all domains, over the last interval
    ended_unix_s: float | None
    totals: JobTotals
    user: str = ""
    team: str = ""  # Slurm account or Kubernetes namespace
    runtime_s: float = 0.0  # from first sight on this node (kept across restarts) to now or end


@dataclass
class JobSummary:
    """One job as the ledger recorded it: `wattwise jobs` and `job show`."""

    job_key: str
    scheduler: str
    kind: str
    job_id: str
    name: str
    user: str
    first_seen_unix_s: float
    last_seen_unix_s: float
    ended_unix_s: float | None
    energy_j: dict[str, float] = field(default_factory=dict)  # domain -> joules
    active_j: float = 0.0
    idle_j: float = 0.0
    estimated_j: float = 0.0  # of the energy, what the agent's CPU estimate gave (source estimate)

    @property
    def duration_s(self) -> float:
        return max(self.last_seen_unix_s - self.first_seen_unix_s, 0.0)

    @property
    def mean_power_w(self) -> float | None:
        return (self.active_j + self.idle_j) / self.duration_s if self.duration_s > 0 else None


# --- sources, carbon, the facility, the snapshot -----------------------------------------------


@dataclass(frozen=True, slots=True)
class SourceStatus:
    source: str
    up: bool
    detail: str


@dataclass(frozen=True, slots=True)
class Finding:
    """One line of `wattwise probe`: what was looked for, what was found, how to fix it."""

    source: str  # rapl, nvml, estimate
    item: str  # zone name, GPU index, ...
    location: str  # sysfs path, GPU UUID, ...
    ok: bool
    detail: str
    fix: str = ""

    @classmethod
    def uncheckable(cls, source: str, item: str, location: str, exc: OSError) -> Finding:
        """A path probe could not look at: a directory on the way this user may not search,
        or worse. Only a refusal is blamed on the user probe runs as."""
        denied = exc.errno in (errno.EACCES, errno.EPERM)
        fix = "run probe as the agent's user (or root)" if denied else "fix the path"
        who = " by this user" if denied else ""
        return cls(
            source, item, location, False, f"cannot be checked{who}: {exc.strerror or exc}", fix
        )


@dataclass(frozen=True, slots=True)
class SourceReadout:
    """What one source returns from one tick."""

    counters: tuple[CounterReading, ...] = ()
    gpus: tuple[GpuStatus, ...] = ()
    status: tuple[SourceStatus, ...] = ()


@dataclass(frozen=True, slots=True)
class NodeTotal:
    """Non-overlapping sum of a source's domains (core and uncore are inside package)."""

    source: str
    energy_j: float
    power_w: float | None


@dataclass(frozen=True, slots=True)
class CarbonStatus:
    """The intensity and PUE the last tick used, and the node's operational carbon so far."""

    grams_per_kwh: float
    zone: str
    provider: str
    signal: str
    basis: str
    age_s: float
    pue_ratio: float
    node_operational_g: float
    providers_up: tuple[tuple[str, bool], ...]
    pue_source: str = "config"  # config, or facility (measured by `wattwise facility`)


@dataclass(frozen=True, slots=True)
class EmbodiedStatus:
    """The node's embodied carbon so far, and the rate the last interval charged."""

    reserved_g: float  # charged to jobs
    unreserved_g: tuple[tuple[str, float], ...]  # (component, grams no job held)
    reserved_g_per_s: float
    unreserved_g_per_s: float  # the cost of idle hardware


@dataclass(frozen=True, slots=True)
class MeterReading:
    """One read of a facility or BMC meter."""

    at_unix_s: float
    power_w: float | None = None
    energy_j: float | None = None  # a cumulative counter
    # Per-series counters (a PromQL vector), so a reset of one series is seen as such.
    energy_series_j: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PueWindow:
    """PUE over one window, or why it is not valid."""

    window_s: float
    span_s: float  # how much of the window has data
    facility_j: float
    it_j: float
    ratio: float | None  # None when not valid
    problem: str | None  # why not valid


@dataclass(frozen=True, slots=True)
class MeterState:
    """A facility meter as its last read left it."""

    name: str  # facility or it
    up: bool  # the last read succeeded
    error: str | None
    age_s: float | None  # since the last good reading; None before the first
    stale: bool


@dataclass(frozen=True, slots=True)
class FacilitySnapshot:
    """Everything one facility tick learned; rendered by exporters/facility.py."""

    facility_j: float
    it_j: float
    facility_w: float | None
    it_w: float | None
    windows: tuple[tuple[str, PueWindow], ...]
    meters: tuple[MeterState, ...]
    it_measured_at: str
    pue_category: str  # ISO/IEC 30134-2: PUE1, PUE2, PUE3 or none


@dataclass(frozen=True, slots=True)
class ServiceState:
    """A background service (carbon intensity, the facility's PUE, ...) as its last step left it."""

    name: str
    up: bool  # the last step returned normally
    failures: int  # steps that raised, since the agent started
    error: str | None


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one tick learned; the exporter renders the latest one and nothing else."""

    taken_at_unix_s: float
    interval_s: float
    tick_duration_s: float
    domains: tuple[DomainEnergy, ...]
    gpus: tuple[GpuStatus, ...]
    sources: tuple[SourceStatus, ...]
    jobs: tuple[JobView, ...] = ()
    unattributed_j: tuple[tuple[str, str, str, float], ...] = ()  # (domain, source, reason, J)
    ledger_up: bool | None = None  # None: no ledger configured
    carbon: CarbonStatus | None = None
    embodied: EmbodiedStatus | None = None
    platform_w: float | None = None  # wall input power from the BMC
    platform_age_s: float | None = None
    gpu_use_j: tuple[tuple[str, float], ...] = ()  # (active|allocated_idle|unallocated_idle, J)
    work_endpoints: tuple[int, int] | None = None  # jobs' work endpoints (read, failed); None: off
    services: tuple[ServiceState, ...] = ()

    @property
    def node_totals(self) -> tuple[NodeTotal, ...]:
        totals: dict[str, tuple[float, float | None]] = {}
        # A source with a zone never read is left out: its sum would be lower than a restarted
        # agent's last one (a counter reset to Prometheus), while an absent series is a gap.
        unread = {d.key.source for d in self.domains if d.in_node_total and not d.read}
        for d in self.domains:
            if not d.in_node_total or d.key.source in unread:
                continue
            energy, power = totals.get(d.key.source, (0.0, None))
            if d.power_w is not None:
                power = (power or 0.0) + d.power_w
            totals[d.key.source] = (energy + d.energy_j, power)
        return tuple(NodeTotal(s, e, p) for s, (e, p) in sorted(totals.items()))
