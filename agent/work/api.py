"""Work units a job reports (tokens, samples, ...), for performance per watt, and the local API
that takes them: a Unix socket whose peer credentials decide whose jobs a caller may report for.

One JSON object per line each way. Request: {"unit": "tokens", "add": 512} or {"unit": ...,
"total": 10240} (a cumulative counter from the job; a decrease is a reset, so the new total is
all new work), and optionally "job": "42" or "slurm:42". Without "job", the caller's own job is
the one its process runs in. Root may report for any job; anybody else only from inside the job,
or for jobs their own user runs. Reply: {"ok": true, "job": key, "unit": u, "total_units": n}
or {"ok": false, "error": "..."}.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import socket
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from pathlib import Path

from wattwise.checks import BadNumber, Rejections, number
from wattwise.errors import WorkError
from wattwise.model import Finding, JobFigure
from wattwise.net.listen import Listener
from wattwise.net.pool import MAX_CONNECTIONS
from wattwise.net.unix_lines import serve_unix_lines

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 4096
# More than any real job reports in one go or counts in total (a billion tokens a second for
# eleven days); a larger figure is an error or an attack, and would erode the totals' precision.
MAX_UNITS = 1e15


class WorkCounts:
    """Per-job work totals, shared by the socket's threads and the tick."""

    def __init__(self, seed: Mapping[tuple[str, str], float] | None = None) -> None:
        self._lock = threading.Lock()
        self._reported: dict[tuple[str, str, str], float] = {}  # last total per counter
        self._pending: dict[tuple[str, str], float] = defaultdict(float)
        self.reseed(seed or {})

    def reseed(self, seed: Mapping[tuple[str, str], float]) -> None:
        """Totals from the ledger (at startup, or once a ledger that could not be opened is)."""
        with self._lock:
            self._totals: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
            for (job, unit), units in seed.items():
                self._totals[job][unit] = units
            # Reported since the last drain: not in the ledger's totals yet, but on their way.
            for (job, unit), units in self._pending.items():
                self._totals[job][unit] += units
            # Counters of these were counted before: they resume, not restart.
            self._resumed = {key for key, units in seed.items() if units > 0}

    def add(self, job: str, unit: str, units: float) -> float:
        if not 0 <= units <= MAX_UNITS:  # also false for NaN: nothing else reaches a total
            raise ValueError(f"{units!r} units is not a usable amount of work")
        with self._lock:
            self._totals[job][unit] += units
            self._pending[(job, unit)] += units
            return self._totals[job][unit]

    def report_total(self, job: str, unit: str, total: float, counter: str = "") -> float:
        """A job's own cumulative counter; a decrease is a restart, like a Prometheus reset.
        `counter` tells apart several counters of one job and unit (say, one per series)."""
        with self._lock:
            previous = self._reported.get((job, unit, counter))
            self._reported[(job, unit, counter)] = total
        if previous is None:
            # First sight: all of it is the job's work, unless the agent restarted mid-job and
            # counted it already (work done while the agent was down is lost, not doubled).
            added = 0.0 if (job, unit) in self._resumed else total
        else:
            added = total - previous if total >= previous else total
        return self.add(job, unit, added)

    def total(self, job: str, unit: str) -> float:
        with self._lock:
            return self._totals.get(job, {}).get(unit, 0.0)

    def drain(self) -> list[JobFigure]:
        """What was added since the last drain, for the running totals and the ledger."""
        with self._lock:
            pending, self._pending = self._pending, defaultdict(float)
        return [JobFigure(job, "work", unit, units) for (job, unit), units in pending.items()]

    def retain(self, jobs: set[str]) -> None:
        """Forgets jobs no longer shown (ended past the grace period); the ledger keeps them."""
        with self._lock:
            if self._totals.keys() <= jobs:
                return
            for job in [j for j in self._totals if j not in jobs]:
                del self._totals[job]
            self._reported = {k: v for k, v in self._reported.items() if k[0] in jobs}
            self._resumed = {k for k in self._resumed if k[0] in jobs}

    def by_job(self) -> dict[str, dict[str, float]]:
        with self._lock:
            return {job: dict(units) for job, units in self._totals.items()}


class WorkServer:
    """`job_of_pid(pid)` -> job key or None; `job_user(key)` -> the job's user name or None;
    `known(key_or_id)` -> the job key if the job runs on this node."""

    def __init__(
        self,
        path: Path,
        counts: WorkCounts,
        units: tuple[str, ...],
        job_of_pid: Callable[[int], str | None],
        job_user: Callable[[str], str | None],
        known: Callable[[str], str | None],
    ) -> None:
        self.path, self.counts, self.units = path, counts, units
        self.job_of_pid, self.job_user, self.known = job_of_pid, job_user, known
        self._listener: Listener | None = None
        self._faults = Rejections(log)

    def handle(self, request: bytes, pid: int, uid: int) -> dict:
        try:
            reply = self._take(request, pid, uid)
        except WorkError as exc:
            # The caller gets every reason; the log gets the first of a user's refusals until
            # one of their reports is taken again (a caller cannot flood it).
            why = f"work API report from pid {pid} uid {uid}: {exc}"
            self._faults.reject(f"uid {uid}", why, once=True)
            return {"ok": False, "error": str(exc)}
        self._faults.accept(f"uid {uid}")
        return {"ok": True, **reply}

    def _take(self, request: bytes, pid: int, uid: int) -> dict:
        try:
            body = json.loads(request, parse_constant=_not_a_number)
        except (ValueError, RecursionError):
            raise WorkError("the request is not JSON with finite numbers") from None
        if not isinstance(body, dict):
            raise WorkError("the request must be a JSON object")
        unit = body.get("unit")
        if unit not in self.units:
            raise WorkError(f"unit must be one of {', '.join(self.units)} (work.units)")
        modes = [m for m in ("add", "total") if m in body]
        if len(modes) != 1:
            raise WorkError('give exactly one of "add" (units done) or "total" (a counter)')
        try:
            value = number(body[modes[0]], f'"{modes[0]}"', 0.0, MAX_UNITS)
        except BadNumber as exc:
            raise WorkError(f"{exc}: it must be a number from 0 to {MAX_UNITS:g}") from None
        own = self.job_of_pid(pid)
        if body.get("job") is None:
            if own is None:
                raise WorkError(f'process {pid} is not in any job; name one with "job"')
            job = own
        else:
            job = self.known(str(body["job"]))
            if job is None:
                raise WorkError(f"no job {body['job']!r} runs on this node")
        if uid != 0 and job != own:
            user = _user_name(uid)
            owner = self.job_user(job)
            if owner is None or owner != user:
                raise WorkError(
                    f"{user or uid} may not report work for {job} (run by {owner or 'unknown'}): "
                    "report from inside the job, as its user, or as root"
                )
        if modes[0] == "add":
            total = self.counts.add(job, unit, value)
        else:
            total = self.counts.report_total(job, unit, value)
        return {"job": job, "unit": unit, "total_units": total}

    def answer(self, line: bytes | None, pid: int, uid: int) -> bytes:
        """The reply line to one request line; never raises (a bug answers, and is logged once)."""
        try:
            if line is None:
                raise WorkError(f"the request is longer than {MAX_REQUEST_BYTES} bytes")
            reply = self.handle(line, pid, uid)
        except WorkError as exc:
            reply = {"ok": False, "error": str(exc)}
        except Exception as exc:
            self._faults.reject(type(exc).__name__, f"work API request from pid {pid}: {exc!r}")
            reply = {"ok": False, "error": f"internal error ({type(exc).__name__})"}
        return json.dumps(reply).encode() + b"\n"

    def start(self, connection_limit: int = MAX_CONNECTIONS) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.is_socket():
            self.path.unlink()  # left by an agent that was killed
        self._listener = serve_unix_lines(
            str(self.path), self.answer, connection_limit, MAX_REQUEST_BYTES
        )
        log.info("work API on %s", self.path)

    def stop(self) -> None:
        if self._listener is not None:
            self._listener.stop()
            self._listener = None
            self.path.unlink(missing_ok=True)


SUN_PATH_MAX = 107  # bytes of a Unix socket's path, as Linux's sockaddr_un holds it


def probe_socket(path: Path) -> Finding:
    """Whether the work API can listen at `path`; creates nothing."""
    try:
        return _probe_socket(path)
    except OSError as exc:
        return Finding.uncheckable("work", "socket", str(path), exc)


def _probe_socket(path: Path) -> Finding:
    fix = "set work.socket_path, or run as the agent's user"
    if len(os.fsencode(path)) > SUN_PATH_MAX:
        ok, detail = False, f"longer than a Unix socket's path may be ({SUN_PATH_MAX} bytes)"
        fix = "set work.socket_path to a shorter path"
    elif path.is_socket():
        ok, detail = True, _socket_state(path)
    elif path.exists():
        ok, detail = False, "something that is not a socket is in the way"
        fix = "move it aside, or set work.socket_path"
    else:
        parent = next((p for p in path.parents if p.exists()), path.parent)
        ok = parent.is_dir() and os.access(parent, os.W_OK | os.X_OK)
        detail = "will be created" if ok else f"cannot be created: {parent} is not writable"
    return Finding("work", "socket", str(path), ok, detail, "" if ok else fix)


def _socket_state(path: Path) -> str:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.5)
        try:
            probe.connect(str(path))
        except OSError:
            return "a socket no agent answers on (left by a stopped agent): replaced at start"
    return "an agent is listening on it now"


def _not_a_number(constant: str) -> float:
    raise ValueError(f"{constant} is not a finite number")


def _user_name(uid: int) -> str | None:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return None
