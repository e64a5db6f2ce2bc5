"""Checks against a real NVIDIA GPU and driver. Skipped where NVML cannot start; never in CI.

Run on a GPU machine with: python -m pytest tests/gpu -v
"""

from __future__ import annotations

import time

import pytest

pynvml = pytest.importorskip("pynvml")

try:
    pynvml.nvmlInit()
    GPU_COUNT = pynvml.nvmlDeviceGetCount()
except pynvml.NVMLError:
    GPU_COUNT = 0

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(GPU_COUNT == 0, reason="no NVIDIA GPU and driver here"),
]


def test_agent_energy_equals_the_nvml_counter_delta() -> None:
    from wattwise.accounting import EnergyCounters
    from wattwise.sources.nvml import NvmlSource

    source, accounts = NvmlSource(power_poll_hz=10), EnergyCounters()
    handle = pynvml.nvmlDeviceGetHandleByIndex(0)
    try:
        raw_before = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
        first = {d.key.device: d for d in accounts.update(source.read().counters)}
        time.sleep(2.0)
        second = {d.key.device: d for d in accounts.update(source.read().counters)}
        raw_after = pynvml.nvmlDeviceGetTotalEnergyConsumption(handle)
    finally:
        source.close()
    agent_delta_j = second["0"].energy_j - first["0"].energy_j
    # Our reads sit between the two direct reads of the same counter.
    assert 0 <= agent_delta_j <= (raw_after - raw_before) / 1000.0
    assert second["0"].key.source == "nvml" and second["0"].power_w is not None
