"""What tells one version of a file from the next, for files re-read when they change."""

from __future__ import annotations

import os
import time

# The kernel stamps mtimes from a coarse clock (a jiffy, up to 10 ms), so a file rewritten in
# place may show the same mtime before and after a read that caught it half-written.
SETTLING_S = 1.0


def file_stamp(path: str | os.PathLike[str]) -> tuple[int, ...]:
    """(mtime, size, inode), plus a value that never repeats while the file changed within the
    last SETTLING_S: such a file is read again next time instead of being trusted as seen.
    OSError as os.stat raises it."""
    info = os.stat(path)
    settling = time.time() - info.st_mtime < SETTLING_S
    return (info.st_mtime_ns, info.st_size, info.st_ino, time.monotonic_ns() if settling else 0)


def versions(stamps: tuple[tuple[int, ...] | None, ...]) -> tuple[tuple[int, ...] | None, ...]:
    """Stamps without the part that differs on each read of a settling file."""
    return tuple(stamp and stamp[:3] for stamp in stamps)
