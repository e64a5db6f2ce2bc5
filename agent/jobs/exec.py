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

from wattwise.jobs.discovery import find_hierarchy


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


def _remove_abandoned(parent: Path) -> None:
    """Removes the empty cgroups of earlier runs whose wrapper is gone (killed with SIGKILL,
    it could not remove its own): each is named after its wrapper's pid. One still holding a
    process (the command outlived its wrapper) is not empty, and stays, accounted."""
    try:
        entries = list(parent.iterdir())
    except OSError:
        return
    for cgroup in entries:
        pid = cgroup.name.rpartition("-")[2]
        if not (cgroup.name.startswith("exec-") and pid.isdigit()) or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):  # EBUSY: processes are still in it
            cgroup.rmdir()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _make_cgroup(cgroup_root: Path, job_id: str) -> tuple[Path | None, str]:
    hierarchy = find_hierarchy(cgroup_root)
    if hierarchy is None:
        return None, f"no cgroup hierarchy under {cgroup_root}"
    _remove_abandoned(hierarchy.root / "wattwise")
    cgroup = hierarchy.root / "wattwise" / f"exec-{job_id}"
    try:
        cgroup.mkdir(parents=True)
    except OSError as exc:
        return (
            None,
            f"cannot create cgroup {cgroup}: {exc.strerror} (run as root, or under systemd)",
        )
    return cgroup, ""


# Not forwarded: those that cannot be caught, the child's own exit notice, the job-control stops
# (their default action stops this wrapper too, as a shell expects), and faults.
_NOT_FORWARDED = {
    signal.SIGKILL,
    signal.SIGSTOP,
    signal.SIGCHLD,
    signal.SIGTSTP,
    signal.SIGTTIN,
    signal.SIGTTOU,
    signal.SIGSEGV,
    signal.SIGBUS,
    signal.SIGFPE,
    signal.SIGILL,
    signal.SIGTRAP,
    signal.SIGPIPE,
}
# What a terminal sends to its whole foreground process group: the command got it already.
_FROM_TERMINAL = {signal.SIGINT, signal.SIGQUIT, signal.SIGWINCH}
FORWARDED = tuple(sorted(set(signal.valid_signals()) - _NOT_FORWARDED, key=int))


def _terminal_sent_it_too() -> bool:
    """True when this process is in its terminal's foreground process group, so a signal the
    terminal generates reached the command without us."""
    for stream in (sys.stdin, sys.stdout, sys.stderr):
        try:
            return os.tcgetpgrp(stream.fileno()) == os.getpgrp()
        except (OSError, ValueError, AttributeError):
            continue
    return False


def _run(command: list[str], **popen: object) -> int:
    """Runs the command and forwards every catchable signal to it (Slurm's --signal=USR1@60,
    a scheduler's SIGTERM, kill -QUIT), so that no signal kills the wrapper and orphans the
    command: its exit status would be lost and its cgroup left behind.

    The handlers are in place before the child starts, so a signal that lands while it is being
    spawned is not lost: it is delivered as soon as the child exists.
    """
    child: subprocess.Popen | None = None
    early: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        if signum in _FROM_TERMINAL and _terminal_sent_it_too():
            return  # Ctrl-C, Ctrl-\ and resizes reach the command from the terminal
        if child is None:
            early.append(signum)
        else:
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    # Python handlers, unlike SIG_IGN, are reset to the default in the child when it execs.
    previous = {}
    for signum in FORWARDED:
        with contextlib.suppress(OSError, ValueError):  # one the platform does not let us take
            previous[signum] = signal.signal(signum, forward)
    try:
        child = subprocess.Popen(command, **popen)  # type: ignore[call-overload]
        for signum in early:
            child.send_signal(signum)
        code = child.wait()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 128 - code if code < 0 else code
