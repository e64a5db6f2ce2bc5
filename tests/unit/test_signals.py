"""SIGINT and SIGTERM stop both daemons (wattwise.signals): the first asks for a stop within an
interval, a second forces the exit at once, as a stop stuck on a hung write must be forceable."""

from __future__ import annotations

import signal
import subprocess
import sys

import pytest

SCRIPT = """
import os, signal, sys, time
from wattwise.signals import stop_requested
with stop_requested() as stop:
    os.kill(os.getpid(), signal.{name})
    assert stop.wait(5), "the first signal did not ask for a stop"
    print("asked to stop", flush=True)
    if sys.argv[1] == "twice":
        os.kill(os.getpid(), signal.{name})
        time.sleep(10)  # a stop that hangs
print("stopped normally", flush=True)
"""


@pytest.mark.parametrize("name", ["SIGINT", "SIGTERM"])
def test_a_first_signal_asks_to_stop_and_a_second_exits_at_once(name: str) -> None:
    script = SCRIPT.format(name=name)
    once = subprocess.run(
        [sys.executable, "-c", script, "once"], capture_output=True, text=True, timeout=30
    )
    assert once.returncode == 0, once.stderr
    assert once.stdout.splitlines() == ["asked to stop", "stopped normally"]
    twice = subprocess.run(
        [sys.executable, "-c", script, "twice"], capture_output=True, text=True, timeout=30
    )
    assert twice.returncode == 128 + getattr(signal, name)
    assert twice.stdout.splitlines() == ["asked to stop"]
    assert "again, exiting now" in twice.stderr
