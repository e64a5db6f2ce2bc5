"""The work API over a real Unix socket of a real `wattwise run`: reports from root, from inside a
job as another user, a refused report for someone else's job, counter resets, and the ledger's
efficiency figures through `report --sci`."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.e2e.test_jobs import STEP, Node, job_energy, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S
from tests.support.cli import wattwise
from tests.support.fixtures.trees import add_process, h100, write_nvml_state
from wattwise.work.client import WorkReportError, report_work

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


@pytest.fixture
def socket_dir() -> Iterator[Path]:
    """Where user nobody can reach the socket (pytest's tmp_path is root-only)."""
    path = Path(tempfile.mkdtemp(prefix="wattwise-work-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path)


def report_as(user: str, procfs: Path | None, **request: object) -> dict:
    """Reports from a forked child that has dropped to `user`; with `procfs`, the child is
    first placed in job 12 of the fixture tree, as if it ran inside that job."""
    entry = pwd.getpwnam(user)
    go_read, go_write = os.pipe()
    out_read, out_write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.read(go_read, 1)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            try:
                answer = {"ok": True, **report_work(**request)}  # type: ignore[arg-type]
            except WorkReportError as exc:
                answer = {"ok": False, "error": str(exc)}
            os.write(out_write, json.dumps(answer).encode())
        finally:
            os._exit(0)
    if procfs is not None:
        add_process(procfs, pid, f"{STEP}/user/task_0")
    os.write(go_write, b"x")
    os.close(out_write)
    with os.fdopen(out_read) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def test_work_reports_are_checked_counted_and_kept(node: Node, socket_dir: Path) -> None:  # noqa: F811
    sock = socket_dir / "wattwise.sock"
    agent = node.start(WATTWISE_WORK__ENABLED="true", WATTWISE_WORK__SOCKET_PATH=str(sock))
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        env = subprocess_env(None)
        result = wattwise(
            "work", "--units", "tokens", "500", "--job", "12", "--socket", str(sock), env=env
        )
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == "slurm:12: 500 tokens"

        # A cumulative counter: 100, 250, then the job restarts and counts from 40.
        for total in (100, 250, 40):
            answer = report_work("samples", total=total, job="slurm:12", socket_path=sock)
        assert answer["total_units"] == 290

        refused = report_as("nobody", None, unit="tokens", add=7, job="12", socket_path=sock)
        assert not refused["ok"]
        assert "nobody may not report work for slurm:12 (run by alice)" in refused["error"]
        inside = report_as("nobody", node.procfs, unit="tokens", add=7, socket_path=sock)
        assert inside == {"ok": True, "job": "slurm:12", "unit": "tokens", "total_units": 507}

        result = wattwise(
            "work", "--units", "furlongs", "1", "--job", "12", "--socket", str(sock), env=env
        )
        assert result.returncode == 1 and "unit must be one of tokens, samples" in result.stderr
        result = wattwise("work", "--units", "tokens", "1", "--socket", str(sock), env=env)
        assert result.returncode == 1 and "is not in any job" in result.stderr

        write_nvml_state(node.nvml, [h100(0, energy_mj=1_360_000, pids=[4242]), h100(1)])
        m = agent.wait_for(lambda m: job_energy(m, "12", "gpu", "active", "nvml") == 360.0)
        work = {
            dict(k[1:])["unit"]: v for k, v in m.items() if k[0] == "wattwise_job_work_units_total"
        }
        assert work == {"tokens": 507.0, "samples": 290.0}
        gpu_use = {
            dict(k[1:])["state"]: v
            for k, v in m.items()
            if k[0] == "wattwise_node_gpu_energy_by_use_joules_total"
        }
        assert gpu_use["active"] == 360.0
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)
    assert not sock.exists()  # removed on a clean stop

    db = sqlite3.connect(node.ledger)
    work = db.execute(
        "SELECT s.a, t.amount FROM totals t JOIN jobs j ON j.id = t.job "
        "JOIN series s ON s.id = t.series WHERE j.job_key = 'slurm:12' AND s.measure = 'work'"
    )
    assert dict(work) == {
        "tokens": 507.0,
        "samples": 290.0,
    }
    result = wattwise(
        "report",
        "--sci",
        "--since",
        "1h",
        "--format",
        "json",
        "--ledger",
        str(node.ledger),
        env=subprocess_env(None),
    )
    (row,) = [r for r in json.loads(result.stdout)["rows"] if r["job"] == "slurm:12"]
    assert row["tokens"] == 507.0
    assert row["tokens_per_j"] == pytest.approx(507.0 / row["energy_j"])
    assert row["j_per_tokens"] == pytest.approx(row["energy_j"] / 507.0)
    assert row["g_per_tokens"] == pytest.approx(row["carbon_g"] / 507.0)
