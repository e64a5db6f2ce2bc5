"""Prometheus exposition of the latest Snapshot, through a custom collector.

A scrape renders what the last tick stored and touches no hardware. Every family is built anew in
each collect() call; there are no global metric objects.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from wattwise import __version__
from wattwise.model import (
    ESTIMATE,
    NVML,
    RAPL,
    CarbonStatus,
    EmbodiedStatus,
    GpuStatus,
    Snapshot,
)

# user and team on every job series, not only on wattwise_job_info: a label-enforcing proxy
# (prom-label-proxy -label user) can then show a user their own jobs (docs/fleet.md). Both are
# fixed for a job, so they add no series.
JOB_LABELS = ["job_id", "job_name", "scheduler", "user", "team"]

DOMAIN_LABELS = ["domain", "device", "source"]
GPU_LABELS = ["gpu", "uuid", "model"]

# (metric suffix, GpuStatus field, help)
GPU_GAUGES = (
    ("power_watts", "power_w", "GPU power draw as NVML reports it (see the source caveat)"),
    ("power_limit_watts", "power_limit_w", "GPU enforced power limit"),
    ("utilization_ratio", "utilization_ratio", "Fraction of the last sample period a kernel ran"),
    ("memory_used_bytes", "memory_used_bytes", "GPU memory in use"),
    ("memory_total_bytes", "memory_total_bytes", "GPU memory installed"),
    ("temperature_celsius", "temperature_celsius", "GPU core temperature"),
    ("sm_clock_hertz", "sm_clock_hz", "GPU streaming-multiprocessor clock"),
)


class SnapshotCollector:
    """Renders whatever `latest()` returns; None (before the first tick) renders build info only."""

    def __init__(self, latest: Callable[[], Snapshot | None]) -> None:
        self._latest = latest

    def collect(self) -> Iterator[Metric]:
        build = GaugeMetricFamily(
            "wattwise_build_info", "wattwise build, always 1", labels=["version", "python_version"]
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        snapshot = self._latest()
        if snapshot is not None:
            yield from (family for family in render(snapshot) if family.samples)


def render(snapshot: Snapshot) -> Iterator[Metric]:
    every = f"sampled every {snapshot.interval_s:g} s"
    yield from _domain_families(snapshot, every)
    yield from _gpu_families(snapshot.gpus, every)
    yield from _job_families(snapshot, every)
    yield from _node_use_families(snapshot, every)
    yield from _carbon_families(snapshot, every)
    yield from _platform_families(snapshot)
    yield from _work_endpoint_families(snapshot)
    yield from _tick_families(snapshot)


def _domain_families(snapshot: Snapshot, every: str) -> Iterator[Metric]:
    energy = CounterMetricFamily(
        "wattwise_node_energy",
        f"Energy per domain since the first reading, from wrap-corrected counters; {every}",
        labels=DOMAIN_LABELS,
        unit="joules",
    )
    power = GaugeMetricFamily(
        "wattwise_node_power_watts",
        f"Mean power per domain over the last interval; {every}",
        labels=DOMAIN_LABELS,
    )
    up = GaugeMetricFamily(
        "wattwise_node_energy_up",
        f"1 if the domain's counter was read in the last tick, 0 if not; {every}",
        labels=DOMAIN_LABELS,
    )
    wraps = CounterMetricFamily(
        "wattwise_energy_wraps",
        "Counter wraps corrected (RAPL max_energy_range_uj)",
        labels=DOMAIN_LABELS,
    )
    resets = CounterMetricFamily(
        "wattwise_energy_resets",
        "Counter resets seen (NVML counter restarted by a driver reload)",
        labels=DOMAIN_LABELS,
    )
    for d in snapshot.domains:
        labels = [d.key.domain, d.key.device, d.key.source]
        up.add_metric(labels, 1 if d.up else 0)
        if d.energy_j or d.up:
            energy.add_metric(labels, d.energy_j)
            if d.key.source == RAPL:
                wraps.add_metric(labels, d.wraps)
            if d.key.source == NVML:
                resets.add_metric(labels, d.resets)
        if d.power_w is not None:
            power.add_metric(labels, d.power_w)
    yield from (energy, power, up, wraps, resets)
    yield from _node_total_families(snapshot, every)


def _node_total_families(snapshot: Snapshot, every: str) -> Iterator[Metric]:
    total_energy = CounterMetricFamily(
        "wattwise_node_total_energy",
        "Node energy per source, summing only domains that do not overlap "
        f"(package and dram, or psys; every GPU); {every}",
        labels=["source"],
        unit="joules",
    )
    total_power = GaugeMetricFamily(
        "wattwise_node_total_power_watts",
        f"Node power per source over the last interval, non-overlapping domains; {every}",
        labels=["source"],
    )
    covers = GaugeMetricFamily(
        "wattwise_node_total_covers_info",
        "Always 1: the domains a source's node total sums (rapl: package+dram, or package alone "
        "where AMD's RAPL has no dram; hwmon: a Grace socket's package)",
        labels=["source", "domains"],
    )
    for total in snapshot.node_totals:
        total_energy.add_metric([total.source], total.energy_j)
        if total.power_w is not None:
            total_power.add_metric([total.source], total.power_w)
        summed = {
            d.key.domain
            for d in snapshot.domains
            if d.in_node_total and d.key.source == total.source
        }
        covers.add_metric([total.source, "+".join(sorted(summed))], 1)
    yield from (total_energy, total_power, covers)


def _tick_families(snapshot: Snapshot) -> Iterator[Metric]:
    source_up = GaugeMetricFamily(
        "wattwise_source_up", "1 if the source delivered data in the last tick", labels=["source"]
    )
    for status in snapshot.sources:
        source_up.add_metric([status.source], 1 if status.up else 0)
    yield source_up
    yield from _service_families(snapshot)

    yield GaugeMetricFamily(
        "wattwise_tick_duration_seconds",
        "Wall time of the last tick (read, account, snapshot)",
        value=snapshot.tick_duration_s,
    )
    yield GaugeMetricFamily(
        "wattwise_last_tick_timestamp_seconds",
        "Unix time of the last completed tick",
        value=snapshot.taken_at_unix_s,
    )
    yield GaugeMetricFamily(
        "wattwise_sampling_interval_seconds",
        "Configured interval between ticks",
        value=snapshot.interval_s,
    )


def _gpu_families(gpus: tuple[GpuStatus, ...], every: str) -> Iterator[Metric]:
    gpu_up = GaugeMetricFamily(
        "wattwise_gpu_up",
        f"1 if NVML answered for this GPU in the last tick; {every}",
        labels=GPU_LABELS,
    )
    families = [
        (field, GaugeMetricFamily(f"wattwise_gpu_{suffix}", f"{text}; {every}", labels=GPU_LABELS))
        for suffix, field, text in GPU_GAUGES
    ]
    for gpu in gpus:
        labels = [str(gpu.index), gpu.uuid, gpu.model]
        gpu_up.add_metric(labels, 1 if gpu.up else 0)
        for field, family in families:
            value = getattr(gpu, field)
            if value is not None:
                family.add_metric(labels, value)
    yield gpu_up
    for _, family in families:
        yield family
    yield from _mig_families(gpus)


def _mig_families(gpus: tuple[GpuStatus, ...]) -> Iterator[Metric]:
    """At most 7 instances per GPU: bounded by the hardware."""
    if not any(gpu.mig_slices for gpu in gpus):
        return
    slices = GaugeMetricFamily(
        "wattwise_gpu_mig_slices",
        "The GPU's MIG slices (7 on A100 and H100); its energy is split among its instances by "
        "their slices, or by DCGM's activity where dcgm-exporter is read (NVML measures the "
        "board only)",
        labels=["gpu"],
    )
    instance = GaugeMetricFamily(
        "wattwise_gpu_mig_instance_slices",
        "Slices a MIG instance holds (gpu_instance: NVML's GPU instance id)",
        labels=["gpu", "gpu_instance", "compute_instance", "profile"],
    )
    processes = GaugeMetricFamily(
        "wattwise_gpu_mig_instance_processes",
        "Compute processes on a MIG instance in the last tick",
        labels=["gpu", "gpu_instance", "compute_instance", "profile"],
    )
    for gpu in gpus:
        if gpu.mig_slices:
            slices.add_metric([str(gpu.index)], gpu.mig_slices)
        for mig in gpu.mig:
            labels = [str(gpu.index), str(mig.gpu_instance), str(mig.compute_instance), mig.profile]
            instance.add_metric(labels, mig.slices)
            processes.add_metric(labels, len(mig.processes))
    yield from (slices, instance, processes)


def _job_families(snapshot: Snapshot, every: str) -> Iterator[Metric]:
    energy = CounterMetricFamily(
        "wattwise_job_energy",
        "Energy charged to a job per domain; state is active (its CPU time or GPU work) or idle "
        f"(reserved CPUs, a held GPU doing nothing); continues across agent restarts; {every}",
        labels=[*JOB_LABELS, "domain", "source", "state"],
        unit="joules",
    )
    power = GaugeMetricFamily(
        "wattwise_job_power_watts",
        f"Power charged to a running job over the last interval, all domains; {every}",
        labels=JOB_LABELS,
    )
    allocated_idle = CounterMetricFamily(
        "wattwise_job_gpu_allocated_idle",
        f"GPU energy charged to a job while it held the GPU and ran nothing on it; {every}",
        labels=JOB_LABELS,
        unit="joules",
    )
    running = GaugeMetricFamily(
        "wattwise_jobs", "Jobs running now, per scheduler", labels=["scheduler"]
    )
    runtime = CounterMetricFamily(
        "wattwise_job_runtime",
        "Seconds from the job's first sight on this node to its last; continues across agent "
        f"restarts; the R of SCI per job-hour; {every}",
        labels=JOB_LABELS,
        unit="seconds",
    )
    work = CounterMetricFamily(
        "wattwise_job_work_units",
        "Work a job reported (tokens, samples, ...) through the work API; divide its rate by "
        f"the job's power for units per joule; {every}",
        labels=[*JOB_LABELS, "unit"],
    )
    info = GaugeMetricFamily(
        "wattwise_job_info",
        "Always 1: who runs a job (user) and whom its carbon is reported under (team: the Slurm "
        "account or the pod's namespace); join on job_id and scheduler",
        labels=JOB_LABELS,
    )
    counts: dict[str, int] = {}
    for job in snapshot.jobs:
        labels = [job.job_id, job.name, job.scheduler, job.user, job.team]
        info.add_metric(labels, 1)
        runtime.add_metric(labels, job.runtime_s)
        for domain, source, state, joules in job.totals.energy_j:
            energy.add_metric([*labels, domain, source, state], joules)
        if job.power_w is not None:
            power.add_metric(labels, job.power_w)
        if any(domain == "gpu" for domain, *_ in job.totals.energy_j):
            allocated_idle.add_metric(labels, job.totals.gpu_allocated_idle_j)
        for unit, units in job.totals.work_units:
            work.add_metric([*labels, unit], units)
        if job.ended_unix_s is None:
            counts[job.scheduler] = counts.get(job.scheduler, 0) + 1
    for scheduler, count in sorted(counts.items()):
        running.add_metric([scheduler], count)
    yield from (energy, power, allocated_idle, running, runtime, work, info)


def _node_use_families(snapshot: Snapshot, every: str) -> Iterator[Metric]:
    unattributed = CounterMetricFamily(
        "wattwise_unattributed_energy",
        "Energy no job caused: reason system (busy outside every job) or idle; jobs + "
        f"unattributed = the node total; {every}",
        labels=["domain", "source", "reason"],
        unit="joules",
    )
    for domain, source, reason, joules in snapshot.unattributed_j:
        unattributed.add_metric([domain, source, reason], joules)
    gpu = CounterMetricFamily(
        "wattwise_node_gpu_energy_by_use",
        "GPU energy by what it did: active (jobs' work), allocated_idle (held by a job, doing "
        f"nothing) or unallocated_idle; since the agent started; {every}",
        labels=["state"],
        unit="joules",
    )
    for state, joules in snapshot.gpu_use_j:
        gpu.add_metric([state], joules)
    yield from (unattributed, gpu)
    if snapshot.ledger_up is not None:
        yield GaugeMetricFamily(
            "wattwise_ledger_up",
            "1 if the last tick reached the ledger file, 0 if it is kept in memory (see the log)",
            value=1 if snapshot.ledger_up else 0,
        )


def _carbon_families(snapshot: Snapshot, every: str) -> Iterator[Metric]:
    carbon, embodied = snapshot.carbon, snapshot.embodied
    if carbon is None and embodied is None:
        return
    jobs = CounterMetricFamily(
        "wattwise_job_carbon",
        "Carbon charged to a job: operational = each interval's energy x PUE x grid intensity "
        "of that interval, summed; embodied = its share of the hardware's manufacturing carbon "
        f"(domain server or gpu, source embodied); {every}",
        labels=[*JOB_LABELS, "domain", "source", "scope"],
        unit="grams",
    )
    for job in snapshot.jobs:
        labels = [job.job_id, job.name, job.scheduler, job.user, job.team]
        if carbon is not None:
            for domain, source, grams in job.totals.carbon_g:
                jobs.add_metric([*labels, domain, source, "operational"], grams)
        if embodied is not None:
            for component, grams in job.totals.embodied_g:
                jobs.add_metric([*labels, component, "embodied", "embodied"], grams)
    yield jobs
    node = CounterMetricFamily(
        "wattwise_node_carbon",
        "Node carbon by scope: operational (jobs + unattributed), embodied (charged to jobs + "
        f"unreserved); {every}",
        labels=["scope"],
        unit="grams",
    )
    if carbon is not None:
        node.add_metric(["operational"], carbon.node_operational_g)
    if embodied is not None:
        unreserved_g = sum(g for _, g in embodied.unreserved_g)
        node.add_metric(["embodied"], embodied.reserved_g + unreserved_g)
    yield node
    if embodied is not None:
        yield from _embodied_families(embodied, every)
    if carbon is not None:
        yield from _intensity_families(carbon)


def _intensity_families(carbon: CarbonStatus) -> Iterator[Metric]:
    intensity = GaugeMetricFamily(
        "wattwise_grid_carbon_intensity_grams_per_kwh",
        "Grid carbon intensity used for the last interval, gCO2e per kWh; signal is average or "
        "marginal, basis lifecycle or direct",
        labels=["zone", "provider", "signal", "basis"],
    )
    intensity.add_metric(
        [carbon.zone, carbon.provider, carbon.signal, carbon.basis], carbon.grams_per_kwh
    )
    yield intensity
    age = GaugeMetricFamily(
        "wattwise_grid_carbon_intensity_age_seconds",
        "Age of the intensity in use; it grows while its provider fails",
        labels=["provider"],
    )
    age.add_metric([carbon.provider], carbon.age_s)
    yield age
    up = GaugeMetricFamily(
        "wattwise_carbon_provider_up",
        "1 if the intensity provider's last attempt succeeded",
        labels=["provider"],
    )
    for name, ok in carbon.providers_up:
        up.add_metric([name], 1 if ok else 0)
    yield up
    pue = GaugeMetricFamily(
        "wattwise_pue_ratio",
        "PUE applied to operational carbon: source facility (measured by wattwise facility) or "
        "config (carbon.pue_ratio, also the fallback)",
        labels=["source"],
    )
    pue.add_metric([carbon.pue_source], carbon.pue_ratio)
    yield pue


def _embodied_families(embodied: EmbodiedStatus, every: str) -> Iterator[Metric]:
    unreserved = CounterMetricFamily(
        "wattwise_node_embodied_unreserved_carbon",
        f"Embodied carbon of hardware no job held (the cost of idle hardware); {every}",
        labels=["component"],
        unit="grams",
    )
    for component, grams in embodied.unreserved_g:
        unreserved.add_metric([component], grams)
    yield unreserved
    rate = GaugeMetricFamily(
        "wattwise_node_embodied_grams_per_second",
        "Embodied carbon rate over the last interval: reserved (charged to jobs) or unreserved",
        labels=["state"],
    )
    rate.add_metric(["reserved"], embodied.reserved_g_per_s)
    rate.add_metric(["unreserved"], embodied.unreserved_g_per_s)
    yield rate


def _work_endpoint_families(snapshot: Snapshot) -> Iterator[Metric]:
    if snapshot.work_endpoints is None:
        return
    endpoints = GaugeMetricFamily(
        "wattwise_work_endpoints",
        "Jobs' own work-counter endpoints at the last read: read (up) or failed (down)",
        labels=["state"],
    )
    endpoints.add_metric(["up"], snapshot.work_endpoints[0])
    endpoints.add_metric(["down"], snapshot.work_endpoints[1])
    yield endpoints


def _platform_families(snapshot: Snapshot) -> Iterator[Metric]:
    if snapshot.platform_w is None:
        return
    yield GaugeMetricFamily(
        "wattwise_node_platform_watts",
        "Server input (wall) power from the BMC, Redfish or IPMI DCMI",
        value=snapshot.platform_w,
    )
    if snapshot.platform_age_s is not None:
        yield GaugeMetricFamily(
            "wattwise_node_platform_age_seconds",
            "Age of the BMC's last reading",
            value=snapshot.platform_age_s,
        )
    # Components measured by hardware counters only: an estimate would make the ratio meaningless.
    measured_w = sum(
        t.power_w for t in snapshot.node_totals if t.source != ESTIMATE and t.power_w is not None
    )
    if measured_w > 0:
        yield GaugeMetricFamily(
            "wattwise_node_platform_to_components_ratio",
            "Wall power / the sum of measured components (RAPL + GPUs); above 1 by what they "
            "cannot see: fans, PSU losses, NICs, drives",
            value=snapshot.platform_w / measured_w,
        )


def _service_families(snapshot: Snapshot) -> Iterator[Metric]:
    up = GaugeMetricFamily(
        "wattwise_service_up",
        "1 if the background service's last step succeeded, 0 while it fails and is retried "
        "with backoff (carbon-intensity, facility-pue, platform-power, kubelet-pods, "
        "work-scrape, nvml-power-poll)",
        labels=["service"],
    )
    failures = CounterMetricFamily(
        "wattwise_service_failures",
        "Steps of a background service that raised; each is logged and retried with backoff",
        labels=["service"],
    )
    for service in snapshot.services:
        up.add_metric([service.name], 1 if service.up else 0)
        failures.add_metric([service.name], service.failures)
    yield from (up, failures)
