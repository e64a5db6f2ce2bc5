"""The work API's listener: one request line and one answer line per connection on a Unix
socket, with the peer's pid and uid from the kernel."""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from wattwise.net.listen import (
    ANSWER_TIMEOUT_S,
    BACKLOG,
    READ_TIMEOUT_S,
    WRITE_TIMEOUT_S,
    Listener,
)
from wattwise.net.pool import Slot

# (request line, or None when it was longer than the limit; peer pid; peer uid) -> answer line
LineHandler = Callable[[bytes | None, int, int], bytes]


def serve_unix_lines(path: str, handle: LineHandler, limit: int, max_line: int) -> Listener:
    """One request line and one answer line per connection on a Unix socket; the peer's pid and
    uid come from the kernel (SO_PEERCRED). The socket file is created mode 0666: the peer's
    credentials, not the file mode, decide what a caller may do."""
    handlers = ThreadPoolExecutor(2, thread_name_prefix="work-api")

    async def connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, slot: Slot
    ) -> None:
        line: bytes | None
        async with asyncio.timeout(READ_TIMEOUT_S):
            try:
                line = await reader.readline()
            except ValueError:  # longer than max_line: answered, not read further
                line = None
        slot.busy = True
        pid, uid = peer_credentials(writer.get_extra_info("socket"))
        # Off the loop: resolving a user name may ask a directory service (NSS, SSSD, LDAP).
        async with asyncio.timeout(ANSWER_TIMEOUT_S):
            answer = await asyncio.get_running_loop().run_in_executor(
                handlers, handle, line, pid, uid
            )
        async with asyncio.timeout(WRITE_TIMEOUT_S):
            writer.write(answer)
            await writer.drain()

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        os.chmod(path, 0o666)
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return Listener(sock, limit, connection, max_line).start()


def peer_credentials(sock: socket.socket) -> tuple[int, int]:
    """(pid, uid) of the process at the other end of a Unix socket, from the kernel."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", raw)
    return pid, uid
