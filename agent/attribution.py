"""Charges one interval's energy of one domain to jobs. Pure, and it conserves energy:
sum over jobs (active + idle) + system + unattributed idle = the domain's energy, with no share
negative.

CPU-side domains (package, core, uncore, psys, dram) split as Kepler >= 0.10 does: the node's
busy fraction from /proc/stat divides active from idle energy; active energy follows each job's
cgroup CPU time, and busy time outside every job is `system`. Idle energy goes to the jobs that
reserve CPUs, in proportion to what they reserve (policy "reserved"), or stays `idle` (policy
"unattributed", and always where no allocation is known).

A GPU is charged to the jobs with processes on it: one job takes all of it, several split it by
their SM utilisation samples (equally when there are none). A GPU with no process on it is
charged to the job that holds it, as allocated idle, or stays `idle`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from wattwise.model import (
    CpuActivity,
    DomainEnergy,
    GpuShare,
    JobEnergy,
    MigInstance,
    UnattributedEnergy,
)

RESERVED = "reserved"
UNATTRIBUTED = "unattributed"
IDLE_POLICIES = (RESERVED, UNATTRIBUTED)


@dataclass(frozen=True, slots=True)
class Split:
    """Where one domain's interval energy went, in joules."""

    active_j: Mapping[str, float] = field(default_factory=dict)  # per job
    idle_j: Mapping[str, float] = field(default_factory=dict)  # per job: reserved or held idle
    system_j: float = 0.0  # busy, but no job
    unattributed_idle_j: float = 0.0

    def total_j(self) -> float:
        return (
            sum(self.active_j.values())
            + sum(self.idle_j.values())
            + self.system_j
            + self.unattributed_idle_j
        )


def split_cpu(energy_j: float, activity: CpuActivity, idle_policy: str = RESERVED) -> Split:
    energy_j = max(energy_j, 0.0)
    elapsed_s = activity.busy_s + activity.idle_s
    busy_fraction = min(max(activity.busy_s / elapsed_s, 0.0), 1.0) if elapsed_s > 0 else 0.0
    active_j = energy_j * busy_fraction
    idle_j = energy_j - active_j

    used = {job: s for job, s in activity.job_cpu_s.items() if s > 0}
    # Cgroup and /proc/stat times are sampled a moment apart; never hand out more than exists.
    denominator = max(activity.busy_s, sum(used.values()))
    # Fractions first: energy x tiny / tiny underflows, while tiny / tiny does not.
    jobs_active = {job: active_j * (s / denominator) for job, s in used.items()}
    system_j = max(active_j - sum(jobs_active.values()), 0.0)

    jobs_idle: dict[str, float] = {}
    if idle_policy == RESERVED and activity.total_cpus > 0:
        held = {job: c for job, c in activity.reserved_cpus.items() if c > 0}
        capacity = max(float(activity.total_cpus), sum(held.values()))
        jobs_idle = {job: idle_j * (c / capacity) for job, c in held.items()}
    unattributed = max(idle_j - sum(jobs_idle.values()), 0.0)
    return Split(jobs_active, jobs_idle, system_j, unattributed)


def split_gpu(energy_j: float, sm_samples: Mapping[str, float], holder: str | None = None) -> Split:
    """`sm_samples`: SM utilisation summed per job with a process on this GPU (may be 0)."""
    energy_j = max(energy_j, 0.0)
    if sm_samples:
        total = sum(max(v, 0.0) for v in sm_samples.values())
        if total > 0:
            active = {job: energy_j * (max(v, 0.0) / total) for job, v in sm_samples.items()}
        else:
            active = {job: energy_j / len(sm_samples) for job in sm_samples}
        return Split(active_j=active)
    if holder is not None:
        return Split(idle_j={holder: energy_j})  # allocated idle: held, doing nothing
    return Split(unattributed_idle_j=energy_j)


def mig_fractions(
    instances: Sequence[MigInstance],
    mig_slices: int,
    activity: Mapping[int, float] | None = None,
    floor_ratio: float = 1.0,
) -> list[float]:
    """Each MIG instance's fraction of its GPU's energy; slices in no instance are the rest.

    By slices (a GPU instance's over the GPU's, shared by its compute instances) unless DCGM
    measured every instance's activity (`activity`: GPU instance id -> busy ratio). Then
    `floor_ratio` of the energy (the GPU's idle floor over its power this interval: what it
    draws doing nothing; gpu_processes.PowerFloors) still goes by slices, and the rest by
    activity x slices (activity is a fraction of the instance's own capacity, so a busy 3g
    instance draws three times a busy 1g one). Where no instance was busy, by slices."""
    per_gi: dict[int, int] = {}
    for instance in instances:
        per_gi[instance.gpu_instance] = per_gi.get(instance.gpu_instance, 0) + 1
    by_slices = [i.slices / per_gi[i.gpu_instance] / mig_slices for i in instances]
    busy = [(activity or {}).get(i.gpu_instance) for i in instances]
    if not instances or any(b is None for b in busy):
        return by_slices
    weights = [b * s for b, s in zip(busy, by_slices, strict=True) if b is not None]
    total = sum(weights)
    if not total > 0:
        return by_slices
    floor = min(max(floor_ratio, 0.0), 1.0) if math.isfinite(floor_ratio) else 1.0
    return [
        floor * s + (1.0 - floor) * (w / total) for s, w in zip(by_slices, weights, strict=True)
    ]


def attribute_tick(
    domains: Iterable[DomainEnergy],
    cpu: CpuActivity,
    gpu_sm_samples: Mapping[int, Mapping[str, float]],
    gpu_holders: Mapping[int, str] | None = None,
    idle_policy: str = RESERVED,
    grams_per_j: float = 0.0,
    gpu_shares: Mapping[int, Sequence[GpuShare]] | None = None,
) -> tuple[list[JobEnergy], list[UnattributedEnergy]]:
    """Charges this tick's energy of every non-overlapping domain (those in the node total),
    one share per job and (domain, source, state), with its operational carbon: `grams_per_j`
    is this interval's PUE x grid intensity (operational.grams_per_joule).

    CPU-side domains of one name and source (package-0 and package-1) are summed before they
    are split, as the split is linear in energy: one split per name, not per socket. A GPU
    in `gpu_shares` (MIG) is split into its instances' parts first, each on its own; slices
    in no instance are idle."""
    cpu_j: dict[tuple[str, str], float] = {}
    shares: dict[tuple[str, str, str, str], float] = {}  # (job, domain, source, state) -> J
    unattributed: dict[tuple[str, str, str], float] = {}  # (domain, source, reason) -> J
    holders, parts_of = gpu_holders or {}, gpu_shares or {}
    for domain in domains:
        energy_j = domain.interval_energy_j
        if not domain.in_node_total or energy_j <= 0:
            continue
        name, source = domain.key.domain, domain.key.source
        if name == "gpu":
            index = int(domain.key.device)
            parts = parts_of.get(index)
            if parts is None:
                split = split_gpu(energy_j, gpu_sm_samples.get(index, {}), holders.get(index))
                _gather(split, name, source, shares, unattributed)
                continue
            whole = max(sum(part.fraction for part in parts), 1.0)  # never more than all of it
            for part in parts:
                split = split_gpu(energy_j * part.fraction / whole, part.sm_samples, part.holder)
                _gather(split, name, source, shares, unattributed)
            rest = energy_j * (1.0 - sum(part.fraction for part in parts) / whole)
            _gather(Split(unattributed_idle_j=rest), name, source, shares, unattributed)
        else:
            cpu_j[(name, source)] = cpu_j.get((name, source), 0.0) + energy_j
    for (name, source), energy_j in cpu_j.items():
        _gather(split_cpu(energy_j, cpu, idle_policy), name, source, shares, unattributed)
    charged = [
        JobEnergy(job, name, source, state, joules, joules * grams_per_j)
        for (job, name, source, state), joules in shares.items()
        if joules
    ]
    left = [
        UnattributedEnergy(name, source, reason, joules, joules * grams_per_j)
        for (name, source, reason), joules in unattributed.items()
        if joules
    ]
    return charged, left


def _gather(
    split: Split,
    name: str,
    source: str,
    shares: dict[tuple[str, str, str, str], float],
    unattributed: dict[tuple[str, str, str], float],
) -> None:
    for state, by_job in (("active", split.active_j), ("idle", split.idle_j)):
        for job, joules in by_job.items():
            key = (job, name, source, state)
            shares[key] = shares.get(key, 0.0) + joules
    for reason, joules in (("system", split.system_j), ("idle", split.unattributed_idle_j)):
        key3 = (name, source, reason)
        unattributed[key3] = unattributed.get(key3, 0.0) + joules


def finite_only(
    charged: list[JobEnergy], left: list[UnattributedEnergy]
) -> tuple[list[JobEnergy], list[UnattributedEnergy], list[str]]:
    """The shares with finite joules and grams, and a description of each one dropped. Every
    input is checked where it enters; this is the last gate before the running totals, so that
    a value no check foresaw can never poison them (NaN stays NaN forever once summed)."""
    good_charged = [c for c in charged if math.isfinite(c.energy_j + c.carbon_g)]
    good_left = [u for u in left if math.isfinite(u.energy_j + u.carbon_g)]
    dropped = [
        f"{c.job_key} {c.domain} {c.source} {c.state}: {c.energy_j} J, {c.carbon_g} g"
        for c in charged
        if not math.isfinite(c.energy_j + c.carbon_g)
    ] + [
        f"unattributed {u.domain} {u.source} {u.reason}: {u.energy_j} J, {u.carbon_g} g"
        for u in left
        if not math.isfinite(u.energy_j + u.carbon_g)
    ]
    return good_charged, good_left, dropped
