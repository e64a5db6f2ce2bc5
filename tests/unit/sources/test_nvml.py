from __future__ import annotations

import time
from types import ModuleType, SimpleNamespace

import pytest

from tests.support.fixtures.trees import h100, pascal
from wattwise.accounting import EnergyCounters
from wattwise.sources.nvml import NvmlSource, _Gpu
from wattwise.sources.nvml_power import PowerIntegrator


def by_index(readout):
    return {int(c.key.device): c for c in readout.counters}


def test_volta_gpus_read_the_energy_counter_and_gauges(fake_nvml: ModuleType) -> None:
    fake_nvml.configure({"gpus": [h100(0, energy_mj=1_000), h100(1, energy_mj=2_000)]})
    source = NvmlSource(power_poll_hz=10)
    try:
        readout = source.read()
    finally:
        source.close()
    counters = by_index(readout)
    assert counters[0].raw_uj == 1_000_000 and counters[0].key.source == "nvml"
    assert counters[1].raw_uj == 2_000_000 and counters[1].wrap_uj is None
    gpu = readout.gpus[0]
    assert gpu.up and gpu.model == "NVIDIA H100 80GB HBM3"
    assert gpu.power_w == 350.0 and gpu.power_limit_w == 700.0
    assert gpu.utilization_ratio == 0.87
    assert gpu.memory_used_bytes == 40 * 2**30 and gpu.memory_total_bytes == 80 * 2**30
    assert gpu.temperature_celsius == 55.0 and gpu.sm_clock_hz == 1.98e9


def test_gauges_are_read_every_few_seconds_energy_and_processes_every_tick(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    from wattwise.sources import nvml

    gpu = h100(0, energy_mj=1_000, pids=[7])
    fake_nvml.configure({"gpus": [gpu]})
    source = NvmlSource(power_poll_hz=10)
    try:
        source.read()
        gpu.update(temp_c=70, energy_mj=2_000, pids=[7, 8])
        calls = fake_nvml.calls
        readout = source.read()
        cached_calls = fake_nvml.calls - calls
        assert by_index(readout)[0].raw_uj == 2_000_000
        assert [p.pid for p in readout.gpus[0].processes] == [7, 8]
        assert readout.gpus[0].temperature_celsius == 55.0  # as read at the first tick
        later = time.monotonic() + nvml.GAUGES_EVERY_S
        # The module's own clock, not time.monotonic for every thread in the process.
        monkeypatch.setattr(nvml, "time", SimpleNamespace(monotonic=lambda: later))
        calls = fake_nvml.calls
        assert source.read().gpus[0].temperature_celsius == 70.0
        assert fake_nvml.calls - calls >= cached_calls + 6  # the six gauge calls, now made
    finally:
        source.close()


def test_unsupported_gauge_is_left_out_not_an_error(fake_nvml: ModuleType) -> None:
    gpu = h100(0)
    del gpu["temp_c"]
    fake_nvml.configure({"gpus": [gpu]})
    source = NvmlSource(power_poll_hz=10)
    (status,) = source.read().gpus
    source.close()
    assert status.up and status.temperature_celsius is None and status.power_w == 350.0


def test_pre_volta_gpu_falls_back_to_integrated_power(fake_nvml: ModuleType) -> None:
    fake_nvml.configure({"gpus": [pascal(0, power_mw=100_000)]})
    fake_nvml.nvmlInit()
    gpu = _Gpu(0, fake_nvml.nvmlDeviceGetHandleByIndex(0), "GPU-x", "P100", False)
    integrator = PowerIntegrator(fake_nvml, [gpu], poll_hz=10)
    before = time.monotonic()
    integrator.poll_once()
    inner_start = time.monotonic()
    time.sleep(0.05)
    inner_end = time.monotonic()
    integrator.poll_once()
    after = time.monotonic()
    energy_uj, error = integrator.energy_uj(0)
    assert error is None
    # Constant 100 W: the integral lies between 100 W x the inner and the outer time spans.
    assert 100 * (inner_end - inner_start) * 1e6 <= energy_uj <= 100 * (after - before) * 1e6


def test_pre_volta_source_label_and_polling_thread(fake_nvml: ModuleType) -> None:
    fake_nvml.configure({"gpus": [pascal(0), h100(1)]})
    source = NvmlSource(power_poll_hz=50)
    try:
        first = by_index(source.read())
        deadline = time.monotonic() + 30  # a bound for a loaded machine, not a timing target
        second = by_index(source.read())
        while second[0].raw_uj == first[0].raw_uj and time.monotonic() < deadline:
            time.sleep(0.05)
            second = by_index(source.read())
        probe = source.probe()
    finally:
        source.close()
    assert first[0].key.source == "nvml_power" and first[1].key.source == "nvml"
    assert second[0].raw_uj > first[0].raw_uj  # the thread keeps integrating between ticks
    assert "power polled at 50 Hz" in probe[0].detail
    assert "energy counter" in probe[1].detail


def test_gpu_lost_mid_run_is_down_and_the_others_keep_working(fake_nvml: ModuleType) -> None:
    gpus = [h100(0, energy_mj=1_000), h100(1, energy_mj=1_000)]
    fake_nvml.configure({"gpus": gpus})
    source, accounts = NvmlSource(power_poll_hz=10), EnergyCounters()
    accounts.update(source.read().counters)
    gpus[0]["energy_mj"] = 3_000
    gpus[1]["energy_mj"] = 1_500
    gpus[1]["lost"] = True
    readout = source.read()
    domains = {int(d.key.device): d for d in accounts.update(readout.counters)}
    source.close()
    assert domains[0].up and domains[0].energy_j == 3.0
    assert not domains[1].up and domains[1].energy_j == 1.0
    assert "NVML_ERROR_GPU_IS_LOST" in (domains[1].error or "")
    statuses = {g.index: g for g in readout.gpus}
    assert statuses[0].up and not statuses[1].up
    assert readout.status[0].up and readout.status[0].detail == "1 of 2 GPUs up"


def test_gpu_that_comes_back_resumes_its_counter(fake_nvml: ModuleType) -> None:
    gpus = [h100(0, energy_mj=1_000)]
    fake_nvml.configure({"gpus": gpus})
    source, accounts = NvmlSource(power_poll_hz=10), EnergyCounters()
    accounts.update(source.read().counters)
    gpus[0]["lost"] = True
    accounts.update(source.read().counters)
    gpus[0].update(lost=False, energy_mj=4_000)
    (domain,) = accounts.update(source.read().counters)
    source.close()
    assert domain.up and domain.energy_j == 4.0


def test_driver_reload_is_a_reset_not_a_wrap(fake_nvml: ModuleType) -> None:
    gpus = [h100(0, energy_mj=9_000_000)]
    fake_nvml.configure({"gpus": gpus})
    source, accounts = NvmlSource(power_poll_hz=10), EnergyCounters()
    accounts.update(source.read().counters)
    gpus[0]["energy_mj"] = 250  # the counter restarted with the driver
    (domain,) = accounts.update(source.read().counters)
    source.close()
    assert domain.resets == 1 and domain.wraps == 0
    assert domain.energy_j == pytest.approx(9_000.25)


@pytest.mark.parametrize(
    ("code", "fix"),
    [(12, "no NVIDIA driver"), (9, "kernel module is not loaded"), (4, "permission")],
)
def test_nvml_that_cannot_start_is_a_probe_finding(
    fake_nvml: ModuleType, code: int, fix: str
) -> None:
    fake_nvml.configure({"gpus": [], "init_error": code})
    source = NvmlSource(power_poll_hz=10)
    (finding,) = source.probe()
    (status,) = source.read().status
    source.close()
    assert not finding.ok and fix in finding.fix
    assert not status.up and "NVML did not start" in status.detail


def test_missing_nvidia_ml_py_is_a_probe_finding(no_nvml: None) -> None:
    source = NvmlSource(power_poll_hz=10)
    (finding,) = source.probe()
    assert not finding.ok and "nvidia-ml-py is not installed" in finding.detail
    assert source.read().counters == ()


def test_processes_carry_the_sm_samples_taken_since_the_last_tick(fake_nvml: ModuleType) -> None:
    gpu = h100(0, pids=[100, 200], samples=[[100, 10, 50], [200, 11, 20], [100, 12, 30]])
    fake_nvml.configure({"gpus": [gpu]})
    source = NvmlSource(power_poll_hz=10)
    try:
        (first,) = source.read().gpus
        gpu["samples"].append([200, 20, 40])
        (second,) = source.read().gpus
        (third,) = source.read().gpus  # nothing new: NVML answers NOT_FOUND
    finally:
        source.close()
    assert {p.pid: p.sm_samples for p in first.processes} == {100: 80.0, 200: 20.0}
    assert {p.pid: p.sm_samples for p in second.processes} == {100: 0.0, 200: 40.0}
    assert {p.pid: p.sm_samples for p in third.processes} == {100: 0.0, 200: 0.0}


def test_a_gpu_with_one_process_or_none_is_not_asked_for_samples(
    fake_nvml: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """They only split a GPU between processes; a call saved per GPU per tick."""
    asked: list[int] = []
    samples = fake_nvml.nvmlDeviceGetProcessUtilization

    def counted(handle, since):
        asked.append(handle.index)
        return samples(handle, since)

    monkeypatch.setattr(fake_nvml, "nvmlDeviceGetProcessUtilization", counted)
    gpus = [h100(0, pids=[100], samples=[[100, 10, 50]]), h100(1), h100(2, pids=[7, 8])]
    fake_nvml.configure({"gpus": gpus})
    source = NvmlSource(power_poll_hz=10)
    try:
        readout = source.read()
    finally:
        source.close()
    assert asked == [2]
    assert [[p.pid for p in g.processes] for g in readout.gpus] == [[100], [], [7, 8]]


def _processes_and_probe(fake_nvml: ModuleType, state: dict) -> tuple[list[int], object]:
    fake_nvml.configure(state)
    source = NvmlSource(power_poll_hz=10)
    try:
        (gpu,) = source.read().gpus
        (gpu,) = source.read().gpus  # the call found at the first read is kept
        finding = next(f for f in source.probe() if f.item == "processes")
    finally:
        source.close()
    return [p.pid for p in gpu.processes], finding


def test_a_driver_without_the_v3_process_call_is_listed_with_v2_and_probe_says_so(
    fake_nvml: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    """nvidia-ml-py >= 12.550 on a driver older than it: the unversioned call raises
    NVMLLibraryMismatchError (not an NVMLError); _v2 still answers (gpustat, nvitop)."""
    pids, finding = _processes_and_probe(
        fake_nvml, {"old_driver": True, "gpus": [h100(0, pids=[100, 200])]}
    )
    assert pids == [100, 200]
    assert finding.ok and "nvmlDeviceGetComputeRunningProcesses_v2" in finding.detail
    assert "missing" in finding.detail
    fallbacks = [r for r in caplog.records if "is missing" in r.getMessage()]
    assert len(fallbacks) == 1 and "NVMLLibraryMismatchError" in fallbacks[0].getMessage()


def test_a_driver_with_no_process_call_at_all_costs_the_split_and_probe_says_what_is_lost(
    fake_nvml: ModuleType,
) -> None:
    missing = ["nvmlDeviceGetComputeRunningProcesses_v3", "nvmlDeviceGetComputeRunningProcesses_v2"]
    pids, finding = _processes_and_probe(
        fake_nvml, {"missing": missing, "gpus": [h100(0, pids=[100])]}
    )
    assert pids == []
    assert not finding.ok and "never by process" in finding.detail and finding.fix


def test_a_call_a_gpu_does_not_support_costs_that_figure_only(fake_nvml: ModuleType) -> None:
    gpu = h100(0, pids=[100, 200], not_supported=["nvmlDeviceGetProcessUtilization"])
    gpu["not_supported"].append("nvmlDeviceGetClockInfo")
    fake_nvml.configure({"gpus": [gpu]})
    source = NvmlSource(power_poll_hz=10)
    try:
        readout = source.read()
    finally:
        source.close()
    (status,) = readout.gpus
    assert status.up and status.sm_clock_hz is None and status.power_w == 350.0
    assert [(p.pid, p.sm_samples) for p in status.processes] == [(100, 0.0), (200, 0.0)]
    assert by_index(readout)[0].raw_uj == 5_000_000_000
