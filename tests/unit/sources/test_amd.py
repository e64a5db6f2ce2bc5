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
    assert finding.ok and "pip install /opt/rocm/share/amd_smi" in finding.detail


@pytest.mark.parametrize("legacy", [False, True], ids=["kfd-partition-id", "by-pci-device"])
def test_a_partitioned_mi300x_is_one_gpu_counted_once(
    fake_amdsmi: ModuleType, legacy: bool
) -> None:
    """Two MI300X in CPX mode: amdsmi lists 8 partitions each, every one answering the whole
    device's socket energy. Summed, the node's GPU energy was 8 times too high (found by
    review). One GPU per device, read once, split among all its partitions' processes."""
    gpus = []
    for device in range(2):
        for xcp in range(8):
            processes = [{"pid": 1000 * device + xcp + 1, "gfx_ns": 0}] if xcp in (0, 5) else []
            gpus.append(
                fake_amdsmi.mi300x(
                    uuid=f"9cff74a1-000{device}-1000-80e9-5d2a6ea4f7b{xcp}",
                    partition="CPX",
                    partition_id=xcp,
                    bdf=f"0000:{0x0C + 0x20 * device:02x}:00.{xcp}",
                    processes=processes,
                    legacy=legacy,
                )
            )
    fake_amdsmi.configure({"gpus": gpus})
    source = AmdSmiSource()
    try:
        readout = source.read()
        for entry in gpus:
            entry["energy_ticks"] += 65_536
            for process in entry["processes"]:
                process["gfx_ns"] += 1_000_000
        counters = EnergyCounters()
        counters.update(readout.counters)
        readout = source.read()
        domains = counters.update(readout.counters)
        findings = {f.item: f for f in source.probe()}
    finally:
        source.close()
    assert len(domains) == 2  # two devices, not sixteen partitions
    assert sum(d.interval_energy_j for d in domains) == pytest.approx(2 * 65_536 * 15.259e-6)
    assert [sorted(p.pid for p in g.processes) for g in readout.gpus] == [[1, 6], [1001, 1006]]
    assert "CPX: 8 partitions, one GPU here" in findings["gpu 1"].detail
    assert "gpu 2" not in findings


def test_partitions_listed_out_of_order_join_their_own_gpu(fake_amdsmi: ModuleType) -> None:
    def part(device: int, xcp: int, pids: list[int]) -> dict:
        return fake_amdsmi.mi300x(
            uuid=f"9cff74a1-000{device}-1000-80e9-5d2a6ea4f7b{xcp}",
            partition="DPX",
            partition_id=xcp,
            bdf=f"0000:{0x0C + 0x20 * device:02x}:00.{xcp}",
            processes=[{"pid": pid, "gfx_ns": 0} for pid in pids],
        )

    # Device 1's second partition first, then the devices interleaved; pid 7 on both of
    # device 0's partitions.
    gpus = [part(1, 1, [21]), part(0, 0, [7]), part(1, 0, []), part(0, 1, [7, 8])]
    fake_amdsmi.configure({"gpus": gpus})
    source = AmdSmiSource()
    try:
        source.read()
        for entry, busy in zip(gpus, (5, 1, 0, 2), strict=True):
            for process in entry["processes"]:
                process["gfx_ns"] += busy * 1_000_000
        readout = source.read()
    finally:
        source.close()
    by_gpu = [{p.pid: p.sm_samples for p in g.processes} for g in readout.gpus]
    assert by_gpu == [{21: 5e6}, {7: 3e6, 8: 2e6}]  # pid 7: 1 ms on one, 2 ms on the other
    assert len(readout.counters) == 2


def test_a_partitioned_gpu_that_cannot_be_told_apart_is_flagged(fake_amdsmi: ModuleType) -> None:
    gpus = [fake_amdsmi.mi300x(partition="CPX", bdf="", legacy=True) for _ in range(2)]
    fake_amdsmi.configure({"gpus": gpus})
    source = AmdSmiSource()
    try:
        finding = next(f for f in source.probe() if f.item == "gpu 0")
    finally:
        source.close()
    assert not finding.ok and "could not be told apart" in finding.detail
