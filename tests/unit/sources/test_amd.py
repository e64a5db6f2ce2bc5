"""AMD Instinct through the fake amdsmi at its one import seam, modelling one MI300X."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from types import ModuleType

import pytest

from tests.conftest import FAKES
from wattwise.accounting import EnergyCounters
from wattwise.sources.amd import AmdSmiSource


@pytest.fixture
def fake_amdsmi(monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.syspath_prepend(str(FAKES))
    monkeypatch.delitem(sys.modules, "amdsmi", raising=False)
    import amdsmi

    assert amdsmi.__file__.startswith(str(FAKES))
    yield amdsmi
    amdsmi.configure(None)
    sys.modules.pop("amdsmi", None)


@pytest.mark.parametrize("legacy", [False, True], ids=["rocm-6.4+", "before-6.4"])
def test_an_mi300x_counts_energy_in_ticks_times_resolution_and_splits_by_gfx_time(
    fake_amdsmi: ModuleType, legacy: bool
) -> None:
    processes = [{"pid": 100, "gfx_ns": 0}, {"pid": 200, "gfx_ns": 0}]
    gpu = fake_amdsmi.mi300x(processes=processes, legacy=legacy)
    fake_amdsmi.configure({"gpus": [gpu]})
    source = AmdSmiSource()
    counters = EnergyCounters()
    try:
        (first,) = source.read().counters
        assert first.raw_uj == int(65_536_000 * 15.259) and first.key.source == "amdsmi"
        counters.update((first,))
        gpu["energy_ticks"] += 65_536  # 1 J of ticks at 15.259 uJ
        processes[0]["gfx_ns"], processes[1]["gfx_ns"] = 3_000_000, 1_000_000
        readout = source.read()
        (domain,) = counters.update(readout.counters)
        finding = next(f for f in source.probe() if f.item == "gpu 0")
    finally:
        source.close()
    assert domain.interval_energy_j == pytest.approx(65_536 * 15.259e-6, rel=1e-6)
    (status,) = readout.gpus
    assert status.model == "AMD Instinct MI300X" and status.power_w == 750.0
    assert {p.pid: p.sm_samples for p in status.processes} == {100: 3e6, 200: 1e6}
    assert finding.ok and "compute partition SPX" in finding.detail


def test_a_failing_amd_gpu_is_down_and_no_amdsmi_is_no_gpu(
    fake_amdsmi: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_amdsmi.configure({"gpus": [fake_amdsmi.mi300x(energy_ticks="garbage")]})
    source = AmdSmiSource()
    (counter,) = source.read().counters
    (status,) = source.read().gpus
    source.close()
    assert counter.raw_uj is None and not status.up and "energy count" in status.error
    monkeypatch.setitem(sys.modules, "amdsmi", None)
    missing = AmdSmiSource()
    assert missing.gpus == [] and "not installed" in (missing.problem or "")
    (finding,) = missing.probe()
    assert finding.ok and "wattwise[amd]" in finding.detail
