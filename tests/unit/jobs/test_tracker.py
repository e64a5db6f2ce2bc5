from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.descriptors import open_files_under
from tests.support.fixtures.trees import add_process, make_v2, proc_stat
from wattwise.jobs.tracker import JobTracker
from wattwise.model import GpuProcess, GpuStatus

STEP = "/system.slice/slurmstepd.scope/job_12/step_0"
CTR = "cd" * 32
DOCKER = f"/system.slice/docker-{CTR}.scope"
ALL = ("slurm", "kubernetes", "docker", "podman", "systemd", "exec")


def gpu(index: int, *processes: tuple[int, float]) -> GpuStatus:
    return GpuStatus(
        index,
        f"GPU-{index}",
        "H100",
        True,
        None,
        "nvml",
        processes=tuple(GpuProcess(pid, sm) for pid, sm in processes),
    )


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    cgroups, procfs = tmp_path / "cgroup", tmp_path / "proc"
    make_v2(cgroups, {STEP: 5_000_000, "/system.slice/sshd.service": 1_000_000})
    proc_stat(procfs, user=1_000, idle=9_000)
    return cgroups, procfs


def test_cpu_deltas_per_job_and_node_busy_idle(trees: tuple[Path, Path]) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ALL)
    first = tracker.observe()
    assert first.cpu.job_cpu_s == {"slurm:12": 0.0, "systemd:sshd": 0.0}  # baselines
    assert (first.cpu.busy_s, first.cpu.idle_s) == (0.0, 0.0)

    make_v2(cgroups, {STEP: 7_500_000, "/system.slice/sshd.service": 1_250_000})
    proc_stat(procfs, user=1_400, idle=9_600)  # jiffies: +4 s busy, +6 s idle at USER_HZ 100
    second = tracker.observe()
    assert second.cpu.job_cpu_s == pytest.approx({"slurm:12": 2.5, "systemd:sshd": 0.25})
    assert second.cpu.busy_s == pytest.approx(4.0) and second.cpu.idle_s == pytest.approx(6.0)


def test_a_job_that_appears_after_the_first_tick_counts_all_its_cpu(trees) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ALL)
    tracker.observe()
    make_v2(cgroups, {DOCKER: 300_000})
    assert tracker.observe().cpu.job_cpu_s[f"docker:{CTR[:12]}"] == pytest.approx(0.3)


def test_disabled_schedulers_are_not_jobs(trees: tuple[Path, Path]) -> None:
    cgroups, procfs = trees
    assert set(JobTracker(cgroups, procfs, ["slurm"]).observe().jobs) == {"slurm:12"}


def test_gpu_processes_map_to_jobs_through_proc_cgroup(trees: tuple[Path, Path]) -> None:
    cgroups, procfs = trees
    add_process(procfs, 4242, f"{STEP}/user/task_0")
    add_process(procfs, 4343, "/user.slice/user-1000.slice/session-1.scope")  # not a job
    add_process(procfs, 4444, f"{DOCKER}")
    tracker = JobTracker(cgroups, procfs, ALL)
    activity = tracker.observe(
        [
            gpu(0, (4242, 70.0), (4343, 10.0)),
            gpu(1, (4444, 0.0), (9999, 5.0)),  # 9999 exited between NVML and /proc
        ]
    )
    assert activity.gpu_sm_samples == {0: {"slurm:12": 70.0}, 1: {f"docker:{CTR[:12]}": 0.0}}
    assert f"docker:{CTR[:12]}" in activity.jobs  # found through its GPU process


def test_a_reused_pid_is_looked_up_again(trees: tuple[Path, Path]) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ALL)
    add_process(procfs, 500, f"{STEP}/user/task_0", start=1000)
    assert tracker.observe([gpu(0, (500, 1.0))]).gpu_sm_samples == {0: {"slurm:12": 1.0}}
    tracker.observe([gpu(0)])  # the process ended: NVML no longer lists it
    add_process(procfs, 500, DOCKER, start=2000)  # same pid, another process
    assert tracker.observe([gpu(0, (500, 1.0))]).gpu_sm_samples == {0: {f"docker:{CTR[:12]}": 1.0}}


def test_a_gpu_process_listed_tick_after_tick_is_looked_up_once_a_minute(trees) -> None:
    """Its /proc files are read when it first appears; then only every GPU_PID_RECHECK_S, which
    also bounds how long a pid reused between two listings could be charged to the old job."""
    from wattwise.jobs.gpu_processes import GPU_PID_RECHECK_S

    cgroups, procfs = trees
    now = [1000.0]
    tracker = JobTracker(cgroups, procfs, ALL, clock=lambda: now[0])
    add_process(procfs, 500, f"{STEP}/user/task_0")
    assert tracker.observe([gpu(0, (500, 1.0))]).gpu_sm_samples == {0: {"slurm:12": 1.0}}
    add_process(procfs, 500, DOCKER, start=2000)
    now[0] += GPU_PID_RECHECK_S - 1
    assert tracker.observe([gpu(0, (500, 1.0))]).gpu_sm_samples == {0: {"slurm:12": 1.0}}
    now[0] += 1
    assert tracker.observe([gpu(0, (500, 1.0))]).gpu_sm_samples == {0: {f"docker:{CTR[:12]}": 1.0}}


def test_a_gpu_process_outside_every_job_is_not_looked_up_every_tick(trees) -> None:
    from wattwise.jobs.gpu_processes import GPU_PID_RECHECK_S

    cgroups, procfs = trees
    now = [1000.0]
    tracker = JobTracker(cgroups, procfs, ALL, clock=lambda: now[0])
    add_process(procfs, 600, "/user.slice/user-1000.slice/session-1.scope")
    assert tracker.observe([gpu(0, (600, 1.0))]).gpu_sm_samples == {}
    add_process(procfs, 600, f"{STEP}/user/task_0")  # what only a recheck would see
    now[0] += 1
    assert tracker.observe([gpu(0, (600, 1.0))]).gpu_sm_samples == {}
    now[0] += GPU_PID_RECHECK_S
    assert tracker.observe([gpu(0, (600, 1.0))]).gpu_sm_samples == {0: {"slurm:12": 1.0}}


def test_no_cgroup_tree_means_no_jobs(tmp_path: Path) -> None:
    proc_stat(tmp_path / "proc", user=1, idle=1)
    activity = JobTracker(tmp_path / "none", tmp_path / "proc", ALL).observe()
    assert activity.jobs == {} and activity.cpu.job_cpu_s == {}


def test_a_job_born_and_gone_between_two_ticks_is_charged_as_system(trees) -> None:
    """The documented, bounded loss: its CPU time (at most one interval) is busy time outside
    every job seen, so its energy is `system`, never lost."""
    from wattwise.attribution import split_cpu

    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ALL)
    tracker.observe()
    proc_stat(procfs, user=1_100, idle=9_100)  # +1 s busy from a job nobody saw, +1 s idle
    activity = tracker.observe()
    assert activity.cpu.job_cpu_s == {"slurm:12": 0.0, "systemd:sshd": 0.0}
    split = split_cpu(10.0, activity.cpu, "unattributed")
    assert split.system_j == pytest.approx(5.0) and split.unattributed_idle_j == pytest.approx(5.0)


def test_metadata_of_a_job_without_a_process_yet_is_retried_with_backoff(trees) -> None:
    cgroups, procfs = trees
    now = [100.0]
    tracker = JobTracker(cgroups, procfs, ["slurm"], clock=lambda: now[0])
    assert "slurm:12" not in tracker.observe().meta  # no process in the job yet
    (cgroups / STEP.lstrip("/") / "cgroup.procs").write_text("4242\n")
    add_process(procfs, 4242, STEP)
    (procfs / "4242" / "environ").write_bytes(b"SLURM_JOB_NAME=late\0")
    now[0] += 0.9
    assert "slurm:12" not in tracker.observe().meta  # not asked again before 1 s
    now[0] += 0.2  # the first retry comes after 1 s
    assert tracker.observe().meta["slurm:12"].name == "late"


def test_a_cgroup_recreated_at_the_same_path_is_a_new_counter(trees) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ["slurm"])
    tracker.observe()  # baseline 5 s
    make_v2(cgroups, {STEP: 300_000})  # removed and made again between ticks: 0.3 s so far
    assert tracker.observe().cpu.job_cpu_s == pytest.approx({"slurm:12": 0.3})


def test_a_job_counter_file_is_kept_open_while_the_job_runs_and_closed_when_it_ends(
    trees: tuple[Path, Path],
) -> None:
    import shutil

    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ["slurm", "systemd"])
    tracker.observe()
    tracker.observe()
    assert len(open_files_under(cgroups)) == 2  # slurm:12 and systemd:sshd
    shutil.rmtree(cgroups / "system.slice" / "sshd.service")
    assert set(tracker.observe().jobs) == {"slurm:12"}
    assert len(open_files_under(cgroups)) == 1
    tracker.close()
    assert len(open_files_under(cgroups)) == 0


def test_past_its_share_of_the_open_file_limit_a_counter_is_read_by_its_path(trees) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ["slurm", "systemd"])
    tracker._held_limit = 1
    tracker.observe()
    make_v2(cgroups, {STEP: 7_500_000, "/system.slice/sshd.service": 1_250_000})
    assert tracker.observe().cpu.job_cpu_s == pytest.approx({"slurm:12": 2.5, "systemd:sshd": 0.25})
    assert len(open_files_under(cgroups)) == 1
    tracker.close()


def test_a_job_replaced_by_another_in_one_tick_has_its_counter_closed(trees) -> None:
    import shutil

    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ["slurm", "systemd"])
    tracker.observe()
    shutil.rmtree(cgroups / "system.slice" / "sshd.service")
    make_v2(cgroups, {"/system.slice/cron.service": 1_000})  # as many jobs as before
    assert set(tracker.observe().jobs) == {"slurm:12", "systemd:cron"}
    assert set(tracker._counters) == {STEP.rsplit("/", 1)[0], "/system.slice/cron.service"}
    tracker.close()


def test_a_gpu_process_whose_proc_entry_could_not_be_read_is_asked_again(trees) -> None:
    cgroups, procfs = trees
    tracker = JobTracker(cgroups, procfs, ALL)
    assert tracker.observe([gpu(0, (700, 1.0))]).gpu_sm_samples == {}  # no /proc/700 yet
    add_process(procfs, 700, f"{STEP}/user/task_0")
    assert tracker.observe([gpu(0, (700, 1.0))]).gpu_sm_samples == {0: {"slurm:12": 1.0}}


def test_a_pods_named_metadata_is_the_same_object_while_nothing_changes(tmp_path: Path) -> None:
    uid = "0a1b2c3d-0000-4000-8000-00000000abcd"
    pod = f"/kubepods.slice/kubepods-pod{uid.replace('-', '_')}.slice"
    make_v2(tmp_path / "cg", {pod: 1_000})
    proc_stat(tmp_path / "proc", user=1, idle=1)
    names = {uid: "ns/web-0"}
    tracker = JobTracker(tmp_path / "cg", tmp_path / "proc", ALL, pod_name=names.get)
    first = tracker.observe().meta[f"kubernetes:{uid}"]
    assert first.name == "ns/web-0"
    assert tracker.observe().meta[f"kubernetes:{uid}"] is first
    names[uid] = "ns/web-0-renamed"
    assert tracker.observe().meta[f"kubernetes:{uid}"].name == "ns/web-0-renamed"


def test_a_container_that_held_pods_is_not_charged_their_cpu_time_when_they_end(
    tmp_path: Path,
) -> None:
    """A kind node's container is a job until pods run inside it, then the pods are; when the
    pods end it is a job again. Its counter includes the pods' CPU time, already charged to
    them: it restarts from a baseline, not from zero (found by review)."""
    import shutil

    cgroups, procfs = tmp_path / "cgroup", tmp_path / "proc"
    uid = "1a3c4e5f_9a8b_4c6d_8e4f_3a2b1c0d9e8f"
    pod = f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{uid}.slice"
    inner = f"{DOCKER}{pod}/cri-containerd-{'ef' * 32}.scope"
    proc_stat(procfs, user=1_000, idle=9_000)
    make_v2(cgroups, {DOCKER + "/init.scope": 100_000})
    ticks = iter(range(0, 1000, 11))  # seconds: past the listing refresh every tick
    tracker = JobTracker(cgroups, procfs, ALL, clock=lambda: float(next(ticks)))
    tracker.observe()
    make_v2(cgroups, {inner: 50_000_000})  # 50 s of the pod's, inside the container
    during = tracker.observe().cpu.job_cpu_s
    assert f"docker:{CTR[:12]}" not in during
    shutil.rmtree(cgroups / DOCKER.lstrip("/") / pod.lstrip("/"))
    # Its counter unreadable at first: the baseline waits for the first good read.
    (cgroups / DOCKER.lstrip("/") / "cpu.stat").write_text("usage_usec garbage\n")
    assert f"docker:{CTR[:12]}" not in tracker.observe().cpu.job_cpu_s
    # The container's counter: its own 0.1 s + 0.2 s, and the pod's 50 s that stay in it.
    make_v2(cgroups, {DOCKER + "/init.scope": 50_300_000})
    after = tracker.observe().cpu.job_cpu_s
    assert after[f"docker:{CTR[:12]}"] < 0.5, after


@pytest.mark.parametrize("named", [False, True], ids=["no-kubelet", "kubelet-names"])
@pytest.mark.parametrize("gpu_container", ["aa" * 32, "ff" * 32])
def test_a_colon_form_pod_is_described_by_all_its_containers(
    tmp_path: Path, gpu_container: str, named: bool
) -> None:
    """containerd's systemd driver in the colon form has no pod directory: each container is a
    cgroup of the same pod. The GPU one's claim must hold whichever container is read last
    (found by review: the last one's metadata replaced the others')."""
    cgroups, procfs = tmp_path / "cgroup", tmp_path / "proc"
    uid = "5b2d6f8e_1a3c_4e5f_9a8b_7c6d5e4f3a2b"
    base = f"/system.slice/containerd.service/kubepods-burstable-pod{uid}.slice:cri-containerd:"
    sidecar = "ff" * 32 if gpu_container == "aa" * 32 else "aa" * 32
    proc_stat(procfs, user=1_000, idle=9_000)
    for pid, container, env in (
        (701, gpu_container, b"NVIDIA_VISIBLE_DEVICES=GPU-0\0HOSTNAME=trainer\0"),
        (702, sidecar, b"HOSTNAME=trainer\0"),
    ):
        make_v2(cgroups, {base + container: 1_000})
        add_process(procfs, pid, base + container)
        (cgroups / (base + container).lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
        (procfs / str(pid) / "environ").write_bytes(env)
    pod_name = (lambda uid: "ml/trainer-0") if named else None
    tracker = JobTracker(cgroups, procfs, ["kubernetes"], pod_name)
    activity = tracker.observe([gpu(0)])
    key = f"kubernetes:{uid.replace('_', '-')}"
    assert set(activity.jobs) == {key}
    assert activity.gpu_holders == {0: key}
    assert activity.meta[key].gpu_uuids == ("GPU-0",)
    assert [k for k, _, _ in tracker.running()] == [key]  # one job, listed once
    assert tracker.known(uid.replace("_", "-")) == key
    assert activity.meta[key].name == ("ml/trainer-0" if named else "")
