"""Reads small integer files from sysfs; errors become reasons an operator can act on."""

from __future__ import annotations

import errno
import os
from pathlib import Path


class CounterFileError(Exception):
    """A counter file that could not be read or parsed; the message is the reason."""


def read_uint(path: Path) -> int:
    """Reads a non-negative integer from a sysfs attribute."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            raw = os.read(fd, 64)
        finally:
            os.close(fd)
    except PermissionError:
        raise CounterFileError("permission denied") from None
    except OSError as exc:
        if exc.errno == errno.ENOENT:
            raise CounterFileError("file missing") from None
        raise CounterFileError(exc.strerror or str(exc)) from None
    text = raw.strip()
    if not text:
        raise CounterFileError("empty file")
    if not text.isdigit():
        shown = text[:20].decode("ascii", "replace")
        raise CounterFileError(f"not a non-negative integer: {shown!r}")
    return int(text)


def read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except (OSError, UnicodeDecodeError):
        return None
