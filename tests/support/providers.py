"""A local HTTP server that answers as a provider's API would, in the shape a test sets."""

from __future__ import annotations

import contextlib
import json
import ssl
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Script:
    """What the server answers: a status and a JSON body (or raw bytes, or a function of the
    request's path giving both), maybe after a delay."""

    status: int = 200
    body: Any = None
    delay_s: float = 0.0
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    routes: dict[str, tuple[int, Any]] = field(default_factory=dict)  # path prefix -> answer


@contextmanager
def serve(script: Script, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """The server's base URL; https:// with `tls`, a server context."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            script.requests.append((self.path, dict(self.headers)))
            time.sleep(script.delay_s)
            status, body = script.status, script.body
            if callable(body):  # an answer that depends on the request
                status, body = body(self.path)
            for prefix, answer in script.routes.items():
                if self.path.startswith(prefix):
                    status, body = answer
            raw = body if isinstance(body, bytes) else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            # The client may have given up (a deadline or a size cap under test).
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                self.wfile.write(raw)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
