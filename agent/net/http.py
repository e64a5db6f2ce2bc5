"""Every outgoing HTTP request the agent makes (carbon providers, meters, BMCs, the kubelet, jobs'
/metrics, the facility's PUE): a total deadline and a size cap, whatever the server does.

httpx's timeouts bound each read, not the request: a server that trickles a byte every few
seconds kept a request alive for minutes. Here a request runs on the I/O loop (agent.aio) and is
cancelled at its deadline, whatever phase it is in; its body is streamed and abandoned past the
cap (decoded bytes: a gzip bomb counts at its real size). httpx retries failed connections; the
callers' own schedules (the provider chain's retry within five minutes) are the backoff for
everything else. Errors are raised as the caller's exception class, with a message an operator
can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wattwise.clock import unix_s_from_iso
from wattwise.errors import ConfigError, HttpError
from wattwise.net.aio import run_on_loop

DEFAULT_DEADLINE_S = 10.0
DEFAULT_MAX_BYTES = 8 * 1024 * 1024

_HINTS = {
    401: "the API key or login was refused: check it",
    403: "the API key has no access to this zone or endpoint",
    429: "rate limited by the provider: the chain asks again later",
}


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    content: bytes
    encoding: str | None  # the charset the server named, if any

    @property
    def text(self) -> str:
        return self.content.decode(self.encoding or "utf-8", errors="replace")


class _TooLarge(Exception):
    pass


def ca_context(ca_file: str | Path) -> ssl.SSLContext:
    """A client context trusting the bundle at `ca_file`; ConfigError naming the file when it
    cannot be read or holds no certificate."""
    try:
        return ssl.create_default_context(cafile=str(ca_file))
    except ssl.SSLError as exc:  # before OSError, its base
        why = exc.reason or exc
        raise ConfigError(f"the CA bundle {ca_file} holds no usable certificate: {why}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read the CA bundle {ca_file}: {exc.strerror or exc}") from None


def tls_verify(verify: bool | str) -> bool | ssl.SSLContext:
    """httpx's verify from a bool or a CA bundle's path."""
    if isinstance(verify, str):
        return ca_context(verify)
    return verify


class HttpClient:
    """GET with a total deadline and a body cap. Safe to share between threads."""

    def __init__(
        self,
        deadline_s: float = DEFAULT_DEADLINE_S,
        max_bytes: int = DEFAULT_MAX_BYTES,
        verify: bool | str = True,
    ) -> None:
        import httpx  # here, not at the top: commands that make no request never load it

        self.deadline_s, self.max_bytes = deadline_s, max_bytes
        verify_tls = tls_verify(verify)
        self._client = httpx.AsyncClient(
            timeout=deadline_s,
            verify=verify_tls,
            transport=httpx.AsyncHTTPTransport(retries=2, verify=verify_tls),
        )

    def get(self, url: str, *, error: type[Exception] = HttpError, **kwargs: Any) -> Reply:
        """A GET that answered below 300, or `error` naming the URL and what went wrong."""
        import httpx

        try:
            # The coroutine keeps its own deadline; the wait here only guards a wedged loop.
            status, content, encoding, location = run_on_loop(
                self._get(url, **kwargs), timeout_s=self.deadline_s + 5
            )
        except (TimeoutError, httpx.TimeoutException):
            raise error(f"{url} did not answer within {self.deadline_s:g} s") from None
        except _TooLarge:
            raise error(f"{url} answered more than {self.max_bytes} bytes: not read") from None
        except httpx.HTTPError as exc:
            raise error(f"{url} failed: {type(exc).__name__}: {exc}") from None
        except (OSError, ValueError, ssl.SSLError) as exc:
            raise error(f"{url} failed: {exc}") from None
        if 300 <= status < 400:
            where = f" to {location}" if location else ""
            raise error(f"{url} answered HTTP {status}, a redirect{where}: configure that URL")
        if status >= 400:
            hint = _HINTS.get(status, "the server failed")
            raise error(f"{url} answered HTTP {status}: {hint}")
        return Reply(status, content, encoding)

    async def _get(self, url: str, **kwargs: Any) -> tuple[int, bytes, str | None, str]:
        async with asyncio.timeout(self.deadline_s):
            async with self._client.stream("GET", url, **kwargs) as response:
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > self.max_bytes:
                    raise _TooLarge
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > self.max_bytes:
                        raise _TooLarge
                location = response.headers.get("location", "")
                return response.status_code, bytes(body), response.charset_encoding, location

    def close(self) -> None:
        with contextlib.suppress(TimeoutError, RuntimeError):  # the process is ending anyway
            run_on_loop(self._client.aclose(), timeout_s=5)


def get_json(
    http: HttpClient, url: str, *, error: type[Exception] = HttpError, **kwargs: Any
) -> Any:
    """The JSON body of a GET, or `error` with a message naming the URL and what went wrong."""
    reply = http.get(url, error=error, **kwargs)
    try:
        # NaN and Infinity are not JSON, whatever Python's parser would accept.
        return json.loads(reply.content, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise error(f"{url} answered with something that is not JSON") from None


def _no_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def parse_time(value: object, error: type[Exception] = HttpError) -> float:
    """ISO 8601 from an API ('2026-11-23T12:00Z', '...+00:00', '...000Z') to unix seconds; a
    time without an offset is taken as UTC, as these APIs mean it."""
    if not isinstance(value, str):
        raise error(f"not a timestamp: {value!r:.40}")
    try:
        return unix_s_from_iso(value)
    except ValueError:
        raise error(f"not a timestamp: {value!r:.40}") from None
