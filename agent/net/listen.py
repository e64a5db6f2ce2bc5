"""Listeners whose cost is bounded whatever their clients do: the HTTP endpoint (/metrics of the
node agent and of the facility daemon) here, and the work API's Unix socket (`unix_lines.py`)
on the same Listener.

Both run on the I/O loop (net/aio), so a connection costs a file descriptor and a few kB, not
a thread. Each listener holds at most `limit` connections in its pool (`pool.py`), which
closes the longest-idle one to make room. Every phase has a deadline: the TLS handshake,
reading a request, writing the answer. HTTP is parsed by h11.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import ssl
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import h11

from wattwise.checks import Rejections
from wattwise.errors import ListenError
from wattwise.net.aio import run_on_loop
from wattwise.net.pool import ConnectionPool, Slot

if TYPE_CHECKING:
    from wattwise.net.webconfig import WebConfig

log = logging.getLogger(__name__)

BACKLOG = 1024  # the kernel caps it at net.core.somaxconn
HANDSHAKE_TIMEOUT_S = 10.0
READ_TIMEOUT_S = 10.0  # to receive a whole request, from the connection or the last answer
WRITE_TIMEOUT_S = 10.0  # to hand a whole answer to a client that reads slowly
CLOSE_GRACE_S = 5.0  # a client that will not take the rest of its answer is cut off after this
ANSWER_TIMEOUT_S = 10.0  # to authenticate and render an answer
MAX_HEADER_BYTES = 16 * 1024
CHUNK_BYTES = 64 * 1024
ACCEPT_RETRY_S = 0.1


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str  # without the query string
    headers: Mapping[str, str]  # names in lower case


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[Request], Awaitable[Response]]


ConnectionHandler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, Slot], Awaitable[None]]


class Listener:
    """Accepts on a bound, listening socket, one connection at a time: each is given a slot in
    the pool (closing the longest-idle connection when full) before the next is accepted, so
    the descriptors held never exceed the pool's limit, however many clients queue. asyncio's
    own server accepts a whole backlog at once, which is how a flood ran out of descriptors."""

    def __init__(
        self,
        sock: socket.socket,
        limit: int,
        serve: ConnectionHandler,
        stream_limit: int,
        tls: Callable[[], ssl.SSLContext | None] | None = None,
    ) -> None:
        self.sock = sock
        self._tls = tls  # the TLS context for the next connection, if any (it may be reloaded)
        self.pool = ConnectionPool(limit)
        self._serve = serve
        self._stream_limit = stream_limit
        self._tasks: set[asyncio.Task] = set()
        self._accepting: asyncio.Task | None = None
        self._errors = Rejections(log)

    def start(self) -> Listener:
        async def start() -> None:
            self._accepting = asyncio.get_running_loop().create_task(self._accept())

        run_on_loop(start(), timeout_s=10)
        return self

    async def _accept(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                conn, _ = await loop.sock_accept(self.sock)
            except OSError as exc:  # EMFILE, ENFILE, ENOBUFS: wait; never spin, never die
                self._errors.reject("accept", f"accepting a connection failed: {exc}")
                await asyncio.sleep(ACCEPT_RETRY_S)
                continue
            slot = self.pool.admit(conn.close)  # until its task runs, closing is closing conn
            if slot is not None:
                task = loop.create_task(self._connection(conn, slot))
                slot.close = task.cancel  # from now on its task closes it, whatever its phase
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            # Let the evicted connections' tasks close their sockets before the next accept.
            await asyncio.sleep(0)

    async def _connection(self, conn: socket.socket, slot: Slot) -> None:
        """One connection, from its TLS handshake to the close of its descriptor: the slot is
        held until then, so the pool's limit bounds the descriptors. Evicting it cancels this
        task, which aborts the transport (never closing a socket the loop still watches)."""
        loop = asyncio.get_running_loop()
        transport: asyncio.BaseTransport | None = None
        try:
            conn.setblocking(False)
            reader = asyncio.StreamReader(limit=self._stream_limit, loop=loop)
            protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
            context = self._tls() if self._tls is not None else None
            async with asyncio.timeout(HANDSHAKE_TIMEOUT_S):  # the TLS handshake, if any
                # asyncio owns the socket from here: on failure it closes it itself.
                transport, _ = await loop.connect_accepted_socket(
                    lambda: protocol,
                    sock=conn,
                    ssl=context,
                    ssl_handshake_timeout=HANDSHAKE_TIMEOUT_S if context else None,
                )
            writer = asyncio.StreamWriter(transport, protocol, reader, loop)
            await self._serve(reader, writer, slot)
            slot.busy = False
            transport.close()  # after what is buffered is sent, if the client reads it
            await asyncio.wait_for(writer.wait_closed(), CLOSE_GRACE_S)
        except asyncio.CancelledError:
            pass  # evicted, or the listener stops: aborted below
        except (TimeoutError, OSError, ssl.SSLError, h11.ProtocolError):
            pass  # a client gone, slow or speaking nonsense: its connection alone ends
        except Exception:
            self._errors.reject("handler", "unexpected error on a connection; it was closed")
            log.debug("connection handler failed", exc_info=True)
        finally:
            if transport is not None:
                transport.abort()  # no-op when already closed
            self.pool.release(slot)

    def stop(self) -> None:
        async def stop() -> None:
            if self._accepting is not None:
                self._accepting.cancel()
            self.pool.close_all()
            self.sock.close()

        run_on_loop(stop(), timeout_s=10)


def bind_tcp(host: str, port: int) -> socket.socket:
    """A listening socket, bound here so that a taken port fails at once, in one line."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        sock = socket.create_server((host, port), family=family, backlog=BACKLOG)
    except OSError as exc:
        reason = os.strerror(exc.errno) if exc.errno else str(exc)
        raise ListenError(f"cannot listen on {host}:{port}: {reason}") from None
    sock.setblocking(False)
    return sock


def serve_http(
    sock: socket.socket, routes: Mapping[str, Handler], limit: int, web: WebConfig | None = None
) -> Listener:
    """Serves GET and HEAD of `routes` on a bound socket; `web` adds TLS, basic auth, a rate
    limit and headers (the exporter-toolkit web configuration)."""
    server = _HttpServer(routes, web)
    tls = (lambda: web.current().tls) if web is not None else None
    return Listener(sock, limit, server.connection, MAX_HEADER_BYTES, tls).start()


class _HttpServer:
    def __init__(self, routes: Mapping[str, Handler], web: WebConfig | None):
        self.routes, self.web = routes, web

    async def connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot
    ) -> None:
        settings = self.web.current() if self.web is not None else None
        if settings is not None and settings.tls is not None:
            settings.check_peer(writer.get_extra_info("ssl_object"))
        http = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEADER_BYTES)
        while True:
            async with asyncio.timeout(READ_TIMEOUT_S):
                request = await _read_request(reader, http)
            if request is None:
                return
            slot.busy = True  # answering: not to be evicted, for at most the two deadlines
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                response = await self._answer(request, settings)
            async with asyncio.timeout(WRITE_TIMEOUT_S):
                await _write(writer, http, request.method, response)
            slot.answered()  # the longest idle is the one evicted first
            if http.our_state is not h11.DONE or http.their_state is not h11.DONE:
                return
            http.start_next_cycle()

    async def _answer(self, request: Request, settings) -> Response:
        extra = settings.headers if settings is not None else ()
        if settings is not None:
            refusal = await settings.admit(request)
            if refusal is not None:
                return Response(refusal.status, refusal.body, refusal.headers + extra)
        if request.method not in ("GET", "HEAD"):
            return Response(405, b"only GET and HEAD\n", (("Allow", "GET, HEAD"), *extra))
        handler = self.routes.get(request.path)
        if handler is None:
            return Response(404, f"no {request.path} here; try /metrics\n".encode(), extra)
        response = await handler(request)
        return Response(response.status, response.body, response.headers + extra)


async def _read_request(reader: asyncio.StreamReader, http: h11.Connection) -> Request | None:
    """The next request, with any body read and dropped; None when the client closed."""
    request = None
    body_bytes = 0
    while True:
        event = http.next_event()
        if event is h11.NEED_DATA:
            http.receive_data(await reader.read(CHUNK_BYTES))
        elif isinstance(event, h11.Request):
            request = event
        elif isinstance(event, h11.Data):
            body_bytes += len(event.data)
            if body_bytes > MAX_HEADER_BYTES:
                raise h11.RemoteProtocolError("request body too large")
        elif isinstance(event, h11.EndOfMessage) and request is not None:
            target = request.target.decode("ascii", "replace")
            return Request(
                request.method.decode("ascii", "replace"),
                target.split("?", 1)[0],
                {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in request.headers},
            )
        elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
            return None


async def _write(
    writer: asyncio.StreamWriter, http: h11.Connection, method: str, response: Response
) -> None:
    headers = [("Content-Length", str(len(response.body))), *response.headers]
    writer.write(http.send(h11.Response(status_code=response.status, headers=headers)))
    if method != "HEAD":
        view = memoryview(response.body)
        for start in range(0, len(view), CHUNK_BYTES):
            writer.write(http.send(h11.Data(data=view[start : start + CHUNK_BYTES])))
            await writer.drain()  # a slow reader holds one chunk, not the whole answer
    writer.write(http.send(h11.EndOfMessage()))
    await writer.drain()


class Renderer(Protocol):
    def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, bool]: ...


LANDING = b"wattwise: energy and carbon of this server's jobs. Metrics: /metrics\n"


def metrics_routes(exposition: Renderer) -> dict[str, Handler]:
    """/metrics (rendered off the I/O loop, on one thread: a new snapshot is rendered once
    however many scrapes wait for it) and a landing page at /."""
    renderer = ThreadPoolExecutor(1, thread_name_prefix="render")

    async def metrics(request: Request) -> Response:
        body, content_type, gzipped = await asyncio.get_running_loop().run_in_executor(
            renderer,
            exposition.render,
            request.headers.get("accept", ""),
            request.headers.get("accept-encoding", ""),
        )
        headers = [("Content-Type", content_type)]
        if gzipped:
            headers.append(("Content-Encoding", "gzip"))
        return Response(200, body, tuple(headers))

    async def landing(_request: Request) -> Response:
        return Response(200, LANDING, (("Content-Type", "text/plain; charset=utf-8"),))

    return {"/metrics": metrics, "/": landing}
