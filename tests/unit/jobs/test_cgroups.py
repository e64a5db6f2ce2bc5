"""Job recognition over real-world cgroup path formats."""

from __future__ import annotations

import pytest

from wattwise.jobs.cgroups import classify
from wattwise.model import JobRef

CTR = "8f2c1e0d9b7a6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"
UID = "5b2d6f8e-1a3c-4e5f-9a8b-7c6d5e4f3a2b"
UID_ = UID.replace("-", "_")

CASES = [
    # Slurm, cgroup v2 (also <nodename>_slurmstepd.scope), numeric ids and SLUIDs.
    (
        "/system.slice/slurmstepd.scope/job_4242/step_0/user/task_0",
        JobRef("slurm", "4242", "/system.slice/slurmstepd.scope/job_4242"),
    ),
    (
        "/system.slice/node17_slurmstepd.scope/job_7/step_batch/user/task_special",
        JobRef("slurm", "7", "/system.slice/node17_slurmstepd.scope/job_7"),
    ),
    (
        "/system.slice/slurmstepd.scope/job_s0123456789ABC/step_0",
        JobRef("slurm", "s0123456789ABC", "/system.slice/slurmstepd.scope/job_s0123456789ABC"),
    ),
    (
        "/system.slice/slurmstepd.scope/s7ZZZZZZZZZZZZ",
        JobRef("slurm", "s7ZZZZZZZZZZZZ", "/system.slice/slurmstepd.scope/s7ZZZZZZZZZZZZ"),
    ),
    ("/system.slice/slurmstepd.scope/system", None),  # slurmstepd's own cgroup
    ("/system.slice/slurmstepd.scope/sI23456789ABCD", None),  # I is not Crockford: no SLUID
    # Slurm, cgroup v1 (path inside one controller's hierarchy).
    (
        "/slurm/uid_1000/job_99/step_0/task_0",
        JobRef("slurm", "99", "/slurm/uid_1000/job_99", uid=1000),
    ),
    (
        "/slurm_node17/uid_0/job_5/step_extern",
        JobRef("slurm", "5", "/slurm_node17/uid_0/job_5", uid=0),
    ),
    # Kubernetes, systemd driver (v1 and v2 look alike): burstable, besteffort, guaranteed.
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice/cri-containerd-{CTR}.scope",
        JobRef(
            "kubernetes",
            UID,
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{UID_}.slice",
            CTR[:12],
        ),
    ),
    (
        f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice/crio-{CTR}.scope",
        JobRef(
            "kubernetes",
            UID,
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{UID_}.slice",
            CTR[:12],
        ),
    ),
    (
        f"/kubepods.slice/kubepods-pod{UID_}.slice/docker-{CTR}.scope",
        JobRef("kubernetes", UID, f"/kubepods.slice/kubepods-pod{UID_}.slice", CTR[:12]),
    ),
    (
        f"/kubepods.slice/kubepods-pod{UID_}.slice",
        JobRef("kubernetes", UID, f"/kubepods.slice/kubepods-pod{UID_}.slice"),
    ),
    # Kubernetes, cgroupfs driver.
    (
        f"/kubepods/burstable/pod{UID}/{CTR}",
        JobRef("kubernetes", UID, f"/kubepods/burstable/pod{UID}", CTR[:12]),
    ),
    (f"/kubepods/pod{UID}/{CTR}", JobRef("kubernetes", UID, f"/kubepods/pod{UID}", CTR[:12])),
    (f"/kubepods/besteffort/pod{UID}", JobRef("kubernetes", UID, f"/kubepods/besteffort/pod{UID}")),
    ("/kubepods.slice/kubepods-burstable.slice", None),  # a QoS level, not a pod
    # Docker and Podman, systemd and cgroupfs drivers.
    (
        f"/system.slice/docker-{CTR}.scope",
        JobRef("docker", CTR[:12], f"/system.slice/docker-{CTR}.scope", CTR[:12]),
    ),
    (f"/docker/{CTR}", JobRef("docker", CTR[:12], f"/docker/{CTR}", CTR[:12])),
    (
        f"/machine.slice/libpod-{CTR}.scope/container",
        JobRef("podman", CTR[:12], f"/machine.slice/libpod-{CTR}.scope", CTR[:12]),
    ),
    (
        f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CTR}.scope",
        JobRef(
            "podman",
            CTR[:12],
            f"/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{CTR}.scope",
            CTR[:12],
        ),
    ),
    (
        f"/libpod_parent/libpod-{CTR}",
        JobRef("podman", CTR[:12], f"/libpod_parent/libpod-{CTR}", CTR[:12]),
    ),
    # systemd services and wattwise exec.
    ("/system.slice/nginx.service", JobRef("systemd", "nginx", "/system.slice/nginx.service")),
    ("/system.slice/slurmd.service", JobRef("systemd", "slurmd", "/system.slice/slurmd.service")),
    (
        "/system.slice/wattwise.slice/wattwise-exec-train_1.scope",
        JobRef("exec", "train_1", "/system.slice/wattwise.slice/wattwise-exec-train_1.scope"),
    ),
    (
        "/wattwise/exec-42-1700000000",
        JobRef("exec", "42-1700000000", "/wattwise/exec-42-1700000000"),
    ),
    # Not jobs.
    ("/", None),
    ("/user.slice/user-1000.slice/session-3.scope", None),
    ("/init.scope", None),
]


@pytest.mark.parametrize(("path", "expected"), CASES, ids=[c[0][:60] for c in CASES])
def test_classify(path: str, expected: JobRef | None) -> None:
    assert classify(path) == expected


def test_kinds() -> None:
    kinds = {classify(path).kind for path, ref in CASES if ref is not None}
    assert kinds == {"slurm", "pod", "container", "service", "exec"}
