"""The quick start as a newcomer meets it (issue 16): `make run`'s command, as a user who is
not root, on this machine as it is (its cgroups, no RAPL, no GPU), keeps everything in the
checkout's .wattwise/, serves /metrics, stops on Ctrl-C, and leaves nothing elsewhere."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
import pytest

from tests.support.cli import command, free_port

REPO = Path(__file__).resolve().parents[2]
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
DEADLINE_S = 30  # generous bound so a slow CI machine never hangs the suite; not a target


def make_dry_run(*args: str) -> str:
    # Not as a sub-make of `make test`: that would print "Entering directory" around it.
    env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MAKELEVEL", "MFLAGS")}
    result = subprocess.run(
        ["make", "-n", "--no-print-directory", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.skipif(shutil.which("make") is None, reason="make is missing")
def test_make_run_installs_no_test_tools_and_uses_the_quick_start_config() -> None:
    planned = make_dry_run("run", "VENV=/nonexistent/venv")  # as on a fresh clone
    assert "install -e ." in planned and "[test]" not in planned
    assert "--no-cache-dir" in planned  # pip keeps nothing in ~/.cache
    assert planned.strip().endswith("wattwise run --config config/quickstart.yaml")


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root to start the agent as another user (setpriv)",
)
def test_the_quick_start_runs_as_a_user_and_keeps_its_state_in_the_checkout() -> None:
    # Not pytest's tmp_path: its parents are root's, mode 0700, and SQLite opens a relative
    # path through its absolute form, which that user could then not traverse.
    tmp_path = Path(tempfile.mkdtemp(prefix="wattwise-quickstart-"))
    tmp_path.chmod(0o755)
    try:
        _quick_start(tmp_path)
    finally:
        shutil.rmtree(tmp_path)


def _quick_start(tmp_path: Path) -> None:
    checkout, home = tmp_path / "checkout", tmp_path / "home"
    shutil.copytree(REPO / "config", checkout / "config")
    home.mkdir()
    for path in (tmp_path, checkout, checkout / "config", home):
        os.chown(path, NOBODY, NOBODY)
    runs = subprocess.run([*AS_NOBODY, *command("--version")], capture_output=True, timeout=60)
    if runs.returncode != 0:
        pytest.skip(f"the virtual environment is not readable by uid {NOBODY}")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WATTWISE_")} | {
        "HOME": str(home)
    }
    port = free_port()
    listen = ("--listen", f"127.0.0.1:{port}")  # the quick start's port may be taken here
    agent = subprocess.Popen(
        [*AS_NOBODY, *command("run", "--config", "config/quickstart.yaml", *listen)],
        cwd=checkout,
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        _served(agent, f"http://127.0.0.1:{port}/metrics", "wattwise_ledger_up 1.0")
        assert (checkout / ".wattwise" / "wattwise.sock").is_socket()
    finally:
        agent.send_signal(signal.SIGINT)  # Ctrl-C
        _, log = agent.communicate(timeout=DEADLINE_S)
    assert agent.returncode == 0, log
    problems = [line for line in log.splitlines() if re.search(r" (ERROR|CRITICAL) |denied", line)]
    assert problems == [], log
    assert sorted(p.name for p in (checkout / ".wattwise").iterdir()) == ["ledger.db"]
    assert list(home.iterdir()) == []  # nothing in the user's home
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkout", "home"]


def _served(agent: subprocess.Popen, url: str, line: str) -> None:
    """Waits until the agent's page has `line`: here, its ledger in the checkout written."""
    deadline = time.monotonic() + DEADLINE_S
    while True:
        assert agent.poll() is None, agent.stderr.read() if agent.stderr else ""
        try:
            if line in httpx.get(url, timeout=2).text.splitlines():
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"the quick start never served {line}"
        time.sleep(0.2)


@pytest.mark.skipif(shutil.which("make") is None, reason="make is missing")
def test_make_clean_leaves_only_what_git_tracks(tmp_path: Path) -> None:
    """It left .hypothesis/ and build/ (issue 16); the quick start's .wattwise/ goes too."""
    shutil.copy(REPO / "Makefile", tmp_path)
    (tmp_path / "README.md").write_text("kept\n")
    left = [".venv", ".pytest_cache", ".ruff_cache", ".hypothesis", ".wattwise", "build", "dist"]
    for name in [*left, "wattwise.egg-info"]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "x").write_text("")
    result = subprocess.run(["make", "clean"], cwd=tmp_path, capture_output=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["Makefile", "README.md"]
