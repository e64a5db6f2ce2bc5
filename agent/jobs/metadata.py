"""What the node can see about a job: name, user and allocation, from one of its processes.

Read once per new job (retried on later ticks while no process can be read), from local files
only, so it never blocks the tick. Slurm jobs carry SLURM_* variables in their environment; for
other jobs the user is the owner of a process. `scontrol` and the kubelet API are not asked.
"""

from __future__ import annotations

import logging
import os
import pwd
from dataclasses import dataclass
from pathlib import Path

from wattwise.checks import BadNumber, parse_number
from wattwise.model import KUBERNETES, SLURM, JobRef

log = logging.getLogger(__name__)

# What a job's own environment may claim. Larger claims are a typo or an attack: a GPU range
# such as 0-4294967295 would otherwise be expanded into billions of indexes.
MAX_CPUS = 65_536
MAX_GPU_INDEX = 1_023
MAX_GPUS = 1_024
MAX_ENVIRON_BYTES = 1 << 20  # Linux caps one variable at 128 kB; a larger environ is read in part


@dataclass(frozen=True, slots=True)
class JobMeta:
    name: str = ""
    user: str = ""
    cpus: float | None = None  # CPUs the scheduler allocated on this node
    gpus: tuple[int, ...] = ()  # GPU indexes the scheduler allocated
    gpu_uuids: tuple[str, ...] = ()  # allocated GPUs named by UUID (containers, pods)
    slurm_job_id: str = ""  # the numeric id, also for jobs whose directory is a SLUID
    account: str = ""  # the Slurm account: the team a job's carbon is reported under


def merged(first: JobMeta, other: JobMeta) -> JobMeta:
    """One job of several cgroups (a pod in containerd's colon form, each container a cgroup of
    its own): what any of them claims, and what they reserve together."""
    cpus = first.cpus if other.cpus is None else (first.cpus or 0.0) + other.cpus
    return JobMeta(
        name=first.name or other.name,
        user=first.user or other.user,
        cpus=cpus,
        gpus=tuple(sorted({*first.gpus, *other.gpus})),
        gpu_uuids=tuple(dict.fromkeys((*first.gpu_uuids, *other.gpu_uuids))),
        slurm_job_id=first.slurm_job_id or other.slurm_job_id,
        account=first.account or other.account,
    )


def first_pid(cgroup_dir: Path) -> int | None:
    """A process of the cgroup or of a descendant (a job's own directory is usually empty)."""
    pending = [cgroup_dir]
    while pending:
        directory = pending.pop(0)
        try:
            text = (directory / "cgroup.procs").read_text()
        except OSError:
            text = ""  # unreadable here; its children may still tell
        for line in text.split():
            if line.isdigit():
                return int(line)
        try:
            pending += sorted(p for p in directory.iterdir() if p.is_dir())
        except OSError:
            continue
    return None


def read_meta(ref: JobRef, cgroup_dir: Path, procfs_root: Path) -> JobMeta | None:
    """None when no process of the job could be read yet."""
    pid = first_pid(cgroup_dir)
    if pid is None:
        return None
    process = procfs_root / str(pid)
    environ = _environ(process)
    origin = f"{process}/environ"
    user = environ.get("SLURM_JOB_USER") or _owner(process, ref.uid)
    if ref.scheduler != SLURM:
        name = ref.job_id.rsplit("-", 1)[0] if ref.scheduler == "exec" else ""
        # The NVIDIA container toolkit and device plugin name a container's GPUs here.
        visible = environ.get("NVIDIA_VISIBLE_DEVICES") or environ.get("CUDA_VISIBLE_DEVICES", "")
        return JobMeta(name=name, user=user, gpus=_indexes(visible), gpu_uuids=_uuids(visible))
    gpus = _indexes(environ.get("SLURM_JOB_GPUS") or environ.get("SLURM_STEP_GPUS", ""))
    # MIG: Slurm names the instances by UUID only ("MIG devices always use UUID"); its GRES
    # indexes then count instances, not GPUs.
    mig = tuple(u for u in _uuids(environ.get("CUDA_VISIBLE_DEVICES", "")) if u.startswith("MIG-"))
    return JobMeta(
        gpu_uuids=mig,
        name=environ.get("SLURM_JOB_NAME", ""),
        user=user,
        cpus=_cpus(environ.get("SLURM_CPUS_ON_NODE"), f"SLURM_CPUS_ON_NODE in {origin}"),
        gpus=() if mig else gpus,
        slurm_job_id=environ.get("SLURM_JOB_ID", ""),
        account=environ.get("SLURM_JOB_ACCOUNT", ""),
    )


def _environ(process: Path) -> dict[str, str]:
    try:
        fd = os.open(process / "environ", os.O_RDONLY)
        try:
            raw = os.read(fd, MAX_ENVIRON_BYTES)
        finally:
            os.close(fd)
    except OSError:
        return {}
    pairs = (item.split(b"=", 1) for item in raw.split(b"\0") if b"=" in item)
    return {k.decode(errors="replace"): v.decode(errors="replace") for k, v in pairs}


def _owner(process: Path, uid: int | None) -> str:
    if uid is None:
        try:
            for line in (process / "status").read_text().splitlines():
                if line.startswith("Uid:"):
                    uid = int(line.split()[1])
                    break
        except (OSError, ValueError, IndexError):
            return ""
    if uid is None:
        return ""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def _uuids(text: str) -> tuple[str, ...]:
    """The GPU-<uuid> and MIG-<uuid> entries of a device list (indexes are _indexes')."""
    entries = (v.strip() for v in text.split(",")[:MAX_GPUS])
    return tuple(v for v in entries if v.startswith(("GPU-", "MIG-")) and len(v) <= 128)


def _indexes(text: str) -> tuple[int, ...]:
    """'0,2' or '0-3,6' -> GPU indexes; GPU UUIDs and garbage are skipped. No index above
    MAX_GPU_INDEX can name a GPU: a range is cut there before it is expanded."""
    found: set[int] = set()
    for part in text.split(",")[:MAX_GPUS]:
        low, dash, high = part.strip().partition("-")
        first, last = _index(low), _index(high) if dash else _index(low)
        if first is not None and last is not None:
            found.update(range(first, min(last, MAX_GPU_INDEX) + 1))
    return tuple(sorted(found))


def _index(text: str) -> int | None:
    if not (text.isascii() and text.isdigit()):
        return None
    return int(text) if len(text) <= 6 else MAX_GPU_INDEX + 1


def _cpus(text: str | None, origin: str) -> float | None:
    """The CPUs a job holds on this node, or None when its environment does not say usably."""
    if not text:
        return None
    try:
        cpus = parse_number(text, origin, 0.0, MAX_CPUS)
    except BadNumber as exc:
        log.warning("job metadata: %s; the job is charged as if it reserved no CPUs", exc)
        return None
    return cpus or None


def team_of(meta: JobMeta, scheduler: str) -> str:
    """The Slurm account, else a pod's namespace: who a job's carbon is reported under."""
    if scheduler == KUBERNETES:
        return meta.name.partition("/")[0] if "/" in meta.name else ""
    return meta.account
