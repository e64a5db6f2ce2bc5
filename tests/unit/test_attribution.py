from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wattwise.attribution import (
    IDLE_POLICIES,
    RESERVED,
    UNATTRIBUTED,
    Split,
    attribute_tick,
    mig_fractions,
    split_cpu,
    split_gpu,
)
from wattwise.jobs.gpu_processes import PowerFloors
from wattwise.model import CpuActivity, GpuShare, MigInstance

JOBS = st.sampled_from([f"job{i}" for i in range(8)])
SECONDS = st.floats(0, 1e4, allow_nan=False, allow_infinity=False)
ENERGY = st.floats(0, 1e7, allow_nan=False, allow_infinity=False)


def assert_conserved(split: Split, energy_j: float) -> None:
    parts = [
        *split.active_j.values(),
        *split.idle_j.values(),
        split.system_j,
        split.unattributed_idle_j,
    ]
    assert all(p >= 0 for p in parts)
    assert split.total_j() == pytest.approx(energy_j, rel=1e-9, abs=1e-12)


@given(
    energy=ENERGY,
    busy=SECONDS,
    idle=SECONDS,
    job_cpu=st.dictionaries(JOBS, SECONDS, max_size=8),
    reserved=st.dictionaries(JOBS, st.floats(0, 256, allow_nan=False), max_size=8),
    total_cpus=st.integers(0, 256),
    policy=st.sampled_from(IDLE_POLICIES),
)
def test_cpu_split_conserves_energy(energy, busy, idle, job_cpu, reserved, total_cpus, policy):
    activity = CpuActivity(busy, idle, job_cpu, reserved, total_cpus)
    assert_conserved(split_cpu(energy, activity, policy), energy)


@given(
    energy=ENERGY,
    samples=st.dictionaries(JOBS, st.floats(0, 1e4, allow_nan=False), max_size=8),
    holder=st.one_of(st.none(), JOBS),
)
def test_gpu_split_conserves_energy(energy, samples, holder):
    assert_conserved(split_gpu(energy, samples, holder), energy)


def test_cpu_active_follows_cgroup_time_and_the_rest_is_system() -> None:
    # 8 CPUs for 1 s: 6 s busy (a: 3 s, b: 1 s, 2 s outside jobs), 2 s idle; 100 J.
    activity = CpuActivity(6.0, 2.0, {"a": 3.0, "b": 1.0}, {}, 8)
    split = split_cpu(100.0, activity, UNATTRIBUTED)
    assert split.active_j == pytest.approx({"a": 37.5, "b": 12.5})
    assert split.system_j == pytest.approx(25.0)
    assert split.unattributed_idle_j == pytest.approx(25.0) and not split.idle_j


def test_cpu_idle_is_charged_by_reservation() -> None:
    activity = CpuActivity(0.0, 8.0, {}, {"a": 4, "b": 2}, 8)
    split = split_cpu(80.0, activity, RESERVED)
    assert split.idle_j == pytest.approx({"a": 40.0, "b": 20.0})
    assert split.unattributed_idle_j == pytest.approx(20.0)


def test_cgroup_time_above_node_busy_time_is_scaled_not_overdrawn() -> None:
    split = split_cpu(10.0, CpuActivity(1.0, 0.0, {"a": 1.5, "b": 0.5}, {}, 1))
    assert split.active_j == pytest.approx({"a": 7.5, "b": 2.5}) and split.system_j == 0


def test_denormal_samples_do_not_create_energy() -> None:
    # Found by hypothesis: energy x 5e-324 / 5e-324 gave 2.0 J out of 1.5 J.
    assert split_gpu(1.5, {"a": 5e-324}).active_j == {"a": 1.5}
    assert split_cpu(1.5, CpuActivity(5e-324, 0.0, {"a": 5e-324}, {}, 1)).active_j == {"a": 1.5}


def test_gpu_one_job_takes_all_several_split_by_sm_samples() -> None:
    assert split_gpu(50.0, {"a": 0.0}).active_j == {"a": 50.0}
    assert split_gpu(60.0, {"a": 30.0, "b": 10.0}).active_j == pytest.approx({"a": 45, "b": 15})
    assert split_gpu(60.0, {"a": 0.0, "b": 0.0}).active_j == {"a": 30.0, "b": 30.0}


def test_gpu_without_processes_is_allocated_idle_or_unattributed() -> None:
    held = split_gpu(20.0, {}, holder="a")
    assert held.idle_j == {"a": 20.0} and not held.active_j
    assert split_gpu(20.0, {}).unattributed_idle_j == 20.0


def domain_energy(domain: str, device: str, source: str, joules: float, in_total: bool = True):
    from wattwise.model import CounterKey, DomainEnergy

    return DomainEnergy(
        CounterKey(domain, device, source), 0.0, None, True, None, in_total, 0, 0, joules
    )


@given(
    package=ENERGY,
    dram=ENERGY,
    gpus=st.lists(ENERGY, max_size=4),
    busy=SECONDS,
    idle=SECONDS,
    job_cpu=st.dictionaries(JOBS, SECONDS, max_size=8),
    samples=st.dictionaries(st.integers(0, 3), st.dictionaries(JOBS, SECONDS, max_size=3)),
    holders=st.dictionaries(st.integers(0, 3), JOBS),
)
def test_a_whole_tick_conserves_every_joule_of_the_node_total(
    package, dram, gpus, busy, idle, job_cpu, samples, holders
):
    from wattwise.attribution import attribute_tick

    domains = [
        domain_energy("package", "0", "rapl", package),
        domain_energy("dram", "0", "rapl", dram),
        domain_energy("core", "0", "rapl", package, in_total=False),  # inside package
        *(domain_energy("gpu", str(i), "nvml", e) for i, e in enumerate(gpus)),
    ]
    cpu = CpuActivity(busy, idle, job_cpu, {}, 8)
    charged, left = attribute_tick(domains, cpu, samples, holders)
    total = sum(c.energy_j for c in charged) + sum(u.energy_j for u in left)
    assert total == pytest.approx(package + dram + sum(gpus), rel=1e-9, abs=1e-9)
    assert all(c.energy_j > 0 for c in charged) and all(u.energy_j > 0 for u in left)
    assert not any(c.domain == "core" for c in charged)


def test_a_mig_gpu_conserves_its_energy_even_when_its_instances_claim_too_many_slices() -> None:
    cpu = CpuActivity(0.0, 0.0, {}, {}, 8)
    gpu = domain_energy("gpu", "0", "nvml", 700.0)
    for parts, unattributed in (
        ([GpuShare(3 / 7, {"a": 0.0, "b": 0.0}, None), GpuShare(2 / 7, {}, "c")], 200.0),
        ([GpuShare(5 / 7, {"a": 0.0}, None), GpuShare(5 / 7, {}, None)], 350.0),  # 10 of 7
    ):
        charged, left = attribute_tick([gpu], cpu, {0: {"z": 1.0}}, {}, gpu_shares={0: parts})
        total = sum(c.energy_j for c in charged) + sum(u.energy_j for u in left)
        assert total == pytest.approx(700.0)
        assert sum(u.energy_j for u in left) == pytest.approx(unattributed)
        assert "z" not in {c.job_key for c in charged}  # the instances decide, not the GPU


def mig(gpu_instance: int, slices: int, compute_instance: int = 0) -> MigInstance:
    return MigInstance(gpu_instance, compute_instance, f"MIG-{gpu_instance}", "p", slices)


def test_mig_instances_are_split_by_slices_unless_every_one_has_a_measured_activity() -> None:
    instances = [mig(1, 3), mig(5, 2), mig(9, 1)]
    by_slices = [3 / 7, 2 / 7, 1 / 7]
    assert mig_fractions(instances, 7) == pytest.approx(by_slices)
    # One instance without a reading: activity cannot be compared, slices decide.
    assert mig_fractions(instances, 7, {1: 1.0, 9: 0.5}, 0.25) == pytest.approx(by_slices)
    # Nobody busy: slices.
    assert mig_fractions(instances, 7, {1: 0.0, 5: 0.0, 9: 0.0}, 0.25) == pytest.approx(by_slices)
    # A floor that is no number counts as all floor: slices.
    assert mig_fractions(instances, 7, {1: 1.0, 5: 0.0, 9: 0.5}, math.nan) == pytest.approx(
        by_slices
    )


def test_mig_activity_splits_what_is_above_the_floor_by_activity_times_slices() -> None:
    """A 3g instance fully busy, a 2g one idle, a 1g one half busy; the GPU's idle floor is a
    quarter of its power now. A quarter goes by slices, the rest by 3x1.0 : 2x0 : 1x0.5."""
    instances = [mig(1, 3), mig(5, 2), mig(9, 1)]
    fractions = mig_fractions(instances, 7, {1: 1.0, 5: 0.0, 9: 0.5, 13: 1.0}, 0.25)
    assert fractions == pytest.approx([5.25 / 7, 0.5 / 7, 1 / 7])
    assert 1 - sum(fractions) == pytest.approx(0.25 / 7)  # the free slice's part of the floor
    # Compute instances of one GPU instance share its part equally.
    shared = mig_fractions([mig(1, 4, 0), mig(1, 4, 1), mig(2, 3)], 7, {1: 1.0, 2: 1.0}, 0.0)
    assert shared == pytest.approx([2 / 7, 2 / 7, 3 / 7])


@given(
    slices=st.lists(st.integers(1, 7), min_size=1, max_size=7),
    busy=st.lists(st.floats(0, 1), min_size=7, max_size=7),
    floor=st.floats(-1, 2, allow_nan=False),
)
def test_mig_fractions_never_give_out_more_than_the_gpu(slices, busy, floor) -> None:
    instances = [mig(gi, s) for gi, s in enumerate(slices)]
    fractions = mig_fractions(instances, sum(slices), dict(enumerate(busy)), floor)
    assert all(f >= 0 for f in fractions)
    assert sum(fractions) == pytest.approx(1.0)  # every slice is in an instance here


def test_a_mig_gpus_idle_floor_is_the_lowest_power_of_the_last_day() -> None:
    floors = PowerFloors()
    assert floors.ratio("GPU-a", 400.0, 0.0) == 1.0  # one level seen: all floor, by slices
    assert floors.ratio("GPU-a", None, 1.0) == 1.0
    assert floors.ratio("GPU-a", 0.2, 2.0) == 1.0  # a stalled interval is no floor
    assert floors.ratio("GPU-a", math.inf, 3.0) == 1.0
    assert floors.ratio("GPU-a", 800.0, 4.0) == pytest.approx(0.5)
    assert floors.ratio("GPU-a", 100.0, 3600.0) == pytest.approx(1.0)  # a new low
    assert floors.ratio("GPU-a", 400.0, 7200.0) == pytest.approx(0.25)
    # A day later that hour's low has left: the floor is the day's lowest since.
    assert floors.ratio("GPU-a", 400.0, 3600.0 * 25) == pytest.approx(1.0)
    assert floors.ratio("GPU-b", 800.0, 3600.0 * 25) == 1.0  # per GPU
