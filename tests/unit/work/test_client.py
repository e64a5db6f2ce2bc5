"""The Python client's never-raising form (issue 16): a training loop that follows the docs'
example must not crash, nor slow down, when the agent is down or hung."""

from __future__ import annotations

import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from wattwise.work import client


@pytest.fixture(autouse=True)
def no_backoff_left() -> None:
    client._Backoff.until_monotonic_s, client._Backoff.dropped = 0.0, 0


def test_a_loop_reporting_to_an_absent_agent_runs_to_its_end(tmp_path: Path) -> None:
    loop = textwrap.dedent(
        f"""
        import logging
        from wattwise.work.client import report_work_or_drop
        logging.basicConfig(level=logging.WARNING)
        answers = [report_work_or_drop("tokens", add=512, socket_path={str(tmp_path / "x.sock")!r})
                   for step in range(1000)]
        print("trained", answers.count(None))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", loop], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "trained 1000\n"
    warnings = [line for line in result.stderr.splitlines() if "work report dropped" in line]
    assert len(warnings) == 1 and "cannot reach the wattwise agent" in warnings[0]


def test_a_hung_agent_is_asked_once_per_backoff_not_once_per_report(tmp_path: Path) -> None:
    path = tmp_path / "hung.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as hung:
        hung.bind(str(path))
        hung.listen(16)  # connections queue, and nothing ever answers
        answers = [client.report_work_or_drop("tokens", add=1, socket_path=path) for _ in range(50)]
        hung.setblocking(False)
        asked = 0
        while True:
            try:
                hung.accept()[0].close()
            except BlockingIOError:
                break
            asked += 1
    assert answers == [None] * 50
    assert asked == 1  # the other 49 were dropped unsent during the back-off
    assert client._Backoff.dropped == 49


def test_arguments_the_agent_could_never_take_are_dropped_too(tmp_path: Path) -> None:
    class Tensor:  # what a training loop might pass by mistake: not a number
        pass

    class Exploding:  # a __float__ that fails in its own way
        def __float__(self) -> float:
            raise RuntimeError("CUDA error: device-side assert triggered")

    path = tmp_path / "x.sock"
    # Each is refused by the agent, or by float(); none may reach the caller of the quiet
    # form (review: NaN started the back-off, 10**400 and a failing __float__ escaped).
    for count in (Tensor(), Exploding(), True, "5", float("nan"), float("inf"), -1, 10**400, 2e15):
        assert client.report_work_or_drop("tokens", add=count, socket_path=path) is None
        with pytest.raises(ValueError):
            client.report_work("tokens", add=count, socket_path=path)  # type: ignore[arg-type]
    assert client._Backoff.until_monotonic_s == 0.0  # nothing was sent: no back-off


class _Agent:
    """A socket that answers every report with `line`, counting what it was sent."""

    def __init__(self, path: Path, line: bytes) -> None:
        import threading

        self.sent: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.line = line
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.sent.append(conn.makefile("rb").readline())
                conn.sendall(self.line)


def test_an_answer_that_is_no_object_is_dropped_not_raised(tmp_path: Path) -> None:
    """`null` from the agent raised AttributeError through the never-raising form (review)."""
    agent = _Agent(tmp_path / "a.sock", b"null\n")
    try:
        assert (
            client.report_work_or_drop(
                "tokens", add=1, socket_path=tmp_path / "a.sock", timeout_s=5
            )
            is None
        )
        with pytest.raises(client.WorkReportError, match="not a JSON object"):
            client.report_work("tokens", add=1, socket_path=tmp_path / "a.sock")
    finally:
        agent.sock.close()


def test_scalars_that_convert_to_float_are_sent_and_a_bad_count_costs_no_back_off(
    tmp_path: Path,
) -> None:
    class Scalar:  # a numpy or PyTorch scalar: float() takes it, json.dumps does not
        def __float__(self) -> float:
            return 512.0

    class Tensor:  # many elements: no float
        pass

    path = tmp_path / "a.sock"
    agent = _Agent(path, b'{"ok": true, "job": "slurm:1", "unit": "tokens", "total_units": 512}\n')
    try:
        assert client.report_work_or_drop("tokens", add=Tensor(), socket_path=path) is None
        assert client._Backoff.until_monotonic_s == 0.0  # the next good report still goes
        answer = client.report_work_or_drop("tokens", add=Scalar(), socket_path=path, timeout_s=5)
    finally:
        agent.sock.close()
    assert answer == {"job": "slurm:1", "unit": "tokens", "total_units": 512}
    assert agent.sent == [b'{"unit": "tokens", "add": 512.0}\n']
