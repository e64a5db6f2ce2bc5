"""What tells one version of a file from the next, for files re-read when they change."""

from __future__ import annotations

import hashlib
import os
import time

# Filesystems stamp mtimes coarsely (a kernel tick of up to 10 ms; 2 s on FAT and some SMB
# shares), so a file rewritten in place can show the same mtime before and after a read that
# caught it half written.
SETTLING_S = 2.0

Stamp = tuple[int, int, int, bytes]


def file_stamp(path: str | os.PathLike[str]) -> Stamp:
    """(mtime, size, inode, digest). The digest of the content is taken only while the mtime is
    within SETTLING_S of now, and is b"" after: a version written in place within one mtime tick
    still differs, and a settled file costs one stat. OSError as os.stat or open raise it."""
    info = os.stat(path)
    digest = b""
    if abs(time.time() - info.st_mtime) < SETTLING_S:
        with open(path, "rb") as file:
            digest = hashlib.file_digest(file, "blake2b").digest()
    return (info.st_mtime_ns, info.st_size, info.st_ino, digest)


def same_content_likely(old: Stamp | None, new: Stamp | None) -> bool:
    """Whether two stamps of a file name the same content as far as can be told cheaply: one
    taken while the file settled and one after differ only in the digest's presence."""
    if old is None or new is None:
        return old is new
    return old[:3] == new[:3] and (old[3] == new[3] or not (old[3] and new[3]))
