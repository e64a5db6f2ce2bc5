from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import ROOT
from tests.support.book import book, record, totals
from wattwise.accounts.ledger import Ledger, LedgerError
from wattwise.accounts.schema import APPLICATION_ID, SCHEMA_5, SCHEMA_VERSION
from wattwise.accounts.totals import RunningTotals
from wattwise.model import EmbodiedSplit, JobEnergy, JobSeen, UnattributedEnergy

JOB = JobSeen("slurm:42", "slurm", "slurm", "42", "train", "alice")
FIXTURES = ROOT / "tests" / "support" / "fixtures" / "ledgers"


def tick(accounts: RunningTotals, t: float, joules: float = 1.0, force: bool = True) -> bool:
    return record(
        accounts,
        t,
        [JOB],
        [
            JobEnergy("slurm:42", "package", "rapl", "active", joules, joules / 10),
            JobEnergy("slurm:42", "gpu", "nvml", "idle", 2 * joules),
        ],
        [UnattributedEnergy("package", "rapl", "system", 0.5)],
        force=force,
    )


def test_totals_survive_a_reopen_and_the_file_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path)
    for t in range(10):
        assert tick(accounts, 1_700_000_000 + t)
    accounts.ledger.close()
    reopened = book(path)
    job = totals(reopened, "slurm:42")
    assert job[("energy", "package", "rapl", "active")] == [10.0, pytest.approx(1.0)]
    assert job[("energy", "gpu", "nvml", "idle")] == [20.0, 0.0]
    assert totals(reopened, "")[("unattributed", "package", "rapl", "system")] == [5.0, 0.0]
    assert totals(reopened, "")[("node", "operational", "", "")][1] == pytest.approx(1.0)
    assert reopened.ledger.open_jobs() == {"slurm:42"}
    reopened.ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    first, last, user = db.execute(
        "SELECT first_seen_unix_s, last_seen_unix_s, user FROM jobs WHERE id != 0"
    ).fetchone()
    assert (first, last, user) == (1_700_000_000, 1_700_000_009, "alice")


def test_exported_totals_are_the_committed_ones_bit_for_bit(tmp_path: Path) -> None:
    """What /metrics shows after a restart equals what it showed before, to the last bit:
    the in-memory committed totals add exactly what the ledger added."""
    path = tmp_path / "ledger.db"
    accounts = book(path)
    for t in range(200):  # sums of awkward binary fractions, as real joules are
        tick(accounts, 1_700_000_000 + t, joules=0.1 + t * 1e-7, force=t % 7 == 0)
    accounts.commit(1_700_000_200, force=True)
    before = {key: totals(accounts, key) for key in ("slurm:42", "")}
    accounts.ledger.close()
    reopened = book(path)
    assert {key: totals(reopened, key) for key in ("slurm:42", "")} == before
    reopened.ledger.close()


def test_only_committed_totals_are_shown(tmp_path: Path) -> None:
    accounts = RunningTotals(
        grace_s=600, ledger=Ledger(tmp_path / "ledger.db"), commit_interval_s=5
    )
    tick(accounts, 1_700_000_000, force=False)  # the first commit happens at once
    shown = accounts.views()[0].totals.energy_j
    for t in range(1, 5):
        tick(accounts, 1_700_000_000 + t, force=False)
        assert accounts.views()[0].totals.energy_j == shown  # counted, not committed yet: not shown
    tick(accounts, 1_700_000_005, force=False)
    assert accounts.views()[0].totals.energy_j != shown
    accounts.ledger.close()


def test_minutes_are_written_once_closed_and_kept_for_their_retention(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path, minutely_retention_s=3600)
    base = 1_699_999_980  # a whole minute
    query = (
        "SELECT minute, amount FROM minutes JOIN series s ON s.id = series "
        "WHERE s.a = 'package' ORDER BY minute"
    )
    for t in (0, 30, 61):
        tick(accounts, base + t, force=False)
    # The first minute closed at base + 60 and was written by the commit at base + 61.
    assert sqlite3.connect(path).execute(query).fetchall() == [(base, 2_000_000)]
    tick(accounts, base + 2 * 3600)  # hours later: the rollup runs, old minutes go
    accounts.ledger.close()
    db = sqlite3.connect(path)
    assert db.execute(query).fetchall() == [(base + 2 * 3600, 1_000_000)]
    hours = db.execute(
        "SELECT hour, sum(amount) FROM hours JOIN series s ON s.id = series "
        "WHERE s.a = 'package' GROUP BY hour"
    ).fetchall()
    assert hours == [(base // 3600 * 3600, 3_000_000)]  # base and base + 61 are one hour
    assert totals(book(path), "slurm:42")[("energy", "package", "rapl", "active")][0] == 4.0


def test_an_ended_job_is_closed_and_stays_closed(tmp_path: Path) -> None:
    accounts = book(tmp_path / "ledger.db")
    tick(accounts, 100.0)
    record(accounts, 200.0)  # no job present any more
    assert accounts.ledger.open_jobs() == set()
    record(accounts, 205.0)  # later commits, within its grace period, do not reopen it
    record(accounts, 210.0)
    assert accounts.ledger.open_jobs() == set()
    record(accounts, 200.0 + accounts.grace_s + 1)  # nor past it
    record(accounts, 200.0 + accounts.grace_s + 2)
    assert accounts.ledger.open_jobs() == set()
    ended = sqlite3.connect(tmp_path / "ledger.db").execute(
        "SELECT ended_unix_s FROM jobs WHERE job_key = 'slurm:42'"
    )
    assert ended.fetchone() == (200.0,)
    accounts.ledger.close()


def test_a_job_that_comes_back_before_the_commit_is_running_not_ended(tmp_path: Path) -> None:
    accounts = book(tmp_path / "ledger.db")
    accounts.commit_interval_s = 5.0
    tick(accounts, 100.0)  # committed (forced)
    record(accounts, 101.0, force=False)  # gone for one tick
    tick(accounts, 102.0, force=False)  # and back
    assert accounts.commit(106.0)
    assert accounts.ledger.open_jobs() == {"slurm:42"}
    accounts.ledger.close()


def test_a_job_back_after_its_grace_period_continues_from_the_ledger(tmp_path: Path) -> None:
    """Its counters resume from the ledger's totals, as they would after a restart: never from
    zero, and never a jump up at the next restart."""
    path = tmp_path / "ledger.db"
    accounts = book(path)
    tick(accounts, 100.0, joules=3.0)
    record(accounts, 200.0)  # ended
    record(accounts, 200.0 + accounts.grace_s + 1)  # past its grace period: no longer shown
    assert totals(accounts, "slurm:42") == {}
    tick(accounts, 2000.0, joules=1.0)  # the same job again (a requeued Slurm job keeps its id)
    shown = totals(accounts, "slurm:42")[("energy", "package", "rapl", "active")][0]
    assert shown == 4.0
    accounts.ledger.close()
    assert totals(book(path), "slurm:42")[("energy", "package", "rapl", "active")][0] == shown


def test_work_for_a_job_no_tick_saw_is_dropped_and_the_ledger_stays_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A job that starts, reports work and ends between two ticks has no row in the ledger:
    its work cannot be kept, and must not make the ledger look damaged."""
    accounts = book(tmp_path / "ledger.db")
    assert record(accounts, 100.0, [JOB], work={("slurm:7", "tokens"): 5.0})
    assert record(accounts, 101.0, [JOB], work={("slurm:42", "tokens"): 3.0})
    assert accounts.ledger.last_error is None and accounts.ledger.is_open
    assert totals(accounts, "slurm:42")[("work", "tokens", "", "")] == [3.0, 0.0]
    assert "work reported for slurm:7, a job no tick saw, is dropped" in caplog.text
    accounts.ledger.close()


def test_a_wall_clock_stepped_back_does_not_hold_the_commits(tmp_path: Path) -> None:
    accounts = book(tmp_path / "ledger.db")
    accounts.commit_interval_s = 5.0
    tick(accounts, 1000.0, force=False)
    assert accounts.commit(1000.0, monotonic_s=10.0)
    tick(accounts, 400.0, force=False)  # NTP stepped the wall clock back ten minutes
    assert accounts.commit(401.0, monotonic_s=16.0)  # 6 s later by the monotonic clock
    assert totals(accounts, "slurm:42")[("energy", "gpu", "nvml", "idle")][0] == 4.0
    accounts.ledger.close()


def test_a_minute_reached_twice_keeps_both_parts(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path)
    accounts.commit_interval_s = 1000.0
    base = 1_700_000_040  # a whole minute
    tick(accounts, base + 1, force=False)  # minute A
    tick(accounts, base + 61, force=False)  # minute B: A is closed, not yet written
    tick(accounts, base + 2, force=False)  # the wall clock stepped back into minute A
    tick(accounts, base + 62, force=False)
    assert accounts.commit(base + 63, force=True)
    accounts.ledger.close()
    rows = sqlite3.connect(path).execute(
        "SELECT minute, amount FROM minutes JOIN series s ON s.id = series "
        "WHERE s.a = 'package' ORDER BY minute"
    )
    assert rows.fetchall() == [(base, 2_000_000), (base + 60, 2_000_000)]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"this is not a database, but somebody's notes" * 100, "not an SQLite file"),
        (None, "not a wattwise ledger"),
    ],
)
def test_a_file_that_is_not_our_ledger_is_refused_and_left_untouched(
    tmp_path: Path, content: bytes | None, message: str
) -> None:
    path = tmp_path / "ledger.db"
    if content is None:
        other = sqlite3.connect(path)
        other.execute("CREATE TABLE recipes (name TEXT)")
        other.commit()
        other.close()
    else:
        path.write_bytes(content)
    before = path.read_bytes()
    with pytest.raises(LedgerError, match=message):
        Ledger(path)
    assert path.read_bytes() == before


def test_a_ledger_from_a_newer_wattwise_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    db.close()
    with pytest.raises(LedgerError, match="upgrade wattwise"):
        Ledger(path)


def test_a_locked_ledger_holds_the_exported_totals_then_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path)
    tick(accounts, 1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    assert not tick(accounts, 2.0)
    assert "is locked by another process" in (accounts.ledger.last_error or "")
    # Not committed, so not shown: what /metrics shows is what a restart would resume from.
    assert totals(accounts, "slurm:42")[("energy", "package", "rapl", "active")][0] == 1.0
    other.execute("ROLLBACK")
    other.close()
    assert tick(accounts, 3.0) and accounts.ledger.last_error is None
    assert totals(accounts, "slurm:42")[("energy", "package", "rapl", "active")][0] == 3.0
    accounts.ledger.close()


@pytest.fixture
def tiny_disk() -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("needs root to mount a small tmpfs")
    mount = Path(f"/tmp/wattwise-full-{uuid.uuid4().hex[:8]}")
    mount.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        mount.rmdir()
        pytest.skip(f"cannot mount tmpfs here: {result.stderr.strip()}")
    yield mount
    if subprocess.run(["umount", str(mount)], check=False).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    mount.rmdir()


def fill(disk: Path) -> Path:
    """Takes every free byte of `disk` with one file, returned (unlink it to free them)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_loses_nothing_and_the_ledger_catches_up(tiny_disk: Path) -> None:
    accounts = book(tiny_disk / "ledger.db")
    assert tick(accounts, 1_700_000_000)
    filler = fill(tiny_disk)
    failures = 0
    for t in range(1, 200):  # enough new minutes that new pages are needed
        failures += not tick(accounts, 1_700_000_000 + 60 * t)
    assert failures > 0 and "full" in (accounts.ledger.last_error or "")
    filler.unlink()
    assert tick(accounts, 1_700_000_000 + 60 * 200)
    accounts.ledger.close()
    reopened = book(tiny_disk / "ledger.db")
    assert totals(reopened, "slurm:42")[("energy", "package", "rapl", "active")][0] == 201.0
    reopened.ledger.close()


def schema4_copy(tmp_path: Path) -> Path:
    """A copy of a ledger written by wattwise 0.1 itself (tests/support/fixtures/ledgers)."""
    path = tmp_path / "ledger.db"
    shutil.copy(FIXTURES / "schema4.db", path)
    return path


def test_a_schema_4_ledger_is_migrated_in_place_keeping_every_figure(tmp_path: Path) -> None:
    path = schema4_copy(tmp_path)
    old = sqlite3.connect(path)
    energy = {
        (k, ("energy", d, s, st)): [j, g]
        for k, d, s, st, j, g in old.execute("SELECT * FROM job_energy")
    }
    embodied = {(k, c): g for k, c, g in old.execute("SELECT * FROM job_embodied")}
    work = {(k, u): n for k, u, n in old.execute("SELECT * FROM job_work")}
    unattributed = {
        ("unattributed", d, s, r): [j, g]
        for d, s, r, j, g in old.execute("SELECT * FROM unattributed_energy")
    }
    minutes_j = old.execute("SELECT sum(energy_j) FROM job_energy_minutely").fetchone()[0]
    node_g = sum(g for _, g in energy.values()) + sum(g for _, g in unattributed.values())
    old.close()

    accounts = book(path)
    assert accounts.ledger.open_jobs() == {"slurm:41"}  # slurm:42 had ended
    alice = totals(accounts, "slurm:41")
    for (key, series), sums in energy.items():
        if key == "slurm:41":
            assert alice[series] == sums
    assert alice[("embodied", "gpu", "", "")][1] == embodied[("slurm:41", "gpu")]
    assert alice[("work", "tokens", "", "")][0] == work[("slurm:41", "tokens")]
    node = totals(accounts, "")
    for series, sums in unattributed.items():
        assert node[series] == sums
    assert node[("node", "operational", "", "")][1] == pytest.approx(node_g, rel=1e-12)
    # The counters go on from there, and the history reads as before.
    record(accounts, 1_795_435_600, [JobSeen("slurm:41", "slurm", "slurm", "41")])
    accounts.ledger.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")} == {
        "jobs",
        "series",
        "totals",
        "minutes",
        "hours",
        "meta",
        "node_info",
    }
    migrated_j = db.execute(
        "SELECT sum(amount) FROM minutes JOIN series s ON s.id = series "
        "WHERE s.measure = 'energy' AND minute < 1795435600"
    ).fetchone()[0]
    assert migrated_j / 1e6 == pytest.approx(minutes_j, rel=1e-9)


def test_embodied_grams_are_kept_per_job_and_component_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    split = EmbodiedSplit({"slurm:1": {"gpu": 4.0, "server": 1.5}}, {"gpu": 12.0, "server": 0.5})
    job = JobSeen("slurm:1", "slurm", "slurm", "1")
    accounts = book(path)
    record(accounts, 60.0, [job], embodied=split)
    record(accounts, 120.0, [job], embodied=split)
    accounts.ledger.close()
    reopened = book(path)
    assert totals(reopened, "slurm:1") == {
        ("embodied", "gpu", "", ""): [0.0, 8.0],
        ("embodied", "server", "", ""): [0.0, 3.0],
    }
    node = totals(reopened, "")
    assert node[("unreserved", "gpu", "", "")] == [0.0, 24.0]
    assert node[("node", "embodied", "", "")] == [0.0, 11.0]
    minutes = reopened.ledger._db.execute(
        "SELECT minute, sum(carbon_ng) FROM minutes GROUP BY 1 ORDER BY 1"
    ).fetchall()
    reopened.ledger.close()
    assert minutes == [(60, 5_500_000_000), (120, 5_500_000_000)]


def test_a_report_notes_lost_minutes_only_once_retention_has_deleted_some(tmp_path: Path) -> None:
    """Seen on a real GPU node: `report --since 1h` on a ledger a minute old said the minutes
    before it were 'no longer kept' when there had never been any."""
    from wattwise.accounts.reports import window_notes

    path = tmp_path / "ledger.db"
    accounts = book(path, minutely_retention_s=3600)
    base = 1_699_999_980
    for t in (0, 30, 61, 2830):  # the last tick is in the next hour: rollup and retention ran
        tick(accounts, base + t, force=False)
    assert window_notes(sqlite3.connect(path), base - 3600) == []  # nothing was ever deleted
    tick(accounts, base + 3 * 3600)  # now the first minutes are past their retention
    accounts.ledger.close()
    (note,) = window_notes(sqlite3.connect(path), base - 3600)
    assert "no longer kept" in note
    assert window_notes(sqlite3.connect(path), base + 3 * 3600 - 60) == []  # inside retention


def test_the_ledger_names_the_node_and_cluster_its_jobs_ran_on(tmp_path: Path) -> None:
    """Schema 6 (issue 15): a fleet export must say where each job ran. A schema 5 ledger
    gains the table in place; the first write records the names, a restart under new ones
    updates them."""
    path = tmp_path / "ledger.db"
    db = sqlite3.connect(path)
    db.executescript(
        f"BEGIN; {SCHEMA_5}; PRAGMA user_version=5; PRAGMA application_id={APPLICATION_ID}; COMMIT;"
    )
    db.close()
    for node, cluster in (("gpu-001", "hpc-east"), ("gpu-001.east", "hpc-east-2")):
        accounts = RunningTotals(600.0, Ledger(path, node=node, cluster=cluster), 5.0)
        record(accounts, 1_795_435_600, [JobSeen("slurm:41", "slurm", "slurm", "41")])
        accounts.ledger.close()
        db = sqlite3.connect(path)
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 6
        assert dict(db.execute("SELECT key, value FROM node_info")) == {
            "node": node,
            "cluster": cluster,
        }
        db.close()
