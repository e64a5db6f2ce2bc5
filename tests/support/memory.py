"""The peak of Python allocations over a block, independent of what ran before it."""

from __future__ import annotations

import tracemalloc
from types import TracebackType


class AllocationPeak:
    """`with AllocationPeak() as peak:` then `peak.bytes`, the most bytes Python had allocated
    at once inside the block beyond what it held on entry, on any thread, also where the block
    raised. (ru_maxrss is the process's peak so far: after a hungrier earlier test it proved
    nothing.) Allocations C code makes with plain malloc are not seen."""

    bytes = 0

    def __enter__(self) -> AllocationPeak:
        self._was_tracing = tracemalloc.is_tracing()  # -X tracemalloc: leave it on after
        if not self._was_tracing:
            tracemalloc.start()
        tracemalloc.reset_peak()
        self._held_bytes = tracemalloc.get_traced_memory()[0]
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.bytes = tracemalloc.get_traced_memory()[1] - self._held_bytes
        if not self._was_tracing:
            tracemalloc.stop()
