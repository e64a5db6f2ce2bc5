"""The bytes a scrape gets: each snapshot rendered once per format (Prometheus text or
OpenMetrics, each plain or gzip) and served from then on, so a scrape costs the same however many
clients ask and however often. A new snapshot replaces the cache."""

from __future__ import annotations

import gzip
import threading
from collections.abc import Callable

from prometheus_client import CollectorRegistry
from prometheus_client import exposition as text_format
from prometheus_client.openmetrics import exposition as openmetrics
from prometheus_client.registry import Collector

GZIP_LEVEL = 6


class Exposition:
    """`collector(snapshot)` builds the collector that renders one snapshot; `latest()` gives
    the current snapshot (any object; a new identity means new content)."""

    def __init__(
        self, latest: Callable[[], object], collector: Callable[[object], Collector]
    ) -> None:
        self._latest = latest
        self._collector = collector
        self._lock = threading.Lock()
        self._snapshot: object = None
        self._rendered: dict[tuple[bool, bool], bytes] = {}

    def render(self, accept: str = "", accept_encoding: str = "") -> tuple[bytes, str, bool]:
        """(body, content type, gzipped) for a request's Accept and Accept-Encoding headers."""
        use_openmetrics = "application/openmetrics-text" in accept
        use_gzip = "gzip" in accept_encoding
        content_type = (
            openmetrics.CONTENT_TYPE_LATEST if use_openmetrics else text_format.CONTENT_TYPE_LATEST
        )
        with self._lock:
            snapshot = self._latest()
            if snapshot is not self._snapshot:
                self._snapshot, self._rendered = snapshot, {}
            key = (use_openmetrics, use_gzip)
            body = self._rendered.get(key)
            if body is None:
                body = self._plain(snapshot, use_openmetrics)
                if use_gzip:
                    body = gzip.compress(body, GZIP_LEVEL)
                self._rendered[key] = body
        return body, content_type, use_gzip

    def _plain(self, snapshot: object, use_openmetrics: bool) -> bytes:
        cached = self._rendered.get((use_openmetrics, False))
        if cached is not None:
            return cached
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self._collector(snapshot))
        generate = openmetrics.generate_latest if use_openmetrics else text_format.generate_latest
        body = generate(registry)
        self._rendered[(use_openmetrics, False)] = body
        return body
