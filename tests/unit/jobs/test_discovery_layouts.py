"""The walk over the layouts production fleets run (issue 14): pods under containerd.service,
pods inside a kind node's container, quadlet containers inside their service; the innermost
job wins, and directories that rarely hold jobs are not listed every tick."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.support.fixtures.trees import add_process, make_v2, proc_stat
from wattwise.jobs.discovery import LISTING_REFRESH_S, Listings, find_hierarchy, scan
from wattwise.jobs.gpu_processes import job_from_proc
from wattwise.jobs.process_cpu import CLOCK_TICKS_PER_S
from wattwise.jobs.tracker import JobTracker

CTR = "ab" * 32
CTR2 = "cd" * 32
UID_ = "5b2d6f8e_1a3c_4e5f_9a8b_7c6d5e4f3a2b"
UID = UID_.replace("_", "-")
COLON = f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:"
KIND_POD = (
    f"/system.slice/docker-{CTR}.scope/kubelet.slice/kubelet-kubepods.slice/"
    f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice"
)
QUADLET = f"/system.slice/web.service/libpod-payload-{CTR}"


def found(root: Path, schedulers: set[str] | None = None, **kwargs) -> set[tuple[str, str, str]]:
    jobs = scan(find_hierarchy(root), schedulers=schedulers, **kwargs)
    return {(r.scheduler, r.job_id, cg) for cg, r in jobs.items()}


def test_pods_under_containerd_service_are_found_with_the_systemd_kind_off(
    tmp_path: Path,
) -> None:
    """Each container is a directory of its own; the tracker adds them up as the pod."""
    make_v2(tmp_path, {f"{COLON}{CTR}": 5, f"{COLON}{CTR2}": 3, "/system.slice/sshd.service": 1})
    assert found(tmp_path, {"kubernetes", "slurm"}) == {
        ("kubernetes", UID, f"{COLON}{CTR}"),
        ("kubernetes", UID, f"{COLON}{CTR2}"),
    }
    # With the systemd kind on, containerd.service holds them: the pods win, not the service.
    assert found(tmp_path, {"kubernetes", "systemd"}) == {
        ("kubernetes", UID, f"{COLON}{CTR}"),
        ("kubernetes", UID, f"{COLON}{CTR2}"),
        ("systemd", "sshd", "/system.slice/sshd.service"),
    }


def test_pods_inside_a_kind_node_win_over_its_container(tmp_path: Path) -> None:
    make_v2(tmp_path, {f"{KIND_POD}/cri-containerd-{CTR2}.scope": 5})
    assert found(tmp_path, {"kubernetes", "docker"}) == {("kubernetes", UID, KIND_POD)}
    assert found(tmp_path, {"kubernetes"}) == {("kubernetes", UID, KIND_POD)}
    assert found(tmp_path, {"docker"}) == {
        ("docker", CTR[:12], f"/system.slice/docker-{CTR}.scope")
    }


def test_a_quadlet_container_wins_over_its_service(tmp_path: Path) -> None:
    make_v2(tmp_path, {QUADLET: 4, "/system.slice/web.service/runtime": 1})
    assert found(tmp_path, {"podman", "systemd"}) == {("podman", CTR[:12], QUADLET)}
    assert found(tmp_path, {"podman"}) == {("podman", CTR[:12], QUADLET)}


def test_services_are_listed_rarely_unless_they_led_to_a_job(tmp_path: Path) -> None:
    make_v2(tmp_path, {f"/system.slice/svc{n}.service": 1 for n in range(20)})
    make_v2(tmp_path, {f"{COLON}{CTR}": 5})
    listings = Listings()

    def walk(now_s: float) -> tuple[set, list[str]]:
        listed: list[str] = []
        jobs = scan(find_hierarchy(tmp_path), listed, {"kubernetes"}, listings, now_s)
        return set(jobs), listed

    jobs, listed = walk(0.0)
    assert len(jobs) == 1 and sum(p.endswith(".service") for p in listed) == 21
    # Within the refresh: only the service that holds a pod is listed again.
    jobs, listed = walk(LISTING_REFRESH_S / 2)
    assert [p for p in listed if p.endswith(".service")] == ["/system.slice/containerd.service"]
    # A pod started in a quiet service is found at the next refresh at the latest...
    make_v2(tmp_path, {f"/system.slice/svc3.service/kubepods-pod{UID_}.slice:crio:{CTR2}": 1})
    jobs, _ = walk(LISTING_REFRESH_S / 2 + 1)
    assert len(jobs) == 1
    jobs, _ = walk(LISTING_REFRESH_S + 1)
    assert len(jobs) == 2
    # ...and a service recreated (a new inode: kernfs allocates them cyclically) is listed
    # again at once. Made beside the old one first, so that this filesystem cannot reuse it.
    make_v2(tmp_path, {f"/system.slice/new/kubepods-pod{UID_}.slice:crio:{'ef' * 32}": 1})
    shutil.rmtree(tmp_path / "system.slice/svc5.service")
    (tmp_path / "system.slice/new").rename(tmp_path / "system.slice/svc5.service")
    jobs, _ = walk(LISTING_REFRESH_S + 2)
    assert len(jobs) == 3


def test_a_process_is_charged_to_the_job_a_later_v1_line_names(tmp_path: Path) -> None:
    """Slurm v1 with proctrack/cgroup only: freezer names the job, cpuacct and memory keep
    slurmd's service (NordicHPC/sonar src/linux/slurm_test.rs)."""
    lines = [
        "12:cpu,cpuacct:/system.slice/slurmd.service",
        "13:freezer:/slurm/uid_7319/job_748468/step_0",
        "2:memory:/system.slice/slurmd.service",
        "1:name=systemd:/system.slice/slurmd.service",
    ]
    (tmp_path / "4242").mkdir()
    (tmp_path / "4242" / "cgroup").write_text("\n".join(lines) + "\n")
    for schedulers in ({"slurm"}, {"slurm", "systemd"}, None):
        ref = job_from_proc(tmp_path, 4242, schedulers)
        assert ref is not None and (ref.scheduler, ref.job_id) == ("slurm", "748468")
    ref = job_from_proc(tmp_path, 4242, {"systemd"})
    assert ref is not None and ref.job_id == "slurmd"
    add_process(tmp_path, 4343, "/system.slice/sshd.service")
    assert job_from_proc(tmp_path, 4343, {"slurm", "kubernetes"}) is None


def _process(procfs: Path, pid: int, ticks: tuple[int, int, int, int]) -> None:
    """/proc/<pid>/stat with utime, stime, cutime, cstime (fields 14 to 17) in clock ticks."""
    fields = ["S", *["0"] * 10, *map(str, ticks), *["0"] * 30]
    (procfs / str(pid)).mkdir(parents=True, exist_ok=True)
    (procfs / str(pid) / "stat").write_text(f"{pid} (python3 train.py) {' '.join(fields)}\n")


def test_a_v1_slurm_job_missing_from_cpuacct_is_found_in_freezer_and_timed_by_its_processes(
    tmp_path: Path,
) -> None:
    """jobacct_gather/linux with proctrack/cgroup: the job is only in freezer (step level)."""
    cgroups, procfs = tmp_path / "cgroup", tmp_path / "proc"
    (cgroups / "cpuacct" / "system.slice" / "slurmd.service").mkdir(parents=True)
    (cgroups / "cpuacct" / "cpuacct.usage").write_text("999\n")
    step = cgroups / "freezer" / "slurm" / "uid_7319" / "job_748468" / "step_0"
    step.mkdir(parents=True)
    (step / "cgroup.procs").write_text("101\n102\n")
    (cgroups / "freezer" / "cgroup.procs").write_text("1\n")
    proc_stat(procfs, user=1_000, idle=9_000)
    hz = CLOCK_TICKS_PER_S
    _process(procfs, 101, (2 * hz, hz, 0, 0))
    _process(procfs, 102, (hz, 0, 0, 0))
    tracker = JobTracker(cgroups, procfs, ("slurm",))
    first = tracker.observe()
    assert set(first.jobs) == {"slurm:748468"}
    assert first.cpu.job_cpu_s == {"slurm:748468": 0.0}  # the agent's first tick: a baseline
    # 101 used 2 s more, 102 exited (its time stays counted), 103 started with 0.5 s.
    _process(procfs, 101, (3 * hz, 2 * hz, 0, 0))
    (step / "cgroup.procs").write_text("101\n103\n")
    _process(procfs, 103, (hz // 2, 0, 0, 0))
    second = tracker.observe()
    assert second.cpu.job_cpu_s == {"slurm:748468": 2.5}
    # The job ends: its directory goes, and so does the job.
    shutil.rmtree(cgroups / "freezer" / "slurm" / "uid_7319" / "job_748468")
    assert tracker.observe().jobs == {}
    tracker.close()


def test_a_reaped_childs_time_is_not_counted_again_in_its_parent(tmp_path: Path) -> None:
    """Its own utime was counted while it ran; the parent's cutime grows by the same when it
    is reaped (found by review: counted twice before)."""
    from wattwise.jobs.process_cpu import ProcessCpu

    job, procfs = tmp_path / "job", tmp_path / "proc"
    job.mkdir()
    hz = CLOCK_TICKS_PER_S
    (job / "cgroup.procs").write_text("100\n101\n")
    _process(procfs, 100, (hz, 0, 0, 0))
    _process(procfs, 101, (20 * hz, 0, 0, 0))
    cpu = ProcessCpu(job, procfs)
    assert cpu.seconds() == 21.0
    (job / "cgroup.procs").write_text("100\n")
    _process(procfs, 100, (hz, 0, 20 * hz, 0))  # 101 reaped by 100
    assert cpu.seconds() == 21.0
