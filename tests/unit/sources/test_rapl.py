from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.descriptors import open_files_under
from tests.support.fixtures.trees import (
    PACKAGE_MAX_UJ,
    add_zone,
    laptop_with_psys,
    set_energy,
    two_socket_server,
)
from wattwise.accounting import EnergyCounters
from wattwise.sources.rapl import RaplSource, discover_zones, split_zone_name


@pytest.mark.parametrize(
    ("names", "expected"),
    [
        (["package-0", "package-1"], [("package", 0), ("package", 1)]),
        (["dram", "dram"], [("dram", 0), ("dram", 1)]),
        (
            ["package-0", "core", "package-1", "core"],
            [("package", 0), ("core", 0), ("package", 1), ("core", 1)],
        ),
        (["psys"], [("psys", 0)]),
        (["package-x"], [("package-x", 0)]),
    ],
)
def test_zone_names_split_as_procfs_does(names: list[str], expected: list[tuple[str, int]]) -> None:
    seen: dict[str, int] = {}
    assert [split_zone_name(n, seen) for n in names] == expected


def test_two_socket_server_zones_and_node_total(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    zones = {(z.domain, z.index): z for z in discover_zones(tmp_path)}
    assert set(zones) == {(d, s) for d in ("package", "core", "uncore", "dram") for s in (0, 1)}
    summed = sorted(k for k, z in zones.items() if z.in_node_total)
    assert summed == [("dram", 0), ("dram", 1), ("package", 0), ("package", 1)]
    assert zones[("package", 1)].max_energy_range_uj == PACKAGE_MAX_UJ


def test_psys_replaces_package_in_the_total_and_mmio_duplicate_is_skipped(tmp_path: Path) -> None:
    laptop_with_psys(tmp_path)
    zones = discover_zones(tmp_path)
    assert sorted((z.domain, z.index) for z in zones) == [
        ("core", 0),
        ("package", 0),
        ("psys", 0),
        ("uncore", 0),
    ]
    assert not any("mmio" in str(z.path) for z in zones)
    assert [z.domain for z in zones if z.in_node_total] == ["psys"]


def test_mmio_package_is_used_when_it_is_the_only_one(tmp_path: Path) -> None:
    add_zone(tmp_path, "intel-rapl-mmio:0", "package-0", 42, PACKAGE_MAX_UJ)
    (zone,) = discover_zones(tmp_path)
    assert (zone.domain, zone.index, zone.in_node_total) == ("package", 0, True)


def test_node_total_does_not_add_subzones_on_top_of_their_package(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    source, accounts = RaplSource(tmp_path), EnergyCounters()
    accounts.update(source.read().counters)
    for socket in (0, 1):
        set_energy(tmp_path, f"intel-rapl:{socket}", 11_000_000)  # +10 J
        set_energy(tmp_path, f"intel-rapl:{socket}:0", 8_500_000)  # core +8 J, inside package
        set_energy(tmp_path, f"intel-rapl:{socket}:2", 2_200_000)  # dram +2 J
    domains = accounts.update(source.read().counters)
    from wattwise.model import Snapshot

    snap = Snapshot(0.0, 1.0, 0.0, domains, (), ())
    (total,) = snap.node_totals
    assert total.source == "rapl"
    start = 2 * (1_000_000 + 200_000) / 1e6
    assert total.energy_j == pytest.approx(start + 2 * (10 + 2))


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        ("", "empty file"),
        ("12abc", "not a non-negative 64-bit integer: '12abc'"),
        ("-5", "not a non-negative"),
    ],
)
def test_bad_counter_file_marks_only_that_zone_down(
    tmp_path: Path, content: str, reason: str
) -> None:
    two_socket_server(tmp_path)
    set_energy(tmp_path, "intel-rapl:1", content)
    readings = {(r.key.domain, r.key.device): r for r in RaplSource(tmp_path).read().counters}
    bad = readings[("package", "1")]
    assert bad.raw_uj is None and reason in (bad.error or "")
    assert readings[("package", "0")].raw_uj == 1_000_000
    assert readings[("dram", "1")].raw_uj == 200_000


def test_unreadable_counter_file(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    counter = tmp_path / "class/powercap/intel-rapl:0:2/energy_uj"
    counter.unlink()
    counter.mkdir()  # read() on a directory fails even for root
    source = RaplSource(tmp_path)
    readings = {(r.key.domain, r.key.device): r for r in source.read().counters}
    assert readings[("dram", "0")].raw_uj is None
    assert "Is a directory" in (readings[("dram", "0")].error or "")
    (status,) = source.read().status
    assert status.up and status.detail == "7 of 8 zones readable"


def test_zone_without_max_range_is_down_with_reason(tmp_path: Path) -> None:
    add_zone(tmp_path, "intel-rapl:0", "package-0", 5, "garbage")
    (reading,) = RaplSource(tmp_path).read().counters
    assert reading.raw_uj is None
    assert "wraps cannot be corrected" in (reading.error or "")


def test_probe_reports_missing_powercap_with_a_fix(tmp_path: Path) -> None:
    (finding,) = RaplSource(tmp_path).probe()
    assert not finding.ok and finding.detail == "directory missing"
    assert "modprobe intel_rapl_msr" in finding.fix
    assert RaplSource(tmp_path).why_not_measuring_cpu().startswith("no RAPL package zone")


def test_a_held_counter_file_is_read_with_one_pread_and_opened_again_after_an_error(
    tmp_path: Path,
) -> None:
    import os

    from wattwise.sources.sysfs import CounterFileError, HeldFile

    counter = tmp_path / "energy_uj"
    counter.write_text("100\n")
    held = HeldFile(str(counter))
    assert held.read(64) == b"100\n"
    fd = held._fd
    counter.write_text("250\n")  # in place, as the kernel's attribute changes
    assert held.read(64) == b"250\n" and held._fd == fd  # the same descriptor, read again
    assert fd is not None
    os.close(fd)  # as a removed cgroup's file answers ENODEV: the next read opens it again
    counter.write_text("300\n")
    assert held.read(64) == b"300\n"
    held.close()
    counter.unlink()
    with pytest.raises(CounterFileError, match="file missing"):
        held.read(64)
    assert held._fd is None


def test_rapl_keeps_its_zone_files_open_and_closes_them(tmp_path: Path) -> None:
    two_socket_server(tmp_path)
    source = RaplSource(tmp_path)
    source.read()
    set_energy(tmp_path, "intel-rapl:0", 2_000_000)
    assert {(r.key.domain, r.key.device): r.raw_uj for r in source.read().counters}[
        ("package", "0")
    ] == 2_000_000
    assert len(open_files_under(tmp_path)) == 8
    source.close()
    assert len(open_files_under(tmp_path)) == 0


def test_amd_rapl_without_a_dram_zone_says_what_its_node_total_covers(tmp_path: Path) -> None:
    """AMD Zen's RAPL driver registers package (and core) zones, never dram."""
    add_zone(tmp_path, "intel-rapl:0", "package-0", 1_000_000, PACKAGE_MAX_UJ)
    add_zone(tmp_path, "intel-rapl:0:0", "core", 500_000, PACKAGE_MAX_UJ)
    findings = {f.item: f for f in RaplSource(tmp_path).probe()}
    assert "no dram zone" in findings["dram"].detail and findings["dram"].ok
    two_socket_server(tmp_path / "intel")
    assert "dram" not in {f.item for f in RaplSource(tmp_path / "intel").probe()}
