"""Report a job's work to the local wattwise agent, from Python:

from wattwise.work.client import report_work
report_work("tokens", add=512)          # inside the job: the job is found from this process
report_work("samples", total=step * batch)   # or a cumulative counter; resets are handled
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

from wattwise.errors import WorkReportError

DEFAULT_SOCKET = Path("/run/wattwise/wattwise.sock")
CONNECT_ATTEMPTS = 10


def report_work(
    unit: str,
    add: float | None = None,
    total: float | None = None,
    job: str | None = None,
    socket_path: Path | str = DEFAULT_SOCKET,
    timeout_s: float = 2.0,
) -> dict:
    """Sends one report; returns the agent's answer ({"job", "unit", "total_units"})."""
    request: dict = {"unit": unit}
    if add is not None:
        request["add"] = add
    if total is not None:
        request["total"] = total
    if job is not None:
        request["job"] = job
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout_s)
            _connect(sock, str(socket_path), time.monotonic() + timeout_s)
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = sock.makefile("rb").readline()
    except OSError as exc:
        raise WorkReportError(f"cannot reach the wattwise agent at {socket_path}: {exc}") from None
    try:
        reply = json.loads(answer)
    except ValueError:
        raise WorkReportError("the agent's answer is not JSON") from None
    if not reply.get("ok"):
        raise WorkReportError(reply.get("error", "refused"))
    return {k: v for k, v in reply.items() if k != "ok"}


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
