"""How many connections a listener may hold, and the live ones, least recently active first:
at the limit the longest-idle connection is closed to make room, so a flood of idle
connections can never lock out a real client, and descriptors for the tick are never taken."""

from __future__ import annotations

import logging
import resource
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from wattwise.sources.sysfs import held_file_limit

log = logging.getLogger("wattwise.net.listen")


# Descriptors kept for the tick and its helpers: counter files, /proc, cgroups, the ledger,
# NVML's device nodes, outgoing HTTP. Listeners share what is left of RLIMIT_NOFILE.
RESERVED_FDS = 256


MAX_CONNECTIONS = 512  # per listener: far more than the scrapers of any real deployment


def descriptor_budget(listeners: int) -> int:
    """Connections each listener may hold. Raises the soft RLIMIT_NOFILE to the hard limit (the
    shipped units set LimitNOFILE), then keeps RESERVED_FDS of it for the tick, and the share
    the tick may hold of counter files open (sysfs.held_file_limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard if hard != resource.RLIM_INFINITY else 1 << 20, 1 << 20)
    if soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
            soft = wanted
        except (OSError, ValueError) as exc:
            log.warning("cannot raise the open-file limit from %d to %d: %s", soft, wanted, exc)
    free = soft - RESERVED_FDS - held_file_limit()  # the tick's counter files are held open
    budget = max(16, min(MAX_CONNECTIONS, free // max(listeners, 1)))
    if budget < MAX_CONNECTIONS:
        log.info("open-file limit %d: at most %d connections per listener", soft, budget)
    return budget


@dataclass(eq=False)
class Slot:
    close: Callable[[], None]  # closes the socket now (evicted, or refused)
    pool: ConnectionPool
    busy: bool = False  # a request is being answered

    def answered(self) -> None:
        """A request was answered: no longer busy, and now the most recently active."""
        self.busy = False
        self.pool.touch(self)


class ConnectionPool:
    """The live connections of one listener, least recently active first."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.evicted = 0
        self._live: OrderedDict[Slot, None] = OrderedDict()

    def __len__(self) -> int:
        return len(self._live)

    def admit(self, close: Callable[[], None]) -> Slot | None:
        """A slot for a new connection, made by closing the longest-idle one if need be; None
        when every connection is busy (the new one is then closed)."""
        if len(self._live) >= self.limit:
            idle = next((c for c in self._live if not c.busy), None)
            if idle is None:
                close()
                return None
            self.release(idle)
            idle.close()
            self.evicted += 1
        connection = Slot(close, self)
        self._live[connection] = None
        return connection

    def touch(self, connection: Slot) -> None:
        if connection in self._live:
            self._live.move_to_end(connection)

    def release(self, connection: Slot) -> None:
        self._live.pop(connection, None)

    def close_all(self) -> None:
        for connection in list(self._live):
            connection.close()
        self._live.clear()
