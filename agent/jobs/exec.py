"""`wattwise exec`: run a command as a job of its own, so an ad-hoc run gets an account.

Where systemd runs, the command goes into a transient scope, wattwise.slice/
wattwise-exec-<id>.scope. Otherwise the command is put into a cgroup created at /wattwise/exec-<id>
in the hierarchy the agent reads. When neither is possible, the command still runs, with a
warning that it is not accounted. The command's exit status is passed through; a command killed
by a signal exits 128 + the signal number, as shells report it.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from agent.jobs.discovery import find_hierarchy


def job_id_for(name: str, pid: int) -> str:
    safe = re.sub(r"[^\w.-]+", "_", name).strip("_")[:48] or "job"
    return f"{safe}-{pid}"


def run_as_job(command: list[str], job_name: str | None, cgroup_root: Path) -> int:
    job_id = job_id_for(job_name or Path(command[0]).name, os.getpid())
    if Path("/run/systemd/system").is_dir() and shutil.which("systemd-run"):
        user = ["--user"] if os.geteuid() != 0 else []
        scope = [
            "systemd-run",
            *user,
            "--scope",
            "--quiet",
            "--collect",
            "--slice=wattwise.slice",
            f"--unit=wattwise-exec-{job_id}",
            "--",
            *command,
        ]
        return _run(scope)
    cgroup, why = _make_cgroup(cgroup_root, job_id)
    if cgroup is None:
        print(f"wattwise exec: {why}; running {command[0]} without an account", file=sys.stderr)
        return _run(command)
    procs = str(cgroup / "cgroup.procs")

    def join_cgroup() -> None:  # in the child, before exec: all its descendants follow
        with open(procs, "w") as f:
            f.write(str(os.getpid()))

    try:
        # preexec_fn is safe here: the CLI runs no other threads when it forks.
        return _run(command, preexec_fn=join_cgroup)
    finally:
        # The agent then sees the job gone and closes its account. If the command left a
        # process behind, the cgroup is not empty, stays, and that process stays accounted.
        with contextlib.suppress(OSError):
            cgroup.rmdir()


def _make_cgroup(cgroup_root: Path, job_id: str) -> tuple[Path | None, str]:
    hierarchy = find_hierarchy(cgroup_root)
    if hierarchy is None:
        return None, f"no cgroup hierarchy under {cgroup_root}"
    cgroup = hierarchy.root / "wattwise" / f"exec-{job_id}"
    try:
        cgroup.mkdir(parents=True)
    except OSError as exc:
        return (
            None,
            f"cannot create cgroup {cgroup}: {exc.strerror} (run as root, or under systemd)",
        )
    return cgroup, ""


def _run(command: list[str], **popen: object) -> int:
    """Runs the command, forwarding SIGTERM and SIGHUP to it (SIGINT reaches it from the tty).

    The handlers are in place before the child starts, so a signal that lands while it is being
    spawned is not lost: it is delivered as soon as the child exists.
    """
    child: subprocess.Popen | None = None
    early: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if child is None:
            early.append(signum)
        else:
            child.send_signal(signum)

    def ignore(_signum: int, _frame: object) -> None:
        pass  # Ctrl-C reaches the command from the terminal; we wait for it to finish

    # Python handlers, unlike SIG_IGN, are reset to the default in the child when it execs.
    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGHUP)}
    previous[signal.SIGINT] = signal.signal(signal.SIGINT, ignore)
    try:
        child = subprocess.Popen(command, **popen)  # type: ignore[call-overload]
        for signum in early:
            child.send_signal(signum)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
