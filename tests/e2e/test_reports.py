"""`wattwise jobs`, `job show` and `report` over a real ledger file, through the real CLI."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.support.book import book, record
from tests.support.cli import wattwise
from tests.support.providers import Script, serve
from wattwise.model import EmbodiedSplit, JobEnergy, JobSeen

T0 = 1_800_000_000  # a whole minute
ALICE = JobSeen("slurm:42", "slurm", "slurm", "42", "train", "alice")
BOB = JobSeen("kubernetes:pod-b", "kubernetes", "pod", "pod-b", "serve", "bob")


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.db"
    accounts = book(path, minutely_retention_s=1e9, node="gpu-001", cluster="hpc-east")
    for minute in range(10):  # alice: 10 minutes; bob: the last 5, then ends
        now = T0 + 60 * minute
        seen = [ALICE] + ([BOB] if minute >= 5 else [])
        energy = [
            JobEnergy("slurm:42", "gpu", "nvml", "active", 600.0),
            JobEnergy("slurm:42", "package", "rapl", "idle", 60.0),
        ]
        if minute >= 5:
            # bob's node had no RAPL: its CPU energy is the agent's estimate
            energy.append(
                JobEnergy("kubernetes:pod-b", "package", "estimate", "active", 120.0, 0.1)
            )
        record(accounts, now, seen, energy)
        # The grid intensity charged: the live provider, then its fallback for two minutes.
        provider = ("electricitymaps", "FR") if minute < 8 else ("table", "WORLD")
        accounts.note_intensity(now, 60.0, *provider, "average lifecycle")
    record(accounts, T0 + 600, [ALICE])  # bob has ended
    accounts.ledger.close()
    return path


def run(*args: str) -> tuple[int, str, str]:
    result = wattwise(*args, env=subprocess_env(None))
    return result.returncode, result.stdout, result.stderr


def test_jobs_lists_running_jobs_and_all_with_the_flag(ledger: Path) -> None:
    code, out, err = run("jobs", "--ledger", str(ledger), "--json")
    assert code == 0, err
    (alice,) = json.loads(out)
    assert alice["job_key"] == "slurm:42" and alice["user"] == "alice"
    assert alice["energy_j"] == {"gpu": 6000.0, "package": 600.0}
    assert alice["active_j"] == 6000.0 and alice["idle_j"] == 600.0
    assert alice["duration_s"] == 600.0 and alice["mean_power_w"] == 11.0
    assert alice["measured_j"] == 6600.0 and alice["estimated_j"] == 0.0  # NVML and RAPL
    code, out, _ = run("jobs", "--ledger", str(ledger), "--all")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["JOB", "STATE", "DURATION_S"]
    header = lines[0].split()
    assert header[:5] == ["JOB", "STATE", "DURATION_S", "ENERGY_J", "ESTIMATED_J"]
    (bob,) = [line.split() for line in lines if line.startswith("kubernetes:pod-b")]
    assert bob[1] == "ended" and bob[3] == bob[4] == "600.0"  # all of it the CPU estimate


def test_job_show_by_id(ledger: Path) -> None:
    code, out, _ = run("job", "show", "pod-b", "--ledger", str(ledger))
    (bob,) = json.loads(out)
    assert code == 0 and bob["ended_unix_s"] == T0 + 600 and bob["energy_j"] == {"package": 600.0}
    assert bob["estimated_j"] == 600.0 and bob["measured_j"] == 0.0
    code, _, err = run("job", "show", "nope", "--ledger", str(ledger))
    assert code == 1 and "no job 'nope' in the ledger" in err


def test_report_groups_a_time_window(ledger: Path) -> None:
    window = ["--since", str(T0 + 5 * 60), "--until", "2027-01-15T08:10:00+00:00"]
    code, out, err = run(
        "report", *window, "--group-by", "user", "--format", "csv", "--ledger", str(ledger)
    )
    assert code == 0, err
    rows = {r["user"]: r for r in csv.DictReader(io.StringIO(out))}
    assert float(rows["alice"]["energy_j"]) == 5 * 660.0
    assert float(rows["alice"]["gpu_j"]) == 5 * 600.0
    assert float(rows["bob"]["active_j"]) == 5 * 120.0 and rows["bob"]["jobs"] == "1"
    assert "600.0 J of 3900.0 J (15%) is the agent's CPU estimate" in err
    # Which intensity the window's carbon used, and for how long: never unnamed.
    assert "carbon intensity: electricitymaps zone FR (average lifecycle) for 60% of" in err
    assert "carbon intensity: table zone WORLD (average lifecycle) for 40% of" in err
    # How the energy was obtained, never one figure: alice's was measured, bob's estimated.
    assert (float(rows["alice"]["measured_j"]), float(rows["alice"]["estimated_j"])) == (3300, 0)
    assert (float(rows["bob"]["measured_j"]), float(rows["bob"]["estimated_j"])) == (0, 600)
    code, out, _ = run(
        "report",
        "--since",
        str(T0),
        "--until",
        str(T0 + 120),
        "--group-by",
        "scheduler",
        "--format",
        "json",
        "--ledger",
        str(ledger),
    )
    data = json.loads(out)
    assert data["rows"] == [
        {
            "scheduler": "slurm",
            "energy_j": 1320.0,
            "measured_j": 1320.0,
            "estimated_j": 0.0,
            "active_j": 1200.0,
            "idle_j": 120.0,
            "jobs": 1,
            "gpu_j": 1200.0,
            "package_j": 120.0,
        }
    ]


def test_ledger_export_writes_finished_jobs_with_node_cluster_and_basis(ledger: Path) -> None:
    """Issue 15: a GHG inventory's rows. Only bob's pod has ended; alice's job still runs."""
    window = ("--until", "2028-01-01", "--ledger", str(ledger))
    code, out, err = run("ledger", "export", "--since", str(T0), *window)
    assert code == 0, err
    (bob,) = list(csv.DictReader(io.StringIO(out)))
    assert (bob["node"], bob["cluster"]) == ("gpu-001", "hpc-east")
    assert bob["job_key"] == "kubernetes:pod-b" and float(bob["ended_unix_s"]) == T0 + 600
    assert float(bob["energy_j"]) == float(bob["estimated_j"]) == 600.0
    assert float(bob["measured_j"]) == 0.0
    assert float(bob["estimated_operational_g"]) == pytest.approx(0.5)
    assert float(bob["operational_g"]) == pytest.approx(0.5)
    code, out, err = run("ledger", "export", "--since", str(T0), "--format", "jsonl", *window)
    assert code == 0, err
    (line,) = out.splitlines()
    assert json.loads(line)["estimated_j"] == 600.0
    code, out, _ = run("ledger", "export", "--since", str(T0 + 601), *window)
    assert code == 0 and len(out.splitlines()) == 1  # the header: nothing ended since
    code, _, err = run("ledger", "export", "--since", "1d", "--until", "7d", *window[2:])
    assert code == 2 and "is not before" in err
    code, _, err = run("ledger", "export", "--format", "xml", *window[2:])
    assert code == 2 and "'csv', 'jsonl'" in err


def test_a_csv_cell_never_runs_as_a_spreadsheet_formula(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path, minutely_retention_s=1e9)
    evil = JobSeen("exec:1", "exec", "exec", "1", '=HYPERLINK("http://x")', "mallory")
    record(accounts, T0, [evil], [JobEnergy("exec:1", "gpu", "nvml", "active", 10.0)])
    record(accounts, T0 + 60, [])
    accounts.ledger.close()
    window = ("--since", str(T0 - 60), "--until", "2028-01-01", "--ledger", str(path))
    code, out, err = run("ledger", "export", *window)
    assert code == 0, err
    (row,) = list(csv.DictReader(io.StringIO(out)))
    assert row["name"] == '\'=HYPERLINK("http://x")'


def test_reports_say_what_is_wrong(tmp_path: Path, ledger: Path) -> None:
    code, _, err = run("jobs", "--ledger", str(tmp_path / "absent.db"))
    assert code == 1 and "no ledger at" in err
    code, _, err = run("report", "--since", "last tuesday", "--ledger", str(ledger))
    assert code == 2 and "'last tuesday' is not a time" in err
    code, _, err = run("report", "--group-by", "team", "--ledger", str(ledger))
    assert code == 2 and "--group-by team or cluster needs --prometheus" in err


def test_sci_report_gives_e_i_o_m_and_sci_per_job_hour(tmp_path: Path) -> None:
    path = tmp_path / "ledger.db"
    accounts = book(path, minutely_retention_s=1e9)
    job = JobSeen("slurm:7", "slurm", "slurm", "7", "finetune", "carol")
    for minute in range(120):  # 1 kJ a minute; the grid goes from 100 to 300 g/kWh at 1 h
        grams_per_kwh = 100.0 if minute < 60 else 300.0
        grams = 1000.0 / 3.6e6 * grams_per_kwh
        embodied = EmbodiedSplit({"slurm:7": {"gpu": 0.08, "server": 0.02}}, {"gpu": 0.5})
        record(
            accounts,
            T0 + 60 * minute,
            [job],
            [JobEnergy("slurm:7", "gpu", "nvml", "active", 1000.0, grams)],
            embodied=embodied,
        )
    record(accounts, T0 + 7200, [job])
    record(accounts, T0 + 7201)  # it has ended
    accounts.ledger.close()

    code, out, err = run(
        "report",
        "--sci",
        "--since",
        str(T0),
        "--until",
        str(T0 + 7200),
        "--format",
        "json",
        "--ledger",
        str(path),
    )
    assert code == 0, err
    (row,) = json.loads(out)["rows"]
    assert row["job"] == "slurm:7" and row["job_hours"] == 2.0
    assert row["energy_j"] == pytest.approx(120_000.0)
    assert row["operational_g"] == pytest.approx(60 / 3.6e3 * 100 + 60 / 3.6e3 * 300)
    # Energy was even, so the effective intensity is the plain mean of the two hours.
    assert row["intensity_g_per_kwh"] == pytest.approx(200.0)
    assert row["embodied_g"] == pytest.approx(12.0)
    assert row["sci_g_per_job_hour"] == pytest.approx((row["operational_g"] + 12.0) / 2)

    code, out, err = run(
        "report",
        "--sci",
        "--since",
        str(T0 + 3600),
        "--until",
        str(T0 + 7200),
        "--format",
        "csv",
        "--ledger",
        str(path),
    )
    assert code == 0, err
    (second_hour,) = csv.DictReader(io.StringIO(out))
    assert float(second_hour["job_hours"]) == 1.0
    assert float(second_hour["intensity_g_per_kwh"]) == pytest.approx(300.0)
    assert float(second_hour["sci_g_per_job_hour"]) == pytest.approx(5.0 + 6.0)
    code, out, _ = run(
        "report", "--sci", "--since", str(T0), "--until", str(T0 + 7200), "--ledger", str(path)
    )
    header = out.splitlines()[0].split()
    assert code == 0 and header[:2] == ["JOB", "JOBS"] and header[-1] == "SCI_G_PER_JOB_HOUR"


def test_the_fleet_report_refuses_partial_data_and_says_what_is_wrong() -> None:
    """`report --prometheus` through the real CLI against a storage that warns, fails or does
    not know the job: a clear message and an exit code, never a smaller total."""
    partial = {
        "status": "success",
        "warnings": ["store gateway east-2 unreachable"],
        "data": {"resultType": "vector", "result": []},
    }
    window = ("--since", "2026-11-01", "--until", "2026-11-02")
    with serve(Script(body=partial)) as url:
        code, _, err = run("report", *window, "--prometheus", url)
        assert code == 3 and "east-2 unreachable" in err and "--allow-partial" in err
        code, _, err = run("report", *window, "--prometheus", url, "--allow-partial")
        assert code == 0 and "PARTIAL" in err
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    with serve(Script(body=empty)) as url:
        code, _, err = run("report", *window, "--prometheus", url, "--job", "4242")
        assert code == 1 and "no job '4242'" in err
        code, _, err = run("report", *window, "--prometheus", url, "--per", "week")
        assert code == 2 and "'week' is not one of 'day', 'month'" in err
    code, _, err = run("report", *window, "--job", "42", "--per", "day")
    assert code == 2 and "--per, --job need --prometheus" in err  # never silently ignored
    code, _, err = run("report", *window, "--ledger", "x.db", "--prometheus", "http://x")
    assert code == 2 and "--ledger is for the node's ledger" in err
    code, _, err = run("report", *window, "--prometheus", "ftp://tsdb")
    assert code == 2 and "not an http" in err
    code, _, err = run("report", "--since", "1d", "--until", "7d", "--prometheus", "http://x")
    assert code == 2 and "is not before" in err
    # Times that are no time (issue 16: NaN passed every check, as a start after any end).
    for nonsense in ("99999999999999999999", "nan", "inf", "-5", "1e400", "999999999999d"):
        code, _, err = run("report", "--since", nonsense)
        assert code == 2 and "out of range" in err, (nonsense, err)
    code, _, err = run("ledger", "export", "--until", "-inf")
    assert code == 2 and "out of range" in err
    # Choices are choices: refused with the list, before anything is read.
    code, _, err = run("report", "--format", "xml")
    assert code == 2 and "'table', 'csv', 'json'" in err
    # A window of 20,000 days --per day would be 220,000 queries: refused before the first.
    fleet = ("--prometheus", "http://127.0.0.1:9")
    code, _, err = run("report", "--since", "0", "--per", "day", *fleet)
    assert code == 2 and "more than 1,000 periods" in err
    empty = {"status": "success", "data": {"resultType": "vector", "result": []}}
    with serve(Script(body=empty)) as url:  # December 9999 has no next month
        window = ("--since", "9999-12-15", "--until", "9999-12-31T23:00")
        code, _, err = run("report", *window, "--prometheus", url, "--per", "month")
        assert code == 0 and "Traceback" not in err, err
