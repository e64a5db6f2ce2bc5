"""The peak of Python allocations over a block, independent of what ran before it."""

from __future__ import annotations

import tracemalloc
from types import TracebackType


class AllocationPeak:
    """`with AllocationPeak() as peak:` then `peak.bytes`, the most bytes Python had allocated
    at once inside the block, counted from zero, also where the block raised. (ru_maxrss is the
    process's peak so far: after a hungrier earlier test it proved nothing.)"""

    bytes = 0

    def __enter__(self) -> AllocationPeak:
        tracemalloc.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
