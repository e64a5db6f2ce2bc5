"""`wattwise exec` on this machine's real cgroups (no systemd here, so the cgroup path)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.jobs.cgroups import classify
from agent.jobs.exec import job_id_for
from tests.cli import command, wattwise
from tests.conftest import subprocess_env

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
