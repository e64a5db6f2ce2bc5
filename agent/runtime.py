"""The one runtime of both daemons (`wattwise run`, `wattwise facility`): bind the port before any
hardware or meter is opened, tick on a schedule, serve /metrics, stop on SIGINT or SIGTERM
within one interval (a second signal exits at once)."""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from wattwise.exporters.exposition import Exposition
from wattwise.net.listen import metrics_routes, serve_http
from wattwise.signals import stop_requested

if TYPE_CHECKING:  # loaded only where a web configuration is given (bcrypt, ssl contexts)
    from wattwise.net.webconfig import WebConfig

log = logging.getLogger(__name__)


class Daemon(Protocol):
    latest: Any  # the last snapshot, swapped in whole by tick()

    def tick(self) -> Any: ...
    def close(self) -> None: ...


def run(
    sock: socket.socket,
    build: Callable[[], Daemon],
    collector: Callable[[Any], Any],
    interval_s: float,
    connection_limit: int,
    web: WebConfig | None,
    banner: str,
) -> None:
    """`sock` is already bound: a taken port failed in one line before anything was opened.
    `build` opens the daemon; `collector(snapshot)` renders one snapshot."""
    try:
        daemon = build()
    except BaseException:
        sock.close()
        raise
    exposition = Exposition(lambda: daemon.latest, collector)
    listener = serve_http(sock, metrics_routes(exposition), connection_limit, web)
    scheduler = None
    try:
        with stop_requested() as stop:
            daemon.tick()  # /metrics has figures from here on
            # Imported after the first tick: ~60 ms that need not delay the first scrape.
            from apscheduler.schedulers.background import BackgroundScheduler

            scheduler = BackgroundScheduler(daemon=True)
            scheduler.add_job(
                daemon.tick,
                "interval",
                seconds=interval_s,
                max_instances=1,
                coalesce=True,
                misfire_grace_time=max(1, int(interval_s)),
                id="tick",
            )
            scheduler.start()
            log.info("%s", banner)
            while not stop.wait(timeout=1.0):
                pass
    finally:
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=True)  # lets a tick in flight finish: at most one interval
        listener.stop()
        daemon.close()
        log.info("stopped")
