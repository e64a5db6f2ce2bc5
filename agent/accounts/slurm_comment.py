"""A job's energy and carbon kept by Slurm itself, in its AdminComment, so the figure outlives
the TSDB's retention (as Princeton's jobstats keeps its summary there).

The controller's epilog (`wattwise slurm epilog`) reads the job's totals over all its nodes from
the fleet's store and writes them into the accounting database with `sacctmgr update job`, as
jobstats does (the controller refuses `scontrol update` of a job that has finished; an array
task is named <array id>_<task id> there); `wattwise slurm show` reads them back from `sacct`,
else from `scontrol show job` while the controller still holds the job.

The comment is `wattwise1:` and `name=value` pairs joined by commas, lowercase and without
quotes: Slurm 22.05's sacctmgr lowercases the comment it sets and cuts it at a quote. For that
reason a comment that already holds another tool's summary (jobstats' case-sensitive `JS1:...`)
is not rewritten: wattwise writes only where the comment is empty or its own.
"""

from __future__ import annotations

import math
import re
import subprocess
from datetime import datetime
from typing import Any

from wattwise.errors import WattwiseError

PREFIX = "wattwise1:"
_OURS = re.compile(r"wattwise1:[a-z0-9_.,=+-]*")
_PAIR = re.compile(r"^([a-z_]+)=([a-z0-9_.+-]*)$")
_RUNTIME = re.compile(r"^(?:(\d+)-)?(\d+):(\d\d):(\d\d)$")
KEPT = ("energy_j", "measured_j", "estimated_j", "operational_g", "embodied_g", "carbon_g")
MAX_COMMENT = 4000  # Slurm keeps comments of any length; ours stays a few hundred characters


class SlurmError(WattwiseError):
    """A Slurm command that failed or is missing, or a job it does not know."""


def comment(figures: dict[str, Any], runtime_s: float, cluster: str) -> str:
    """`wattwise1:...`: the job's totals, its run time, and SCI = (O + M) per job-hour."""
    kept = {name: round(float(figures.get(name, 0.0)), 3) for name in KEPT}
    if not all(math.isfinite(v) for v in kept.values()):
        raise SlurmError(f"the job's figures are not all finite numbers: {kept}")
    pairs: dict[str, object] = {"cluster": re.sub(r"[^a-z0-9_.-]", "-", cluster.lower())}
    pairs |= kept | {"nodes": int(figures.get("nodes", 0)), "runtime_s": round(runtime_s)}
    if runtime_s > 0:
        pairs["sci_g_per_job_hour"] = round(kept["carbon_g"] / (runtime_s / 3600), 3)
    return PREFIX + ",".join(f"{name}={value}" for name, value in pairs.items())


def others(existing: str) -> str:
    """What the comment holds besides ours."""
    return _OURS.sub("", existing).strip()


def parse(text: str) -> dict[str, Any] | None:
    """Our figures from a comment, or None where it holds none."""
    found = _OURS.search(text.lower())
    if found is None:
        return None
    figures: dict[str, Any] = {}
    for pair in found.group(0)[len(PREFIX) :].split(","):
        matched = _PAIR.match(pair)
        if matched is None:
            continue
        name, value = matched.groups()
        try:
            figures[name] = value if name == "cluster" else float(value)
        except ValueError:
            continue
    return figures or None


def run(*args: str, timeout_s: float = 30.0) -> str:
    try:
        done = subprocess.run(
            list(args), capture_output=True, text=True, timeout=timeout_s, check=False
        )
    except FileNotFoundError:
        raise SlurmError(f"{args[0]} is not installed here: run this on a Slurm host") from None
    except subprocess.TimeoutExpired:
        raise SlurmError(f"{' '.join(args)} did not finish within {timeout_s:g} s") from None
    if done.returncode != 0:
        raise SlurmError(f"{' '.join(args)} failed: {done.stderr.strip()[:300]}")
    return done.stdout


def job_fields(job_id: str) -> dict[str, str]:
    """`scontrol show job -o`'s fields of a job the controller still holds."""
    text = run("scontrol", "show", "job", "-o", job_id)
    fields: dict[str, str] = {}
    for token in re.finditer(r"(\w+)=(.*?)(?= \w+=|$)", text.strip()):
        fields.setdefault(token.group(1), token.group(2))
    return fields


def runtime_s(fields: dict[str, str]) -> float:
    """RunTime ([D-]HH:MM:SS) in seconds; 0 where Slurm gives none."""
    found = _RUNTIME.match(fields.get("RunTime", ""))
    if found is None:
        return 0.0
    days, hours, minutes, seconds = (int(g or 0) for g in found.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


def accounting_id(job_id: str, fields: dict[str, str]) -> str:
    """The id that names this job alone to sacctmgr: its own id, except for the array task
    that kept the array's id (the last to run), which that id would name with every task of
    the array: <array id>_<task id> there. A task split off under its own id is not found by
    <array id>_<task id> when its epilog runs (slurmdbd 22.05, tests/e2e/test_slurm.py)."""
    array, task = fields.get("ArrayJobId", ""), fields.get("ArrayTaskId", "")
    if array == job_id and task.isdigit():
        return f"{array}_{task}"
    return job_id


def start_s(fields: dict[str, str], now_unix_s: float, lookback_s: float = 30 * 86400) -> float:
    """When the job started (scontrol's StartTime, in the controller's local time), a minute
    early; `lookback_s` before now where Slurm gives none. Bounds what the store reads."""
    try:
        started = datetime.fromisoformat(fields.get("StartTime", "")).timestamp()
    except ValueError:
        return now_unix_s - lookback_s
    return min(started - 60, now_unix_s - 60)


def write(job_id: str, fields: dict[str, str], text: str) -> str:
    """Writes the comment into the accounting database, else (no slurmdbd) into the
    controller's record while it still takes updates; says where it went."""
    if len(text) > MAX_COMMENT:
        raise SlurmError(f"the job's comment would be {len(text)} characters: not written")
    target = accounting_id(job_id, fields)
    try:
        run("sacctmgr", "-i", "update", "job", "where", f"jobid={target}", "set",
            f"AdminComment={text}")  # fmt: skip
        return "sacctmgr"
    except SlurmError as database:
        try:
            run("scontrol", "update", f"JobId={job_id}", f"AdminComment={text}")
        except SlurmError as controller:
            raise SlurmError(f"{database}; and {controller}") from None
        return "scontrol"


def read_back(job_id: str) -> tuple[dict[str, Any] | None, str]:
    """Our figures for a job and where they were found: sacct's database, else the
    controller's memory."""
    try:
        lines = run("sacct", "-j", job_id, "-X", "-n", "-P", "-o", "AdminComment").splitlines()
    except SlurmError:
        lines = []
    for line in lines:
        found = parse(line)
        if found is not None:
            return found, "sacct"
    try:
        fields = job_fields(job_id)
    except SlurmError:
        return None, ""
    found = parse(fields.get("AdminComment", ""))
    return found, "scontrol" if found is not None else ""
