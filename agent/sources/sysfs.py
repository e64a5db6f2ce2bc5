"""Reads small integer files from sysfs; errors become reasons an operator can act on."""

from __future__ import annotations

import errno
import os
from pathlib import Path

from agent.checks import U64_MAX


class CounterFileError(Exception):
    """A counter file that could not be read or parsed; the message is the reason."""


def read_uint(path: Path | str) -> int:
    """Reads a non-negative integer from a sysfs attribute."""
    return parse_uint(read_bytes(path, 64))


def read_bytes(path: Path | str, size: int) -> bytes:
    """The first `size` bytes of a kernel file, in one read: kernel attributes are generated
    whole at the first read, so one read sees one consistent value."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            return os.read(fd, size)
        finally:
            os.close(fd)
    except PermissionError:
        raise CounterFileError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise CounterFileError("file missing") from None
        raise CounterFileError(exc.strerror or str(exc)) from None


def parse_uint(raw: bytes) -> int:
    """A kernel counter: an unsigned 64-bit decimal integer, nothing else."""
    text = raw.strip()
    if not text:
        raise CounterFileError("empty file")
    if not text.isdigit() or len(text) > 20 or int(text) > U64_MAX:
        shown = text[:20].decode("ascii", "replace")
        raise CounterFileError(f"not a non-negative 64-bit integer: {shown!r}")
    return int(text)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
