"""Issue item 1: one bad number from outside never stops the ledger, for that job or any other.

Every number that enters from outside (a job's environment, cgroup and proc files, RAPL, NVML,
the work API) is checked where it enters; nothing non-finite reaches a total."""

from __future__ import annotations

import json
import logging
import math
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.hostile_node import (
    NEIGHBOUR,
    POISONED,
    POISONED_PID,
    HostileNode,
    exported_energy_j,
    non_finite,
)


def assert_ledger_keeps_up(node: HostileNode, snapshots: list) -> None:
    for snapshot in snapshots:
        assert non_finite(snapshot) == []
        assert snapshot.ledger_up is True
    last = snapshots[-1]
    for key in ("slurm:12", "slurm:13"):
        exported = exported_energy_j(last, key)
        assert math.isfinite(exported)
        assert node.ledger_energy_j(key) == pytest.approx(exported, rel=1e-9, abs=1e-9)
    assert exported_energy_j(last, "slurm:13") > 0


def test_item1_inf_cpus_in_a_jobs_environment_never_stops_the_ledger(
    tmp_path: Path, fake_nvml: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    node = HostileNode(tmp_path, fake_nvml)
    node.poison(SLURM_CPUS_ON_NODE="inf")
    node.start()
    try:
        with caplog.at_level(logging.WARNING):
            snapshots = node.ticks(5)
        assert_ledger_keeps_up(node, snapshots)
    finally:
        node.close()
    assert "SLURM_CPUS_ON_NODE" in caplog.text and f"/proc/{POISONED_PID}/environ" in caplog.text
    # The neighbour's account is all on disk after a clean stop too.
    assert node.ledger_energy_j("slurm:13") == pytest.approx(
        exported_energy_j(snapshots[-1], "slurm:13")
    )


def ask(path: Path, line: bytes) -> dict:
    """One raw request on the work socket, and its answer (a timeout fails the test)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        sock.connect(str(path))
        sock.sendall(line + b"\n")
        answer = sock.makefile("rb").readline()
    assert answer, f"no answer to {line[:60]!r}"
    return json.loads(answer)


HUGE = b"1" + b"0" * 400


@pytest.mark.parametrize(
    "request_line",
    [
        b'{"unit":"steps","total":Infinity,"job":"12"}',
        b'{"unit":"steps","total":NaN,"job":"12"}',
        b'{"unit":"steps","add":Infinity,"job":"12"}',
        b'{"unit":"steps","add":-Infinity,"job":"12"}',
        b'{"unit":"steps","add":1e308,"job":"12"}',
        b'{"unit":"steps","add":' + HUGE + b',"job":"12"}',
        b'{"unit":"steps","total":' + HUGE + b',"job":"12"}',
        b'{"unit":"steps","add":1e400,"job":"12"}',
        b'{"unit":"steps","add":' + b"[" * 1900 + b"]" * 1900 + b',"job":"12"}',
        b'{"unit":"steps","add":' + b"1" * 5000 + b',"job":"12"}',
    ],
)
def test_item1_work_api_answers_every_bad_number_with_a_refusal(
    tmp_path: Path, fake_nvml: ModuleType, request_line: bytes
) -> None:
    node = HostileNode(tmp_path, fake_nvml).start()
    sock = tmp_path / "wattwise.sock"
    try:
        node.ticks(1)  # the job is known
        for _ in range(2):  # twice: a second infinite total once made inf - inf = NaN
            answer = ask(sock, request_line)
            assert answer["ok"] is False
            assert any(word in answer["error"] for word in ("number", "JSON", "longer than"))
        assert ask(sock, b'{"unit":"steps","add":5,"job":"12"}')["total_units"] == 5
        assert_ledger_keeps_up(node, node.ticks(3))
    finally:
        node.close()


# Where a number enters, and how a test puts a bad one there. Text goes into files as it is;
# NVML values go into the fake driver's state as Python numbers.
TEXT_VALUES = ["nan", "inf", "-inf", "1e308", HUGE.decode(), "-1", "1e400", "0x10", "", "9" * 23]
NUMBER_VALUES = [math.nan, math.inf, -math.inf, 1e308, 10**400, -1, 2**64]


def _environ(variable: str) -> Callable[[HostileNode, object], None]:
    def inject(node: HostileNode, value: object) -> None:
        node.poison(**{variable: str(value)})

    return inject


def _cgroup_usage(node: HostileNode, value: object) -> None:
    (node.cgroups / POISONED.lstrip("/") / "cpu.stat").write_text(f"usage_usec {value}\n")


def _proc_stat(node: HostileNode, value: object) -> None:
    (node.procfs / "stat").write_text(f"cpu  {value} 0 0 1000 0 0 0 0 0 0\ncpu0 1 0 0 1 0 0 0\n")


def _rapl(node: HostileNode, value: object) -> None:
    (node.sysfs / "class/powercap/intel-rapl:0/energy_uj").write_text(f"{value}\n")


def _nvml(field: str) -> Callable[[HostileNode, object], None]:
    def inject(node: HostileNode, value: object) -> None:
        node.gpus[0][field] = value

    return inject


def _nvml_samples(node: HostileNode, value: object) -> None:
    node.gpus[0]["samples"] = [[POISONED_PID, 10**6 * node.step, value]]


def _work(mode: str) -> Callable[[HostileNode, object], None]:
    def inject(node: HostileNode, value: object) -> None:
        server = node.agent.work_server
        assert server is not None
        line = b'{"unit": "tokens", "%s": %s, "job": "12"}' % (mode.encode(), str(value).encode())
        server.handle(line, POISONED_PID, 0)

    return inject


ENTRY_POINTS: dict[str, tuple[Callable[[HostileNode, object], None], list]] = {
    "environ SLURM_CPUS_ON_NODE": (_environ("SLURM_CPUS_ON_NODE"), TEXT_VALUES),
    "environ SLURM_JOB_GPUS": (_environ("SLURM_JOB_GPUS"), [*TEXT_VALUES, "0-4294967295"]),
    "cgroup cpu.stat": (_cgroup_usage, TEXT_VALUES),
    "/proc/stat": (_proc_stat, TEXT_VALUES),
    "RAPL energy_uj": (_rapl, TEXT_VALUES),
    "NVML energy": (_nvml("energy_mj"), NUMBER_VALUES),
    "NVML power": (_nvml("power_mw"), NUMBER_VALUES),
    "NVML utilisation": (_nvml("util_gpu"), NUMBER_VALUES),
    "NVML temperature": (_nvml("temp_c"), NUMBER_VALUES),
    "NVML memory": (_nvml("mem_used"), NUMBER_VALUES),
    "NVML process samples": (_nvml_samples, NUMBER_VALUES),
    "work API add": (_work("add"), [*TEXT_VALUES[:3], "1e308", HUGE.decode(), "NaN", "Infinity"]),
    "work API total": (_work("total"), ["Infinity", "NaN", "1e308", HUGE.decode(), "-1"]),
}


@st.composite
def poison(draw: st.DrawFn) -> tuple[str, object]:
    entry = draw(st.sampled_from(sorted(ENTRY_POINTS)))
    return entry, draw(st.sampled_from(ENTRY_POINTS[entry][1]))


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(poisons=st.lists(poison(), min_size=1, max_size=3))
def test_item1_no_bad_number_at_any_entry_stops_the_ledger(
    fake_nvml: ModuleType, poisons: list[tuple[str, object]]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        node = HostileNode(Path(tmp), fake_nvml)
        node.start()

        def inject() -> None:
            for entry, value in poisons:
                ENTRY_POINTS[entry][0](node, value)

        try:
            node.ticks(1)
            snapshots = node.ticks(3, after_advance=inject)
            assert_ledger_keeps_up(node, snapshots)
        finally:
            node.close()


def test_item1_the_neighbour_is_measured_while_the_poisoned_job_runs(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    """Both jobs stay on /metrics with finite counters; NEIGHBOUR keeps moving."""
    node = HostileNode(tmp_path, fake_nvml)
    node.poison(SLURM_CPUS_ON_NODE="nan", SLURM_JOB_GPUS="0-4294967295")
    node.start()
    try:
        first, *_, last = node.ticks(4)
    finally:
        node.close()
    assert exported_energy_j(last, "slurm:13") > exported_energy_j(first, "slurm:13")
    assert NEIGHBOUR.endswith("13")


def test_item1_the_ledger_drops_a_non_finite_figure_and_writes_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The last gate: a NaN that no entry check foresaw never fails the write of the others."""
    from tests.support.book import book, record, totals
    from wattwise.model import JobEnergy, JobSeen, UnattributedEnergy

    accounts = book(tmp_path / "ledger.db")
    jobs = [JobSeen(f"slurm:{j}", "slurm", "slurm", str(j)) for j in (12, 13)]
    for t in range(3):
        written = record(
            accounts,
            1_700_000_000 + t,
            jobs,
            [
                JobEnergy("slurm:12", "package", "rapl", "active", math.nan),
                JobEnergy("slurm:12", "gpu", "nvml", "active", 1.0, math.inf),
                JobEnergy("slurm:13", "package", "rapl", "active", 2.0, 0.5),
            ],
            [UnattributedEnergy("package", "rapl", "idle", -math.inf)],
            work={("slurm:12", "tokens"): math.nan, ("slurm:13", "tokens"): 7.0},
        )
        assert written
    accounts.ledger.close()
    reopened = book(tmp_path / "ledger.db")
    assert totals(reopened, "slurm:12") == {}
    assert totals(reopened, "slurm:13") == {
        ("energy", "package", "rapl", "active"): [6.0, 1.5],
        ("work", "tokens", "", ""): [21.0, 0.0],
    }
    assert not any(s[0] == "unattributed" for s in totals(reopened, ""))
    reopened.ledger.close()
    assert "non-finite figure for slurm:12" in caplog.text


def test_item1_finite_only_is_the_gate_before_the_running_totals() -> None:
    from wattwise.attribution import finite_only
    from wattwise.model import JobEnergy, UnattributedEnergy

    good = JobEnergy("slurm:13", "gpu", "nvml", "active", 3.0, 1.0)
    charged, left, dropped = finite_only(
        [JobEnergy("slurm:12", "gpu", "nvml", "active", math.nan), good],
        [UnattributedEnergy("gpu", "nvml", "idle", 1.0, math.inf)],
    )
    assert (charged, left) == ([good], [])
    assert len(dropped) == 2 and "slurm:12" in dropped[0]


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("WATTWISE_CARBON__STALE_AFTER_S", "inf"),
        ("WATTWISE_CARBON__PUE_RATIO", "nan"),
        ("WATTWISE_JOBS__FINISHED_GRACE_S", "1e308"),
        ("WATTWISE_EMBODIED__SERVER_EMBODIED_G", "1e300"),
        ("WATTWISE_EMBODIED__GPU_LIFESPAN_S", "1"),
        ("WATTWISE_EMBODIED__GPU_EMBODIED_G", '{"H100": 1e400}'),
        ("WATTWISE_CARBON__ELECTRICITYMAPS_LAT_LON", "[91, 0]"),
        ("WATTWISE_LEDGER__MINUTELY_RETENTION_S", "Infinity"),
    ],
)
def test_item1_config_numbers_must_be_finite_and_in_range(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    from wattwise.config import load_config
    from wattwise.errors import ConfigError

    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=variable.split("__")[-1].lower()):
        load_config()


@pytest.mark.parametrize("value", ["nan", "inf", "1e400", "0x10", ""])
def test_item1_the_cpu_estimate_survives_a_garbled_proc_stat(
    tmp_path: Path, fake_nvml: ModuleType, value: str
) -> None:
    node = HostileNode(tmp_path, fake_nvml).start(rapl={"enabled": False})
    try:
        node.ticks(1)
        snapshots = node.ticks(3, after_advance=lambda: _proc_stat(node, value))
    finally:
        node.close()
    assert_ledger_keeps_up(node, snapshots)
    (estimate,) = [d for d in snapshots[-1].domains if d.key.source == "estimate"]
    assert estimate.up and estimate.energy_j > 0  # the idle floor is still counted


def test_item1_rejected_values_are_logged_naming_their_origin_once(
    tmp_path: Path, fake_nvml: ModuleType, caplog: pytest.LogCaptureFixture
) -> None:
    node = HostileNode(tmp_path, fake_nvml).start()
    try:
        with caplog.at_level(logging.WARNING):
            node.ticks(3, after_advance=lambda: _cgroup_usage(node, "nan"))
            for value in ("Infinity", "1e308", "-1"):  # three reports, one line: no log flood
                _work("add")(node, value)
    finally:
        node.close()
    cgroup_lines = [r for r in caplog.records if "CPU time of cgroup" in r.getMessage()]
    assert len(cgroup_lines) == 1 and POISONED in cgroup_lines[0].getMessage()
    work_lines = [r for r in caplog.records if "work API report" in r.getMessage()]
    assert len(work_lines) == 1 and f"pid {POISONED_PID} uid 0" in work_lines[0].getMessage()
