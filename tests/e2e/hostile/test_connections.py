"""Issue item 2: idle connections, floods of reporters and of scrapers never stop measurement.

The real `wattwise run` runs with the open-file limit a default unit gets (1,024), as the agent
on a node where the unit sets no LimitNOFILE would."""

from __future__ import annotations

import concurrent.futures
import functools
import resource
import signal
import socket
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, suppress
from pathlib import Path

import httpx
import pytest

from tests.e2e.test_jobs import Node, node  # noqa: F401
from tests.e2e.test_run import DEADLINE_S, Agent
from wattwise.net.pool import ConnectionPool
from wattwise.work.client import report_work

IDLE = 2_000


def default_unit_limit() -> None:  # in the agent's child process, before exec
    resource.setrlimit(resource.RLIMIT_NOFILE, (1024, 1024))


@pytest.fixture(autouse=True)
def enough_descriptors_for_the_test() -> None:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2 * IDLE + 500:
        pytest.skip(f"this test process may open only {hard} files")
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@contextmanager
def idle_connections(count: int, family: int, address: object) -> Iterator[list[socket.socket]]:
    """`count` connections that never send a byte (those the listener evicts just close)."""
    with ExitStack() as stack:
        held = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(family, socket.SOCK_STREAM))
            sock.setblocking(False)
            with suppress(BlockingIOError, InterruptedError):
                sock.connect(address)  # in the accept queue: it counts as held all the same
            held.append(sock)
        yield held


def start_with_work_api(node: Node) -> tuple[Agent, Path]:  # noqa: F811
    """A real agent with the work socket, under a default unit's open-file limit."""
    sock_path = node.root / "wattwise.sock"
    agent = node.start(
        preexec_fn=default_unit_limit,
        WATTWISE_WORK__ENABLED="true",
        WATTWISE_WORK__SOCKET_PATH=str(sock_path),
    )
    return agent, sock_path


def threads_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    raise AssertionError("no Threads line")


def test_item2_idle_connections_never_stop_ticks_nor_a_real_scrape(node: Node) -> None:  # noqa: F811
    agent, sock_path = start_with_work_api(node)
    port = int(agent.url.split(":")[2].split("/")[0])
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        with (
            idle_connections(IDLE, socket.AF_INET, ("127.0.0.1", port)),
            idle_connections(IDLE, socket.AF_UNIX, str(sock_path)),
        ):
            staleness, latency = [], []
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                # A normal scrape answers, with fresh ticks behind it. Staleness is taken
                # from when it was asked, so a slow answer on a loaded 2-core CI machine
                # does not count as ticks that stopped.
                asked = time.time()
                text = httpx.get(agent.url, timeout=DEADLINE_S).text
                latency.append(time.time() - asked)
                last_tick = next(
                    float(line.split()[-1])
                    for line in text.splitlines()
                    if line.startswith("wattwise_last_tick_timestamp_seconds ")
                )
                staleness.append(asked - last_tick)
                assert 'wattwise_source_up{source="rapl"} 1.0' in text
                time.sleep(0.2)
            answer = report_work(
                "tokens", add=5, job="12", socket_path=sock_path, timeout_s=DEADLINE_S
            )
            assert answer["total_units"] == 5
            assert threads_of(agent.process.pid) < 40  # a connection is not a thread
        # Ticks kept their 0.2 s cadence the whole time (generous for a loaded CI machine).
        assert max(staleness) < 2.0, staleness
        # Scrapes kept coming (once one wedged the agent for good), each well within Prometheus'
        # default 10 s scrape timeout.
        assert len(latency) >= 5 and max(latency) < 5.0, latency
    finally:
        agent.process.send_signal(signal.SIGTERM)
        _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert "Too many open files" not in stderr
    assert "Traceback" not in stderr


def test_item2_two_hundred_reporters_and_scrapers_at_once_all_get_through(node: Node) -> None:  # noqa: F811
    agent, sock_path = start_with_work_api(node)
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        with concurrent.futures.ThreadPoolExecutor(200) as pool:
            report = functools.partial(
                report_work, "tokens", add=1, job="12", socket_path=sock_path, timeout_s=DEADLINE_S
            )
            reports = [pool.submit(report) for _ in range(200)]
            scrapes = [pool.submit(httpx.get, agent.url, timeout=10) for _ in range(200)]
            # The shipped client waits out a full accept queue instead of failing (EAGAIN).
            totals = sorted(f.result()["total_units"] for f in reports)
            assert totals == [float(n) for n in range(1, 201)]
            assert {f.result().status_code for f in scrapes} == {200}
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)


def test_item2_a_full_pool_makes_room_by_closing_the_longest_idle_connection() -> None:
    class Transport:
        def __init__(self) -> None:
            self.aborted = False

        def abort(self) -> None:
            self.aborted = True

    pool = ConnectionPool(limit=2)
    first, second = Transport(), Transport()
    a = pool.admit(first.abort)
    b = pool.admit(second.abort)
    assert a is not None and b is not None
    pool.touch(a)  # a answered a request since: b is now the longest idle
    third = Transport()
    c = pool.admit(third.abort)
    assert c is not None
    assert (first.aborted, second.aborted, third.aborted) == (False, True, False)
    a.busy = c.busy = True  # every connection busy: a newcomer is refused, nobody cut mid-answer
    fourth = Transport()
    assert pool.admit(fourth.abort) is None
    assert fourth.aborted and not first.aborted
    assert len(pool) == 2 and pool.evicted == 1


def test_a_kept_alive_connection_answers_scrape_after_scrape(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prometheus keeps its connection open between scrapes: every one must be answered on it,
    and answering marks the connection as the most recently active (it was closed with an
    'unexpected error' after its first answer)."""
    from wattwise.net.listen import Request, Response, bind_tcp, serve_http

    async def page(_request: Request) -> Response:
        return Response(200, b"wattwise_up 1\n", (("Content-Type", "text/plain"),))

    sock = bind_tcp("127.0.0.1", 0)
    listener = serve_http(sock, {"/metrics": page}, limit=4)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{sock.getsockname()[1]}") as client:
            answers = [client.get("/metrics") for _ in range(5)]
        assert [a.status_code for a in answers] == [200] * 5
        assert listener.pool.evicted == 0
    finally:
        listener.stop()
    assert "unexpected error" not in caplog.text


def test_item2_a_client_that_never_reads_its_answer_holds_one_chunk_not_the_agent(
    node: Node,  # noqa: F811
) -> None:
    """Fifty clients ask for /metrics and never read; a normal scrape still answers."""
    agent = node.start(preexec_fn=default_unit_limit)
    port = int(agent.url.split(":")[2].split("/")[0])
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        with ExitStack() as stack:
            for _ in range(50):
                sock = stack.enter_context(socket.create_connection(("127.0.0.1", port)))
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
                sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n" * 20)
            for _ in range(5):
                assert httpx.get(agent.url, timeout=DEADLINE_S).status_code == 200
    finally:
        agent.process.send_signal(signal.SIGTERM)
        _, stderr = agent.process.communicate(timeout=DEADLINE_S)
    assert "Traceback" not in stderr


def test_item2_unknown_paths_and_methods_are_refused(node: Node) -> None:  # noqa: F811
    agent = node.start()
    base = agent.url.removesuffix("/metrics")
    try:
        agent.wait_for(lambda m: ("wattwise_jobs", ("scheduler", "slurm")) in m)
        assert httpx.get(f"{base}/nope", timeout=5).status_code == 404
        assert httpx.post(agent.url, content=b"x", timeout=5).status_code == 405
        gzipped = httpx.get(agent.url, headers={"Accept-Encoding": "gzip"}, timeout=5)
        assert gzipped.headers["content-encoding"] == "gzip" and b"wattwise_jobs" in gzipped.content
        om = httpx.get(agent.url, headers={"Accept": "application/openmetrics-text"}, timeout=5)
        assert om.headers["content-type"].startswith("application/openmetrics-text")
        assert om.text.rstrip().endswith("# EOF")
    finally:
        agent.process.send_signal(signal.SIGTERM)
        agent.process.communicate(timeout=DEADLINE_S)


def test_item2_the_units_raise_the_open_file_limit() -> None:
    from tests.project.test_deploy import SYSTEMD

    for unit in ("wattwise.service", "wattwise-facility.service"):
        lines = (SYSTEMD / unit).read_text().splitlines()
        (limit,) = [int(line.split("=", 1)[1]) for line in lines if line.startswith("LimitNOFILE=")]
        assert limit >= 8192, unit
