"""Instant queries against a Prometheus-compatible HTTP API (/api/v1/query: Prometheus, Thanos
Query, Mimir, VictoriaMetrics), with a bearer token or basic auth and TLS options. Answers are
checked for their shape; the API's warnings (Thanos' and Mimir's partial responses) are
returned with them, never dropped."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wattwise.errors import QueryError
from wattwise.net.http import HttpClient, get_json

MAX_ANSWER_BYTES = 256 * 1024 * 1024  # a month of raw samples of one series at 1 s is ~100 MB


@dataclass(frozen=True, slots=True)
class Series:
    labels: dict[str, str]
    value: float = math.nan  # an instant vector's
    samples: tuple[tuple[float, float], ...] = ()  # a range vector's (unix s, value)

    def key(self) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in self.labels.items() if k != "__name__"))


@dataclass(slots=True)
class Answer:
    series: list[Series]
    warnings: list[str] = field(default_factory=list)


def read_secret(path: Path | None, what: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text().strip()
    except OSError as exc:
        raise QueryError(f"cannot read the {what} from {path}: {exc.strerror}") from None


class PromQL:
    def __init__(
        self,
        url: str,
        *,
        bearer_token_file: Path | None = None,
        basic_auth_user: str | None = None,
        basic_auth_password_file: Path | None = None,
        ca_file: Path | None = None,
        insecure_skip_verify: bool = False,
        deadline_s: float = 60.0,
    ) -> None:
        if not url.startswith(("http://", "https://")):
            raise QueryError(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/") + "/api/v1/query"
        self.headers: dict[str, str] = {}
        token = read_secret(bearer_token_file, "bearer token")
        if token:
            self.headers["Authorization"] = f"Bearer {token}"
        self.auth: tuple[str, str] | None = None
        if basic_auth_user is not None:
            password = read_secret(basic_auth_password_file, "basic auth password") or ""
            self.auth = (basic_auth_user, password)
        verify: bool | str = False if insecure_skip_verify else str(ca_file) if ca_file else True
        self._http = HttpClient(deadline_s, MAX_ANSWER_BYTES, verify)

    def instant(self, query: str, at_unix_s: float) -> Answer:
        """The query's vector or matrix at a time; QueryError naming what failed."""
        params = {"query": query, "time": f"{at_unix_s:.3f}"}
        body = get_json(
            self._http, self.url, error=QueryError, params=params, headers=self.headers,
            **({"auth": self.auth} if self.auth else {}),
        )  # fmt: skip
        if not isinstance(body, dict):
            raise QueryError(f"{self.url} answered {type(body).__name__}, not a query result")
        if body.get("status") != "success":
            raise QueryError(f"query {query!r} failed: {body.get('error') or body!r:.300}")
        warnings = [str(w)[:300] for w in body.get("warnings") or []][:20]
        try:
            return Answer(_series(body["data"]), warnings)
        except (KeyError, TypeError, ValueError, IndexError) as exc:
            raise QueryError(f"query {query!r}: unexpected answer ({exc!r:.100})") from None

    def close(self) -> None:
        self._http.close()


def _series(data: dict[str, Any]) -> list[Series]:
    kind, result = data["resultType"], data["result"]
    if kind == "vector":
        return [Series(dict(r["metric"]), _finite(r["value"][1])) for r in result]
    if kind == "matrix":
        return [
            Series(dict(r["metric"]), samples=tuple((float(t), _finite(v)) for t, v in r["values"]))
            for r in result
        ]
    raise ValueError(f"a {kind} result, not a vector or matrix")


def _finite(text: Any) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"the value {text!r:.20} is not a finite number")
    return value


def matcher(labels: dict[str, str]) -> str:
    """A series selector matching exactly these labels (JSON strings are PromQL strings)."""
    pairs = (f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in sorted(labels.items()))
    return "{" + ",".join(pairs) + "}"
