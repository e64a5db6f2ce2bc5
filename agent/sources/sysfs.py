"""Reads small integer files from sysfs; errors become reasons an operator can act on."""

from __future__ import annotations

import contextlib
import errno
import os
import resource
from pathlib import Path

from wattwise.checks import U64_MAX
from wattwise.errors import CounterFileError


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
    except OSError as exc:
        raise _reason(exc) from None


def _reason(exc: OSError) -> CounterFileError:
    if exc.errno == errno.EACCES or isinstance(exc, PermissionError):
        return CounterFileError("permission denied")
    if exc.errno == errno.ENOENT:
        return CounterFileError("file missing")
    return CounterFileError(exc.strerror or str(exc))


def held_file_limit() -> int:
    """How many counter files the tick may keep open: an eighth of the open-file limit (the
    listeners' share is counted without it), at most 4,096."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return min(4096, max(soft, 0) // 8)


class HeldFile:
    """A kernel counter file kept open and read again from offset 0: one pread a tick, not an
    open, a read and a close (on a cold cache each syscall costs ~15 us). sysfs, cgroupfs and
    procfs generate the value at every read from offset 0. A file that went away (a removed
    cgroup's files answer ENODEV) is opened again, once, by its path."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None

    def read(self, size: int) -> bytes:
        if self._fd is not None:
            try:
                return os.pread(self._fd, size, 0)
            except OSError:
                self.close()  # gone or replaced: opened again below
        try:
            self._fd = os.open(self.path, os.O_RDONLY)
            return os.pread(self._fd, size, 0)
        except OSError as exc:
            self.close()
            raise _reason(exc) from None

    def close(self) -> None:
        if self._fd is not None:
            fd, self._fd = self._fd, None
            with contextlib.suppress(OSError):  # already unusable: nothing more to release
                os.close(fd)

    def __del__(self) -> None:
        self.close()


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
