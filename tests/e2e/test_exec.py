"""`wattwise exec` on this machine's real cgroups (no systemd here, so the cgroup path)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import subprocess_env
from tests.support.cli import command, wattwise
from wattwise.jobs.cgroups import classify
from wattwise.jobs.exec import job_id_for

REAL = Path("/sys/fs/cgroup")
needs_real_cgroups = pytest.mark.skipif(
    os.geteuid() != 0
    or Path("/run/systemd/system").is_dir()
    or not (REAL / "cpuacct" / "cpuacct.usage").is_file(),
    reason="needs root, no systemd, and a v1 cpuacct hierarchy (this machine's layout)",
)


def test_job_ids_are_safe_path_names() -> None:
    assert job_id_for("my train/run #3", 42) == "my_train_run_3-42"
    assert job_id_for("///", 7) == "job-7"


@needs_real_cgroups
def test_the_command_runs_in_its_own_job_cgroup_and_its_status_passes_through() -> None:
    result = wattwise(
        "exec",
        "--job-name",
        "resnet",
        "--",
        "sh",
        "-c",
        "cat /proc/self/cgroup; exit 3",
        env=subprocess_env(None),
    )
    assert result.returncode == 3, result.stderr
    (line,) = [ln for ln in result.stdout.splitlines() if "cpuacct" in ln]
    path = line.split(":", 2)[2]
    ref = classify(path)
    assert ref is not None and ref.scheduler == "exec" and ref.job_id.startswith("resnet-")
    assert not (REAL / "cpuacct" / path.lstrip("/")).exists()  # removed once the command ended


@needs_real_cgroups
def test_a_command_killed_by_a_signal_exits_128_plus_the_signal() -> None:
    result = wattwise("exec", "--", "sh", "-c", "kill -TERM $$", env=subprocess_env(None))
    assert result.returncode == 128 + 15


@needs_real_cgroups
def test_sigterm_to_wattwise_exec_reaches_the_command() -> None:
    # A Python child: dash's `wait` can miss a TERM that lands just before it starts waiting,
    # which made a shell-based version of this test hang under load.
    child = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))\n"
        "print('ready', flush=True)\n"
        "time.sleep(30)"
    )
    process = subprocess.Popen(
        command("exec", "--", sys.executable, "-c", child),
        env=subprocess_env(None),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout.readline().strip() == "ready"
    process.terminate()
    assert process.wait(timeout=30) == 42


def test_missing_command_and_no_command(tmp_path: Path) -> None:
    env = subprocess_env(None, WATTWISE_CGROUP_ROOT=str(tmp_path))  # no hierarchy: no account
    result = wattwise("exec", "--", "no-such-command-xyz", env=env)
    assert result.returncode == 127 and "command not found: no-such-command-xyz" in result.stderr
    result = wattwise("exec", env=env)
    assert result.returncode == 2 and "give a command after --" in result.stderr
    result = wattwise("exec", "--", "true", env=env)
    assert result.returncode == 0 and "running true without an account" in result.stderr


CHILD_REPORTS_SIGNALS = (
    "import signal, sys\n"
    "def note(signum, frame):\n"
    "    print(signal.Signals(signum).name, flush=True)\n"
    "    if signum == signal.SIGTERM:\n"
    "        sys.exit(7)\n"
    "for name in ('SIGUSR1', 'SIGUSR2', 'SIGQUIT', 'SIGHUP', 'SIGALRM', 'SIGTERM'):\n"
    "    signal.signal(getattr(signal, name), note)\n"
    "print('ready', flush=True)\n"
    "while True:\n"
    "    signal.pause()\n"
)


@needs_real_cgroups
def test_item6_every_catchable_signal_reaches_the_command_and_the_wrapper_survives() -> None:
    """Slurm's --signal=USR1@60 and friends once killed the wrapper, orphaning the command,
    losing its status and leaving its cgroup behind."""
    process = subprocess.Popen(
        command("exec", "--job-name", "sig", "--", sys.executable, "-c", CHILD_REPORTS_SIGNALS),
        env=subprocess_env(None),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        cgroups = list((REAL / "cpuacct" / "wattwise").glob(f"exec-sig-{process.pid}"))
        assert len(cgroups) == 1
        for name in ("SIGUSR1", "SIGUSR2", "SIGQUIT", "SIGHUP", "SIGALRM"):
            process.send_signal(getattr(signal, name))
            assert process.stdout.readline().strip() == name
            assert process.poll() is None  # the wrapper is still there
        process.send_signal(signal.SIGTERM)
        assert process.stdout.readline().strip() == "SIGTERM"
        assert process.wait(timeout=30) == 7  # the command's status, passed through
    finally:
        if process.poll() is None:
            process.kill()
    assert not cgroups[0].exists()  # removed when the command exited


@needs_real_cgroups
def test_item6_a_cgroup_left_by_a_killed_wrapper_is_removed_and_not_a_job() -> None:
    from wattwise.jobs.tracker import JobTracker

    stale = REAL / "cpuacct" / "wattwise" / "exec-old-999999999"  # no such pid
    stale.mkdir(parents=True, exist_ok=True)
    try:
        tracker = JobTracker(REAL, Path("/proc"), ["exec"])
        assert not any(
            ref.cgroup.endswith("exec-old-999999999") for ref in tracker.observe().jobs.values()
        )
        result = wattwise("exec", "--", "true", env=subprocess_env(None))
        assert result.returncode == 0, result.stderr
        assert not stale.exists()
    finally:
        if stale.exists():
            stale.rmdir()


def test_item6_an_exec_cgroup_counts_as_a_job_only_while_populated(tmp_path: Path) -> None:
    from tests.support.fixtures.trees import make_v2, proc_stat
    from wattwise.jobs.tracker import JobTracker

    make_v2(tmp_path, {"/wattwise/exec-a-1": 10, "/wattwise/exec-b-2": 10})
    (tmp_path / "wattwise/exec-a-1/cgroup.events").write_text("populated 1\nfrozen 0\n")
    (tmp_path / "wattwise/exec-b-2/cgroup.events").write_text("populated 0\nfrozen 0\n")
    proc_stat(tmp_path / "proc", user=1, idle=1)
    jobs = JobTracker(tmp_path, tmp_path / "proc", ["exec"]).observe().jobs
    assert list(jobs) == ["exec:a-1"]
