"""One place where providers and meters meet HTTP: timeouts, retries, and errors an operator
can act on.

httpx retries failed connections; an HTTP error is retried by the provider chain within five
minutes, which is the backoff.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx

from agent.carbon.intensity import ProviderError

_HINTS = {
    401: "the API key or login was refused: check it",
    403: "the API key has no access to this zone or endpoint",
    429: "rate limited by the provider: the chain asks again later",
}


def client(timeout_s: float = 10.0, verify: bool | str = True) -> httpx.Client:
    return httpx.Client(
        timeout=timeout_s, verify=verify, transport=httpx.HTTPTransport(retries=2, verify=verify)
    )


def get_ok(
    http: httpx.Client, url: str, *, error: type[Exception] = ProviderError, **kwargs: Any
) -> httpx.Response:
    """A GET that answered below 400, or `error` naming the URL and what went wrong."""
    try:
        response = http.get(url, **kwargs)
    except httpx.TimeoutException:
        raise error(f"{url} timed out") from None
    except httpx.HTTPError as exc:
        raise error(f"{url} failed: {type(exc).__name__}: {exc}") from None
    if response.status_code >= 400:
        hint = _HINTS.get(response.status_code, "the server failed")
        raise error(f"{url} answered HTTP {response.status_code}: {hint}")
    return response


def get_json(
    http: httpx.Client, url: str, *, error: type[Exception] = ProviderError, **kwargs: Any
) -> Any:
    """The JSON body of a GET, or `error` with a message naming the URL and what went wrong."""
    response = get_ok(http, url, error=error, **kwargs)
    try:
        return response.json()
    except ValueError:
        raise error(f"{url} answered with something that is not JSON") from None


def parse_time(text: str) -> float:
    """ISO 8601 from an API ('2026-11-23T12:00Z', '...+00:00', '...000Z') to unix seconds."""
    cleaned = text.strip().replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(cleaned)
    except ValueError:
        raise ProviderError(f"not a timestamp: {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()
