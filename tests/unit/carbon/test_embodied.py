"""Embodied carbon split per interval: SCI's M term, conserved to the gram."""

from __future__ import annotations

import math

from hypothesis import given
from hypothesis import strategies as st

from wattwise.carbon.embodied import (
    GPU,
    SERVER,
    EmbodiedRates,
    gpu_embodied_g,
    split_embodied,
)
from wattwise.config import YEAR_S, EmbodiedConfig

RATES = EmbodiedRates(server_g_per_s=1.0, gpu_g_per_s={0: 2.0, 1: 2.0, 2: 2.0, 3: 2.0})


def total(split) -> float:
    jobs = sum(g for parts in split.jobs_g.values() for g in parts.values())
    return jobs + sum(split.unreserved_g.values())


def test_sci_formula_for_one_job_holding_half_the_node() -> None:
    # 32 of 64 CPUs and 2 of 4 GPUs for 3600 s.
    split = split_embodied(3600, RATES, 64, {"a": 32}, {0: {"a": 1}, 1: {"a": 1}})
    assert math.isclose(split.jobs_g["a"][GPU], 2 * 2.0 * 3600)
    assert math.isclose(split.jobs_g["a"][SERVER], 1.0 * 3600 * 0.5)  # (0.5 + 0.5) / 2
    assert math.isclose(split.unreserved_g[GPU], 2 * 2.0 * 3600)
    assert math.isclose(total(split), RATES.total_g_per_s * 3600)


def test_the_defaults_give_the_documented_rate() -> None:
    config = EmbodiedConfig()
    per_gpu_hour = config.gpu_embodied_g["H100"] / config.gpu_lifespan_s * 3600
    assert math.isclose(per_gpu_hour, 164_000 / (4 * YEAR_S) * 3600)  # about 4.7 g per GPU-hour
    assert 4.6 < per_gpu_hour < 4.8


def test_gpu_share_and_unheld_hardware() -> None:
    # Two jobs share GPU 0 by processes (no holder); nobody holds the CPUs or other GPUs.
    split = split_embodied(10, RATES, 8, {}, {0: {"a": 1, "b": 1}})
    assert math.isclose(split.jobs_g["a"][GPU], 10.0) and math.isclose(split.jobs_g["b"][GPU], 10)
    # Each holds half a GPU of four: server share (0 + 0.125) / 2.
    assert math.isclose(split.jobs_g["a"][SERVER], 10 * 0.0625)
    assert math.isclose(split.unreserved_g[GPU], 60.0)


def test_a_cpu_node_splits_the_server_by_cpus_and_caps_oversubscription() -> None:
    rates = EmbodiedRates(server_g_per_s=1.0)
    split = split_embodied(100, rates, 4, {"a": 2, "b": 6}, {})
    assert math.isclose(split.jobs_g["a"][SERVER], 25.0)  # 2 of 8 asked for, on a 4-CPU node
    assert math.isclose(split.jobs_g["b"][SERVER], 75.0)
    assert split.unreserved_g[SERVER] == 0.0


def test_model_names_match_the_longest_key() -> None:
    table = {"H100": 164_000.0, "H100 NVL": 200_000.0}
    assert gpu_embodied_g("NVIDIA H100 80GB HBM3", table, 1.0) == 164_000
    assert gpu_embodied_g("NVIDIA H100 NVL", table, 1.0) == 200_000
    assert gpu_embodied_g("Tesla P100-PCIE-16GB", table, 1.0) == 1.0


@given(
    elapsed=st.floats(0, 3600),
    cpus=st.dictionaries(st.sampled_from("abcde"), st.floats(0, 256), max_size=5),
    gpu_use=st.dictionaries(
        st.integers(0, 5),
        st.dictionaries(st.sampled_from("abcde"), st.floats(0, 100), max_size=3),
        max_size=6,
    ),
    total_cpus=st.integers(1, 256),
)
def test_grams_are_conserved_and_never_negative(elapsed, cpus, gpu_use, total_cpus) -> None:
    rates = EmbodiedRates(0.04, {i: 0.0013 for i in range(4)})  # GPUs 4, 5 do not exist
    split = split_embodied(elapsed, rates, total_cpus, cpus, gpu_use)
    assert math.isclose(total(split), rates.total_g_per_s * elapsed, rel_tol=1e-9, abs_tol=1e-12)
    values = [g for parts in split.jobs_g.values() for g in parts.values()]
    assert all(g >= 0 for g in [*values, *split.unreserved_g.values()])
