"""Job recognition over real-world cgroup path formats."""

from __future__ import annotations

import pytest

from wattwise.jobs.cgroups import classify
from wattwise.model import JobRef

CTR = "8f2c1e0d9b7a6c5e4f3a2b1c0d9e8f7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e"
UID = "5b2d6f8e-1a3c-4e5f-9a8b-7c6d5e4f3a2b"
UID_ = UID.replace("-", "_")
STATIC = "d76e26fba3bf2bfd215eb29011d55250"  # a static pod: the kubelet's md5 of its manifest

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
    # Shapes other projects document (issue 14). containerd's CRI "slice:cri-containerd:id"
    # cgroupsPath taken as a plain path by runc's cgroupfs driver: a directory per container,
    # under containerd.service on v1 (kepler internal/resource/container_test.go; Datadog
    # pkg/util/cgroups/pid_mapper_test.go), a Guaranteed pod without a QoS class.
    (
        f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice:cri-containerd:{CTR}",
        JobRef(
            "kubernetes",
            UID,
            f"/system.slice/containerd.service/kubepods-burstable-pod{UID_}.slice"
            f":cri-containerd:{CTR}",
            CTR[:12],
        ),
    ),
    (
        f"/kubepods-pod{UID_}.slice:cri-containerd:{CTR}",
        JobRef("kubernetes", UID, f"/kubepods-pod{UID_}.slice:cri-containerd:{CTR}", CTR[:12]),
    ),
    # Static (mirror) pods: 32 hex, no dashes, also under the systemd driver (cadvisor
    # container/containerd/factory_test.go; kubernetes pkg/kubelet/config/common.go).
    (
        f"/kubepods/besteffort/pod{STATIC}/{CTR}",
        JobRef("kubernetes", STATIC, f"/kubepods/besteffort/pod{STATIC}", CTR[:12]),
    ),
    (
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice",
        JobRef(
            "kubernetes",
            STATIC,
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{STATIC}.slice",
        ),
    ),
    # A custom --cgroup-root (kind: cgroupRoot /kubelet, systemd driver), and the same pods
    # seen from the host, inside the kind node's docker container: the pod, not the container.
    (
        f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
        f"kubelet-kubepods-burstable-pod{UID_}.slice/cri-containerd-{CTR}.scope",
        JobRef(
            "kubernetes",
            UID,
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/"
            f"kubelet-kubepods-burstable-pod{UID_}.slice",
            CTR[:12],
        ),
    ),
    (
        f"/system.slice/docker-{CTR}.scope/kubelet.slice/kubelet-kubepods.slice/"
        f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice",
        JobRef(
            "kubernetes",
            UID,
            f"/system.slice/docker-{CTR}.scope/kubelet.slice/kubelet-kubepods.slice/"
            f"kubelet-kubepods-besteffort.slice/kubelet-kubepods-besteffort-pod{UID_}.slice",
        ),
    ),
    (
        f"/docker/{CTR}/kubelet/kubepods/burstable/pod{UID}",
        JobRef("kubernetes", UID, f"/docker/{CTR}/kubelet/kubepods/burstable/pod{UID}"),
    ),
    # Podman quadlets (--cgroups=split: libpod/container_internal_linux.go getOCICgroupPath),
    # system and rootless, a template instance among them.
    (
        f"/system.slice/kepler.service/libpod-payload-{CTR}",
        JobRef("podman", CTR[:12], f"/system.slice/kepler.service/libpod-payload-{CTR}", CTR[:12]),
    ),
    (
        f"/user.slice/user-1000.slice/user@1000.service/app.slice/app-web.slice/web@8000.service/"
        f"libpod-payload-{CTR}",
        JobRef(
            "podman",
            CTR[:12],
            f"/user.slice/user-1000.slice/user@1000.service/app.slice/app-web.slice/"
            f"web@8000.service/libpod-payload-{CTR}",
            CTR[:12],
        ),
    ),
    # systemd services under any slice, template instances, a user's own services.
    (
        "/system.slice/system-getty.slice/getty@tty1.service",
        JobRef("systemd", "getty@tty1", "/system.slice/system-getty.slice/getty@tty1.service"),
    ),
    (
        "/user.slice/user-1000.slice/user@1000.service/app.slice/redis.service",
        JobRef(
            "systemd",
            "redis",
            "/user.slice/user-1000.slice/user@1000.service/app.slice/redis.service",
        ),
    ),
    ("/user.slice/user-1000.slice/user@1000.service", None),  # the manager: its services are
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
