"""Embodied carbon, the SCI M term, charged per interval. Pure, and it conserves grams.

SCI (ISO/IEC 21031): M = TE x (time reserved / expected lifespan) x (resources reserved / total
resources). Each component's embodied grams are spread evenly over its lifespan, which gives a
rate in g/s; every interval, that rate x the interval is split among the jobs by what they held:

- a GPU goes to the job that holds it (the scheduler's allocation), else to the jobs with
  processes on it, equally; a GPU nobody holds or uses is unreserved;
- the server (chassis, CPUs, memory, board) goes by the share of the node's resources a job
  held: its CPU share (CPUs the scheduler allocated, else the CPU time it used), averaged with its
  GPU share on a GPU node, since such a node is bought to host its GPUs.

Whatever no job held is `unreserved`: the cost of idle hardware, exported for the node.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from wattwise.model import CpuActivity, EmbodiedSplit

if TYPE_CHECKING:
    from wattwise.config import EmbodiedConfig

SERVER, GPU = "server", "gpu"


@dataclass(frozen=True, slots=True)
class EmbodiedRates:
    """Embodied grams per second of lifespan, per component of this node."""

    server_g_per_s: float
    gpu_g_per_s: Mapping[int, float] = field(default_factory=dict)  # GPU index -> g/s

    @property
    def total_g_per_s(self) -> float:
        return self.server_g_per_s + sum(self.gpu_g_per_s.values())


def split_embodied(
    elapsed_s: float,
    rates: EmbodiedRates,
    total_cpus: int,
    cpus_held: Mapping[str, float],
    gpus_held: Mapping[int, Mapping[str, float]],
) -> EmbodiedSplit:
    """`cpus_held`: CPUs per job this interval. `gpus_held`: GPU index -> job -> its weight on
    that GPU (normalised here, so 1 for a holder, equal weights for sharers)."""
    elapsed_s = max(elapsed_s, 0.0)
    jobs: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    unreserved: dict[str, float] = {SERVER: 0.0, GPU: 0.0}

    gpu_share: dict[str, float] = defaultdict(float)  # job -> GPUs held (fractional)
    for index, rate in rates.gpu_g_per_s.items():
        grams = rate * elapsed_s
        weights = {job: w for job, w in gpus_held.get(index, {}).items() if w > 0}
        total = sum(weights.values())
        if total <= 0:
            unreserved[GPU] += grams
            continue
        for job, weight in weights.items():
            jobs[job][GPU] += grams * (weight / total)
            gpu_share[job] += weight / total

    held = {job: c for job, c in cpus_held.items() if c > 0}
    # Oversubscribed or sampled a moment apart: never hand out more than the node has.
    cpu_capacity = max(float(max(total_cpus, 1)), sum(held.values()))
    gpu_count = len(rates.gpu_g_per_s)
    server_g = rates.server_g_per_s * elapsed_s
    charged = 0.0
    for job in held.keys() | gpu_share.keys():
        share = held.get(job, 0.0) / cpu_capacity
        if gpu_count:
            share = (share + gpu_share.get(job, 0.0) / gpu_count) / 2
        if share > 0:
            jobs[job][SERVER] += server_g * share
            charged += server_g * share
    unreserved[SERVER] = max(server_g - charged, 0.0)
    return EmbodiedSplit({job: dict(parts) for job, parts in jobs.items()}, unreserved)


def gpu_embodied_g(model: str, by_model: Mapping[str, float], default_g: float) -> float:
    """The configured figure whose key appears in the NVML model name (longest key wins, so
    'H100 NVL' beats 'H100'), else the default."""
    matches = [key for key in by_model if key.lower() in model.lower()]
    return by_model[max(matches, key=len)] if matches else default_g


def node_rates(config: EmbodiedConfig, gpu_models: Mapping[int, str]) -> EmbodiedRates:
    """The node's rates: each component's embodied grams over its lifespan."""
    return EmbodiedRates(
        server_g_per_s=config.server_embodied_g / config.server_lifespan_s,
        gpu_g_per_s={
            index: gpu_embodied_g(model, config.gpu_embodied_g, config.gpu_default_embodied_g)
            / config.gpu_lifespan_s
            for index, model in gpu_models.items()
        },
    )


def held_resources(
    cpu: CpuActivity,
    gpu_sm_samples: Mapping[int, Mapping[str, float]],
    gpu_holders: Mapping[int, str],
    elapsed_s: float,
) -> tuple[dict[str, float], dict[int, dict[str, float]]]:
    """What each job held this interval: the scheduler's allocation where it says, else what
    the job used (CPU time / interval; a GPU its processes ran on)."""
    cpus = dict(cpu.reserved_cpus)
    if elapsed_s > 0:
        for job, seconds in cpu.job_cpu_s.items():
            if job not in cpus and seconds > 0:
                cpus[job] = seconds / elapsed_s
    gpus: dict[int, dict[str, float]] = {
        index: {job: 1.0 for job in per_job} for index, per_job in gpu_sm_samples.items()
    }
    gpus |= {index: {job: 1.0} for index, job in gpu_holders.items()}
    return cpus, gpus
