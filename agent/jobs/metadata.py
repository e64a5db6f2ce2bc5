"""What the node can see about a job: name, user and allocation, from one of its processes.

Read once per new job (retried on later ticks while no process can be read), from local files
only, so it never blocks the tick. Slurm jobs carry SLURM_* variables in their environment; for
other jobs the user is the owner of a process. `scontrol` and the kubelet API are not asked.
"""

from __future__ import annotations

import pwd
from dataclasses import dataclass
from pathlib import Path

from agent.jobs.cgroups import SLURM, JobRef


@dataclass(frozen=True, slots=True)
class JobMeta:
    name: str = ""
    user: str = ""
    cpus: float | None = None  # CPUs the scheduler allocated on this node
    gpus: tuple[int, ...] = ()  # GPU indexes the scheduler allocated
    gpu_uuids: tuple[str, ...] = ()  # allocated GPUs named by UUID (containers, pods)
    slurm_job_id: str = ""  # the numeric id, also for jobs whose directory is a SLUID
    account: str = ""  # the Slurm account: the team a job's carbon is reported under


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
    user = environ.get("SLURM_JOB_USER") or _owner(process, ref.uid)
    if ref.scheduler != SLURM:
        name = ref.job_id.rsplit("-", 1)[0] if ref.scheduler == "exec" else ""
        # The NVIDIA container toolkit and device plugin name a container's GPUs here.
        visible = environ.get("NVIDIA_VISIBLE_DEVICES") or environ.get("CUDA_VISIBLE_DEVICES", "")
        uuids = tuple(v.strip() for v in visible.split(",") if v.strip().startswith("GPU-"))
        return JobMeta(name=name, user=user, gpus=_indexes(visible), gpu_uuids=uuids)
    gpus = _indexes(environ.get("SLURM_JOB_GPUS") or environ.get("SLURM_STEP_GPUS", ""))
    return JobMeta(
        name=environ.get("SLURM_JOB_NAME", ""),
        user=user,
        cpus=_number(environ.get("SLURM_CPUS_ON_NODE")),
        gpus=gpus,
        slurm_job_id=environ.get("SLURM_JOB_ID", ""),
        account=environ.get("SLURM_JOB_ACCOUNT", ""),
    )


def _environ(process: Path) -> dict[str, str]:
    try:
        raw = (process / "environ").read_bytes()
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


def _indexes(text: str) -> tuple[int, ...]:
    """'0,2' or '0-3,6' -> GPU indexes; GPU UUIDs and garbage are skipped."""
    found: list[int] = []
    for part in text.split(","):
        low, _, high = part.strip().partition("-")
        if low.isdigit() and (not high or high.isdigit()):
            found += range(int(low), int(high or low) + 1)
    return tuple(found)


def _number(text: str | None) -> float | None:
    try:
        return float(text) if text else None
    except ValueError:
        return None
