"""Recognises job cgroups from their paths. Pure: strings in, JobRef out.

Paths are relative to a hierarchy's root (v2 unified, or one v1 controller such as cpuacct) and
start with "/". The first rule that matches wins; its `cgroup` is the job's own top directory,
whose CPU time includes every step, task and container below it.
"""

from __future__ import annotations

import re
from functools import lru_cache

from wattwise.model import DOCKER, EXEC, KUBERNETES, PODMAN, SLURM, SYSTEMD, JobRef

_HEX64 = r"[0-9a-f]{64}"
# A pod UID: a UUID (its dashes written as underscores in systemd slice names), or for a static
# (mirror) pod the kubelet's 32-hex md5 of the manifest (pkg/kubelet/config applyDefaults).
_POD_UID = (
    r"(?:[0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12}|[0-9a-f]{32})"
)
# The kubelet's slices, prefixed by a custom --cgroup-root under the systemd driver (kind:
# kubelet-kubepods-besteffort-pod<uid>.slice), with a QoS class unless the pod is Guaranteed.
_POD_SLICE = rf"(?:[^/]*-)?kubepods(?:-(?:besteffort|burstable))?-pod(?P<id>{_POD_UID})\.slice"
# Slurm >= 26.05 SLUIDs: "s" and 13 Crockford base-32 characters (no I, L, O, U).
_SLUID = r"s[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{13}"
_STEPD = r"(?:[^/]+_)?slurmstepd\.scope"
_CONTAINER = rf"(?:(?:cri-containerd|crio|docker)-)?(?P<container>{_HEX64})(?:\.scope)?"


_RULES: tuple[tuple[str, re.Pattern[str]], ...] = (
    (SLURM, re.compile(rf"^(?P<cg>.*?/{_STEPD}/job_(?P<id>\d+|{_SLUID}))(?:/|$)")),
    (SLURM, re.compile(rf"^(?P<cg>.*?/{_STEPD}/(?P<id>{_SLUID}))(?:/|$)")),
    (SLURM, re.compile(r"^(?P<cg>.*?/slurm(?:_[^/]+)?/uid_(?P<uid>\d+)/job_(?P<id>\d+))(?:/|$)")),
    # The systemd driver's "slice:prefix:id" cgroupsPath taken as a plain path (runc's cgroupfs
    # driver, SystemdCgroup=false): one directory per container, under containerd.service on
    # v1. Each container is counted; together they are the pod.
    (
        KUBERNETES,
        re.compile(
            rf"^(?P<cg>.*?/{_POD_SLICE}:(?:cri-containerd|crio|docker):(?P<container>{_HEX64}))"
            r"(?:/|$)"
        ),
    ),
    (KUBERNETES, re.compile(rf"^(?P<cg>.*?/{_POD_SLICE})(?:/{_CONTAINER})?(?:/|$)")),
    (
        KUBERNETES,
        re.compile(
            rf"^(?P<cg>.*?/kubepods(?:/(?:besteffort|burstable))?/pod(?P<id>{_POD_UID}))"
            rf"(?:/{_CONTAINER})?(?:/|$)"
        ),
    ),
    (EXEC, re.compile(r"^(?P<cg>.*?/wattwise-exec-(?P<id>[\w.-]+)\.scope)(?:/|$)")),
    (EXEC, re.compile(r"^(?P<cg>/wattwise/exec-(?P<id>[\w.-]+))(?:/|$)")),
    (DOCKER, re.compile(rf"^(?P<cg>.*?/docker-(?P<container>{_HEX64})\.scope)(?:/|$)")),
    (DOCKER, re.compile(rf"^(?P<cg>/docker/(?P<container>{_HEX64}))(?:/|$)")),
    (PODMAN, re.compile(rf"^(?P<cg>.*?/libpod-(?P<container>{_HEX64})\.scope)(?:/|$)")),
    (PODMAN, re.compile(rf"^(?P<cg>/libpod_parent/libpod-(?P<container>{_HEX64}))(?:/|$)")),
    # A quadlet (podman --cgroups=split): the container inside its service, beside conmon's.
    (PODMAN, re.compile(rf"^(?P<cg>.*?\.service/libpod-payload-(?P<container>{_HEX64}))(?:/|$)")),
    # A service under any slices, a template instance (name@instance) among them; a user's
    # manager (user@<uid>.service) is not one: the user's own services below it are.
    (
        SYSTEMD,
        re.compile(
            r"^(?P<cg>(?:/[^/]+\.slice|/user@\d+\.service)*/(?P<id>(?!user@\d+\.service)[^/]+)"
            r"\.service)(?:/|$)"
        ),
    ),
)


@lru_cache(maxsize=1 << 16)  # the same paths come back every tick
def classify(path: str) -> JobRef | None:
    """The job a cgroup path belongs to, or None for anything that is not a job."""
    for scheduler, rule in _RULES:
        match = rule.match(path)
        if match is None:
            continue
        groups = match.groupdict()
        container = groups.get("container") or ""
        job_id = groups.get("id") or container[:12]
        if scheduler == KUBERNETES:
            job_id = job_id.replace("_", "-")
        uid = int(groups["uid"]) if groups.get("uid") else None
        return JobRef(scheduler, job_id, groups["cg"], container[:12], uid)
    return None
