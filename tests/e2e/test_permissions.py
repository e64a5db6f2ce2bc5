"""RAPL as an unprivileged user sees it: energy_uj mode 0400 since CVE-2020-8694."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures.trees import two_socket_server
from wattwise.sources.rapl import RaplSource

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop to another user")


@pytest.fixture
def world_traversable_tree() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="wattwise-perm-"))
    root.chmod(0o755)
    two_socket_server(root)
    for counter in root.rglob("energy_uj"):
        counter.chmod(0o400)
    yield root
    shutil.rmtree(root)


def probe_as(user: str, sysfs: Path) -> dict:
    """Runs the real RAPL probe in a forked child that has dropped to `user`."""
    entry = pwd.getpwnam(user)
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, probe, report, exit without running pytest's atexit
        try:
            os.close(read_end)
            os.setgroups([])
            os.setgid(entry.pw_gid)
            os.setuid(entry.pw_uid)
            source = RaplSource(sysfs)
            result = {
                "findings": [vars_of(f) for f in source.probe()],
                "why": source.why_not_measuring_cpu(),
            }
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as pipe:
        data = pipe.read()
    os.waitpid(pid, 0)
    return json.loads(data)


def vars_of(finding) -> dict:
    return {k: getattr(finding, k) for k in ("item", "ok", "detail", "fix")}


def test_unreadable_energy_uj_names_the_cve_and_the_fixes(world_traversable_tree: Path) -> None:
    result = probe_as("nobody", world_traversable_tree)
    package = next(f for f in result["findings"] if f["item"] == "package-0")
    assert not package["ok"] and "energy_uj: permission denied" in package["detail"]
    assert "CVE-2020-8694" in package["fix"] and "udev" in package["fix"]
    assert result["why"] == "RAPL package zones unreadable (energy_uj: permission denied)"


def test_root_reads_the_same_tree(world_traversable_tree: Path) -> None:
    assert RaplSource(world_traversable_tree).why_not_measuring_cpu() is None
