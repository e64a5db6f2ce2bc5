"""Report a job's work to the local wattwise agent, from Python. In a training or serving
loop, use the form that never raises: a job must not fail because its meter is down.

from wattwise.work.client import report_work_or_drop
report_work_or_drop("tokens", add=512)   # inside the job: the job is found from this process
report_work_or_drop("samples", total=step * batch)   # a cumulative counter; resets are handled

report_work() is the same report, raising WorkReportError when it was not taken.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from pathlib import Path

from wattwise.errors import WorkReportError

DEFAULT_SOCKET = Path("/run/wattwise/wattwise.sock")
CONNECT_ATTEMPTS = 10
MAX_COUNT = 1e15  # the agent's bound on one report (work/api.py MAX_UNITS)
QUIET_TIMEOUT_S = 0.25  # what one report may cost a loop whose agent hangs
BACKOFF_S = 30.0  # after a failure, reports are dropped unsent for this long

log = logging.getLogger(__name__)


def report_work(
    unit: str,
    add: float | None = None,
    total: float | None = None,
    job: str | None = None,
    socket_path: Path | str = DEFAULT_SOCKET,
    timeout_s: float = 2.0,
) -> dict:
    """Sends one report; returns the agent's answer ({"job", "unit", "total_units"}).
    WorkReportError when the agent did not take it; ValueError, before anything is sent, for
    a count the agent would refuse."""
    payload = _request_line(unit, add, total, job)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            _connect(sock, str(socket_path), time.monotonic() + timeout_s)
            sock.sendall(payload)
            answer = sock.makefile("rb").readline()
    except OSError as exc:
        raise WorkReportError(f"cannot reach the wattwise agent at {socket_path}: {exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise WorkReportError("the agent's answer is not JSON") from None
    if not isinstance(reply, dict):
        raise WorkReportError("the agent's answer is not a JSON object")
    if not reply.get("ok"):
        raise WorkReportError(reply.get("error", "refused"))
    return {k: v for k, v in reply.items() if k != "ok"}


def _request_line(unit: str, add: object, total: object, job: str | None) -> bytes:
    """The report as the agent reads it. Counts go through float(), so numpy and PyTorch
    scalars are taken; a count the agent would refuse (a bool, a string, NaN, negative, over
    MAX_COUNT, something float() cannot take) is a ValueError here, before anything is sent."""
    request: dict = {"unit": _text(unit, "unit")}
    for name, count in (("add", add), ("total", total)):
        if count is not None:
            request[name] = _count(count, name)
    if job is not None:
        request["job"] = _text(job, "job")
    return json.dumps(request, allow_nan=False).encode() + b"\n"


def _count(value: object, name: str) -> float:
    if isinstance(value, bool | str | bytes):
        raise ValueError(f"{name}={value!r} is not a count")
    try:
        found = float(value)  # type: ignore[arg-type]
    except Exception as exc:  # whatever a tensor's __float__ raises
        raise ValueError(f"{name}: {type(value).__name__} is not a number ({exc})") from None
    if not 0.0 <= found <= MAX_COUNT:  # also false for NaN
        raise ValueError(f"{name}={found!r}: a count is a number from 0 to {MAX_COUNT:g}")
    return found


def _text(value: object, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name}={value!r} is not a string")
    return value


class _Backoff:
    """Until when reports are dropped unsent, how many were since the last warning, and when
    a report that was no number was last logged."""

    lock = threading.Lock()
    until_monotonic_s = 0.0
    dropped = 0
    bad_logged_monotonic_s = -BACKOFF_S


def report_work_or_drop(
    unit: str,
    add: object = None,
    total: object = None,
    job: str | None = None,
    socket_path: Path | str = DEFAULT_SOCKET,
    timeout_s: float = QUIET_TIMEOUT_S,
) -> dict | None:
    """report_work() that never raises. A report the agent did not take (down, hung, refusing)
    is dropped with one warning, and for BACKOFF_S after it reports are dropped unsent, so a
    down or hung agent costs the caller at most about twice `timeout_s` (connecting, then
    waiting for the answer) every 30 s. A count that is no number is dropped with a warning
    (at most one per BACKOFF_S) and no back-off: the caller's next good report goes. Returns
    the agent's answer, or None when the report was dropped. With `total`, a dropped report
    loses nothing: the next one taken carries it."""
    try:
        _request_line(unit, add, total, job)
    except Exception as exc:  # a bad count must not reach the caller either
        with _Backoff.lock:
            now = time.monotonic()
            quiet = now - _Backoff.bad_logged_monotonic_s < BACKOFF_S
            if not quiet:
                _Backoff.bad_logged_monotonic_s = now
        if not quiet:
            log.warning("wattwise: work report dropped, its count is no number: %s", exc)
        return None
    with _Backoff.lock:
        if time.monotonic() < _Backoff.until_monotonic_s:
            _Backoff.dropped += 1
            return None
    try:
        return report_work(unit, add, total, job, socket_path, timeout_s)  # type: ignore[arg-type]
    except Exception as exc:  # whatever happened, it is not the caller's job to handle it
        with _Backoff.lock:
            first = time.monotonic() >= _Backoff.until_monotonic_s  # not another thread's
            dropped = _Backoff.dropped
            if first:
                _Backoff.dropped = 0
                _Backoff.until_monotonic_s = time.monotonic() + BACKOFF_S
            else:
                _Backoff.dropped += 1
        if first:
            log.warning(
                "wattwise: work report dropped (%s); %d more dropped since the last warning; "
                "reports are dropped unsent for %.0f s",
                exc,
                dropped,
                BACKOFF_S,
            )
        return None


def _connect(sock: socket.socket, path: str, deadline: float) -> None:
    """Connects, waiting out a full accept queue (EAGAIN: many jobs reporting at once) with a
    growing pause, a bounded number of times and never past the deadline."""
    pause_s = 0.005
    for attempt in range(CONNECT_ATTEMPTS):
        try:
            sock.connect(path)
            return
        except BlockingIOError:
            if attempt == CONNECT_ATTEMPTS - 1 or time.monotonic() + pause_s > deadline:
                raise
            time.sleep(pause_s)
            pause_s = min(pause_s * 2, 0.25)
