from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.fixtures.trees import make_v2
from wattwise.jobs.discovery import Hierarchy, find_hierarchy, scan
from wattwise.sources.sysfs import CounterFileError

CTR = "ab" * 32
POD = "5b2d6f8e_1a3c_4e5f_9a8b_7c6d5e4f3a2b"
POD_CGROUP = f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{POD}.slice"


def test_scan_finds_each_job_once_and_stops_at_its_top(tmp_path: Path) -> None:
    make_v2(
        tmp_path,
        {
            "/system.slice/slurmstepd.scope/job_12/step_0/user/task_0": 10,
            "/system.slice/slurmstepd.scope/job_12/step_batch": 5,
            f"{POD_CGROUP}/cri-containerd-{CTR}.scope": 7,
            f"/system.slice/docker-{CTR}.scope": 3,
            "/system.slice/sshd.service": 1,
            "/user.slice/user-1000.slice/session-2.scope": 1,
        },
    )
    jobs = scan(find_hierarchy(tmp_path))
    assert {(r.scheduler, r.job_id) for r in jobs.values()} == {
        ("slurm", "12"),
        ("kubernetes", POD.replace("_", "-")),
        ("docker", CTR[:12]),
        ("systemd", "sshd"),
    }
    assert "/system.slice/slurmstepd.scope/job_12" in jobs


def test_v2_cpu_seconds_and_bad_files(tmp_path: Path) -> None:
    make_v2(tmp_path, {"/system.slice/a.service": 2_500_000})
    hierarchy = find_hierarchy(tmp_path)
    assert hierarchy.version == 2
    assert hierarchy.cpu_seconds("/system.slice/a.service") == 2.5
    (tmp_path / "system.slice/a.service/cpu.stat").write_text("usage_usec lots\n")
    with pytest.raises(CounterFileError, match="usage_usec: not a non-negative 64-bit integer"):
        hierarchy.cpu_seconds("/system.slice/a.service")
    with pytest.raises(CounterFileError):
        hierarchy.cpu_seconds("/system.slice/gone.service")


def test_hybrid_tree_prefers_the_v1_cpuacct_controller(tmp_path: Path) -> None:
    make_v2(tmp_path / "unified", {})
    job = tmp_path / "cpuacct" / "slurm" / "uid_0" / "job_3"
    job.mkdir(parents=True)
    (tmp_path / "cpuacct" / "cpuacct.usage").write_text("999\n")
    (job / "cpuacct.usage").write_text("1500000000\n")
    hierarchy = find_hierarchy(tmp_path)
    assert hierarchy == Hierarchy(tmp_path / "cpuacct", 1)
    assert list(scan(hierarchy)) == ["/slurm/uid_0/job_3"]
    assert hierarchy.cpu_seconds("/slurm/uid_0/job_3") == 1.5


def test_no_cgroup_tree(tmp_path: Path) -> None:
    assert find_hierarchy(tmp_path) is None


REAL_V1 = Path("/sys/fs/cgroup/cpuacct")


@pytest.fixture
def real_v1_job() -> Iterator[Path]:
    """A real cgroup in this machine's v1 cpuacct hierarchy, laid out as Slurm lays out a job."""
    if os.geteuid() != 0 or not (REAL_V1 / "cpuacct.usage").is_file():
        pytest.skip("needs root and a v1 cpuacct hierarchy")
    base = REAL_V1 / f"wattwise-test-{uuid.uuid4().hex[:8]}"
    job = base / "slurm" / "uid_0" / "job_77" / "step_0"
    try:
        job.mkdir(parents=True)
    except OSError as exc:
        pytest.skip(f"cannot create cgroups here: {exc}")
    yield job
    for directory in sorted(base.rglob("*"), key=lambda p: len(p.parts), reverse=True):
        if directory.is_dir():
            directory.rmdir()
    base.rmdir()


def test_real_v1_cgroup_cpu_time_follows_a_busy_process(real_v1_job: Path) -> None:
    hierarchy = Hierarchy(real_v1_job.parents[3], 1)  # the test's own subtree as the root
    (ref,) = scan(hierarchy).values()
    assert (ref.scheduler, ref.job_id, ref.uid) == ("slurm", "77", 0)
    before = hierarchy.cpu_seconds(ref.cgroup)
    # A child process that moves itself into the step's cgroup, then burns CPU.
    burn = (
        f"open({str(real_v1_job / 'cgroup.procs')!r}, 'w').write(str(__import__('os').getpid()));"
        "import time\nend = time.process_time() + 0.3\nwhile time.process_time() < end: pass"
    )
    subprocess.run([sys.executable, "-c", burn], check=True, timeout=60)
    used = hierarchy.cpu_seconds(ref.cgroup) - before
    assert used >= 0.3  # the job's counter holds its step's CPU time
