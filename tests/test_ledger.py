from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.carbon.embodied import EmbodiedSplit
from agent.ledger import SCHEMA_VERSION, JobSeen, Ledger, LedgerError
from agent.model import JobEnergy, UnattributedEnergy

JOB = JobSeen("slurm:42", "slurm", "slurm", "42", "train", "alice")


def tick(ledger: Ledger, t: float, joules: float = 1.0) -> bool:
    return ledger.record(
        t,
        jobs=[JOB],
        energy=[
            JobEnergy("slurm:42", "package", "rapl", "active", joules),
            JobEnergy("slurm:42", "gpu", "nvml", "idle", 2 * joules),
        ],
        unattributed=[UnattributedEnergy("package", "rapl", "system", 0.5)],
    )


def test_totals_survive_a_reopen_and_the_file_is_wal(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    for t in range(10):
        assert tick(ledger, 1_700_000_000 + t)
    ledger.close()
    reopened = Ledger(path)
    totals = reopened.job_totals()
    assert totals[("slurm:42", "package", "rapl", "active")] == 10.0
    assert totals[("slurm:42", "gpu", "nvml", "idle")] == 20.0
    assert reopened.open_jobs() == {"slurm:42"}
    reopened.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    assert db.execute("SELECT energy_j FROM unattributed_energy").fetchone()[0] == 5.0
    first, last, user = db.execute(
        "SELECT first_seen_unix_s, last_seen_unix_s, user FROM jobs"
    ).fetchone()
    assert (first, last, user) == (1_700_000_000, 1_700_000_009, "alice")


def test_minutely_series_and_retention(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path, minutely_retention_s=120)
    base = 1_699_999_980  # a whole minute
    for t in (0, 30, 61):
        tick(ledger, base + t)
    query = (
        "SELECT minute_unix_s, energy_j FROM job_energy_minutely "
        "WHERE domain = 'package' ORDER BY minute_unix_s"
    )
    assert sqlite3.connect(path).execute(query).fetchall() == [(base, 2.0), (base + 60, 1.0)]
    tick(ledger, base + 250)  # 120 s of retention back from here is base + 130
    ledger.close()
    assert sqlite3.connect(path).execute(query).fetchall() == [(base + 240, 1.0)]
    assert Ledger(path).job_totals()[("slurm:42", "package", "rapl", "active")] == 4.0


def test_ended_job_is_closed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    tick(ledger, 100.0)
    ledger.record(200.0, ended=["slurm:42"])
    assert ledger.open_jobs() == set()
    ledger.close()


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


def test_a_locked_ledger_keeps_the_tick_in_memory_then_catches_up(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    ledger = Ledger(path)
    tick(ledger, 1.0)
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    assert not tick(ledger, 2.0)
    assert "is locked by another process" in (ledger.last_error or "")
    assert ledger.job_totals()[("slurm:42", "package", "rapl", "active")] == 2.0
    other.execute("ROLLBACK")
    other.close()
    assert tick(ledger, 3.0) and ledger.last_error is None
    ledger.close()
    reopened = Ledger(path)
    assert reopened.job_totals()[("slurm:42", "package", "rapl", "active")] == 3.0
    reopened.close()


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
    ledger = Ledger(tiny_disk / "ledger.db")
    assert tick(ledger, 1_700_000_000)
    filler = fill(tiny_disk)
    failures = 0
    for t in range(1, 200):  # enough new minutes that new pages are needed
        failures += not tick(ledger, 1_700_000_000 + 60 * t)
    assert failures > 0 and "full" in (ledger.last_error or "")
    filler.unlink()
    assert tick(ledger, 1_700_000_000 + 60 * 200)
    ledger.close()
    reopened = Ledger(tiny_disk / "ledger.db")
    totals = reopened.job_totals()
    reopened.close()
    assert totals[("slurm:42", "package", "rapl", "active")] == 201.0


def test_a_schema_1_ledger_is_migrated_in_place_keeping_its_data(tmp_path: Path) -> None:
    from agent.ledger import MIGRATIONS

    path = tmp_path / "ledger.db"
    old = sqlite3.connect(path, isolation_level=None)
    old.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version=1; COMMIT;")
    old.execute("INSERT INTO jobs VALUES ('slurm:1', 'slurm', 'slurm', '1', '', '', 0, 0, NULL)")
    old.execute("INSERT INTO job_energy VALUES ('slurm:1', 'gpu', 'nvml', 'active', 42.0)")
    old.close()
    ledger = Ledger(path)
    ledger.record(10.0, energy=[JobEnergy("slurm:1", "gpu", "nvml", "active", 8.0, 3.5)])
    assert ledger.job_totals()[("slurm:1", "gpu", "nvml", "active")] == 50.0
    assert ledger.job_carbon_totals()[("slurm:1", "gpu", "nvml", "active")] == 3.5
    assert ledger.carbon_total_g() == 3.5
    ledger.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION


def test_embodied_grams_are_kept_per_job_and_component_across_reopen(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    split = EmbodiedSplit({"slurm:1": {"gpu": 4.0, "server": 1.5}}, {"gpu": 12.0, "server": 0.5})
    ledger = Ledger(path)
    ledger.record(60.0, [JobSeen("slurm:1", "slurm", "slurm", "1")], embodied=split)
    ledger.record(120.0, embodied=split)
    ledger.close()
    reopened = Ledger(path)
    assert reopened.job_embodied_totals() == {("slurm:1", "gpu"): 8.0, ("slurm:1", "server"): 3.0}
    assert reopened.unreserved_embodied_totals() == {"gpu": 24.0, "server": 1.0}
    minutes = reopened._db.execute(
        "SELECT minute_unix_s, sum(carbon_g) FROM job_embodied_minutely GROUP BY 1 ORDER BY 1"
    ).fetchall()
    reopened.close()
    assert minutes == [(60, 5.5), (120, 5.5)]
