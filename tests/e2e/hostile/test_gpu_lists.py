"""Issue item 3: the GPU lists a job names in its environment cannot exhaust memory or time,
and count only for GPUs that exist."""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest

from tests.support.hostile_node import HostileNode, non_finite
from tests.support.memory import AllocationPeak
from wattwise.jobs.metadata import MAX_GPU_INDEX, MAX_GPUS, _indexes


@pytest.mark.parametrize(
    "text",
    [
        "0-4294967295",
        "0-2000000",
        "5-" + "9" * 100_000,
        ",".join(str(i) for i in range(100_000)),
        "0-1," * 200_000,
        "1" * 100_000,
    ],
)
def test_item3_a_gpu_list_from_a_job_is_bounded(text: str) -> None:
    with AllocationPeak() as peak:
        indexes = _indexes(text)
    assert len(indexes) <= MAX_GPUS and all(0 <= i <= MAX_GPU_INDEX for i in indexes)
    # Not an allocation of billions of indexes (the whole 32-bit range once raised MemoryError);
    # splitting the longest list here takes about 12 MB.
    assert peak.bytes < 50_000_000, peak.bytes


def test_item3_a_job_claiming_every_gpu_index_holds_only_gpus_that_exist_and_no_others(
    tmp_path: Path, fake_nvml: ModuleType
) -> None:
    node = HostileNode(tmp_path, fake_nvml)
    node.poison(SLURM_JOB_GPUS="0-4294967295", CUDA_VISIBLE_DEVICES="0-4294967295")
    node.start()
    try:
        snapshots = node.ticks(3)
        activity = node.agent.tracker.observe(snapshots[-1].gpus)
    finally:
        node.close()
    assert all(non_finite(s) == [] and s.ledger_up for s in snapshots)
    # GPU 0 is job 12's alone. GPU 1 is job 13's, which job 12 also claims: it goes to nobody
    # rather than to whoever claims it last.
    assert activity.gpu_holders == {0: "slurm:12"}
