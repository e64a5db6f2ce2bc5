from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.fixtures.trees import add_process, make_v2, proc_stat
from wattwise.attribution import attribute_tick
from wattwise.jobs.cgroups import classify
from wattwise.jobs.metadata import _indexes, read_meta
from wattwise.jobs.tracker import JobTracker
from wattwise.model import CounterKey, DomainEnergy, GpuStatus

SLURM_ENV = {
    "SLURM_JOB_ID": "4242",
    "SLURM_JOB_NAME": "llama-finetune",
    "SLURM_JOB_USER": "alice",
    "SLURM_CPUS_ON_NODE": "16",
    "SLURM_JOB_GPUS": "2,3",
    "CUDA_VISIBLE_DEVICES": "0,1",  # renumbered inside the job: not the node's indexes
}


def put_process(root: Path, procfs: Path, cgroup: str, pid: int, env: dict, uid: int = 0):
    (root / cgroup.lstrip("/") / "cgroup.procs").write_text(f"{pid}\n")
    add_process(procfs, pid, cgroup)
    (procfs / str(pid) / "environ").write_bytes(
        b"\0".join(f"{k}={v}".encode() for k, v in env.items()) + b"\0"
    )
    (procfs / str(pid) / "status").write_text(f"Name:\tpython\nUid:\t{uid}\t{uid}\t{uid}\t{uid}\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("2,3", (2, 3)), ("0-3,6", (0, 1, 2, 3, 6)), ("GPU-1a2b,1", (1,)), ("", ()), ("x-y", ())],
)
def test_gpu_index_lists(text: str, expected: tuple[int, ...]) -> None:
    assert _indexes(text) == expected


def test_slurm_metadata_comes_from_a_task_process(tmp_path: Path) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    task = "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0"
    make_v2(cg, {task: 10})
    put_process(cg, procfs, task, 77, SLURM_ENV)
    ref = classify(task)
    meta = read_meta(ref, cg / ref.cgroup.lstrip("/"), procfs)
    assert (meta.name, meta.user, meta.cpus, meta.gpus) == ("llama-finetune", "alice", 16.0, (2, 3))


def test_other_jobs_get_the_process_owner_and_exec_its_name(tmp_path: Path) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    make_v2(cg, {"/wattwise/exec-resnet-99": 1})
    put_process(cg, procfs, "/wattwise/exec-resnet-99", 99, {"HOME": "/root"}, uid=0)
    ref = classify("/wattwise/exec-resnet-99")
    meta = read_meta(ref, cg / "wattwise/exec-resnet-99", procfs)
    assert (meta.name, meta.user, meta.gpus) == ("resnet", "root", ())


def test_a_job_without_a_readable_process_has_no_metadata_yet(tmp_path: Path) -> None:
    make_v2(tmp_path / "cg", {"/system.slice/slurmstepd.scope/job_1/step_0": 1})
    ref = classify("/system.slice/slurmstepd.scope/job_1")
    assert read_meta(ref, tmp_path / "cg" / ref.cgroup.lstrip("/"), tmp_path / "proc") is None


def test_tracker_keys_a_sluid_job_by_its_numeric_id_and_knows_its_allocation(
    tmp_path: Path,
) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    sluid = "/system.slice/slurmstepd.scope/s0123456789ABC"
    make_v2(cg, {f"{sluid}/step_0": 10})
    proc_stat(procfs, user=1, idle=1)
    put_process(cg, procfs, f"{sluid}/step_0", 55, SLURM_ENV)
    gpus = [GpuStatus(i, f"GPU-{i}", "H100", True, None, "nvml") for i in range(4)]
    activity = JobTracker(cg, procfs, ["slurm"]).observe(gpus)
    assert list(activity.jobs) == ["slurm:4242"]
    assert activity.meta["slurm:4242"].name == "llama-finetune"
    assert activity.cpu.reserved_cpus == {"slurm:4242": 16.0}
    assert activity.gpu_holders == {2: "slurm:4242", 3: "slurm:4242"}

    # GPU 2 held but idle: its energy is the job's allocated idle; GPU 0 is nobody's.
    def gpu(index: int, joules: float) -> DomainEnergy:
        return DomainEnergy(
            CounterKey("gpu", str(index), "nvml"), 0, None, True, None, True, 0, 0, joules
        )

    charged, left = attribute_tick(
        [gpu(2, 30.0), gpu(0, 20.0)], activity.cpu, {}, activity.gpu_holders
    )
    assert [(c.job_key, c.state, c.energy_j) for c in charged] == [("slurm:4242", "idle", 30.0)]
    assert [(u.domain, u.reason, u.energy_j) for u in left] == [("gpu", "idle", 20.0)]


def test_a_container_holds_the_gpus_its_environment_names(tmp_path: Path) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    ctr = f"/system.slice/docker-{'ab' * 32}.scope"
    make_v2(cg, {ctr: 10})
    proc_stat(procfs, user=1, idle=1)
    put_process(cg, procfs, ctr, 66, {"NVIDIA_VISIBLE_DEVICES": "GPU-b,3"})
    gpus = [GpuStatus(i, f"GPU-{c}", "H100", True, None, "nvml") for i, c in enumerate("abcd")]
    activity = JobTracker(cg, procfs, ["docker"]).observe(gpus)
    assert activity.gpu_holders == {1: f"docker:{'ab' * 6}", 3: f"docker:{'ab' * 6}"}


def test_a_slurm_mig_job_is_known_by_its_instances_uuids_not_its_gres_indexes(
    tmp_path: Path,
) -> None:
    """Slurm's gres_common.c: "MIG devices always use UUID"; SLURM_JOB_GPUS then counts MIG
    devices, not GPUs, so it must not make the job hold whole GPUs."""
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    task = "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0"
    make_v2(cg, {task: 10})
    mig = "MIG-5b2d6f8e-1a3c-4e5f-9a8b-7c6d5e4f3a2b"
    put_process(cg, procfs, task, 77, {**SLURM_ENV, "CUDA_VISIBLE_DEVICES": f"{mig},0"})
    ref = classify(task)
    meta = read_meta(ref, cg / ref.cgroup.lstrip("/"), procfs)
    assert (meta.gpus, meta.gpu_uuids) == ((), (mig,))


def test_a_container_names_mig_instances_and_old_style_uuids_are_bounded(tmp_path: Path) -> None:
    cg, procfs = tmp_path / "cg", tmp_path / "proc"
    ctr = f"/system.slice/docker-{'ab' * 32}.scope"
    make_v2(cg, {ctr: 10})
    put_process(cg, procfs, ctr, 66, {"NVIDIA_VISIBLE_DEVICES": f"MIG-a,GPU-b,MIG-{'x' * 200}"})
    meta = read_meta(classify(ctr), cg / ctr.lstrip("/"), procfs)
    assert meta.gpu_uuids == ("MIG-a", "GPU-b")
