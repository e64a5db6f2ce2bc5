"""MIG instances' activity from dcgm-exporter (issue 14): the page's real shape, a real local
HTTP server, and what a bad, slow, or silent exporter costs (the split falls back to slices)."""

from __future__ import annotations

import time

import pytest

from tests.support.dcgm import SM_ACTIVE, dcgm_page
from tests.support.providers import Script, serve
from wattwise.errors import ScrapeError
from wattwise.jobs.mig_activity import MigActivity, mig_activity

GPU0 = "GPU-34319582-d595-d1c7-d1d2-179bcfa61660"
GPU1 = "GPU-00000000-0000-0000-0000-000000000001"


def test_each_gpu_instance_is_read_and_the_whole_gpu_series_is_not() -> None:
    page = dcgm_page({GPU0: {13: 0.995687, 1: 0.25}, GPU1: {7: 0.0}})
    assert mig_activity(page) == {(GPU0, 13): 0.995687, (GPU0, 1): 0.25, (GPU1, 7): 0.0}


@pytest.mark.parametrize("uuid_label", ["UUID", "uuid", "gpu_uuid"])
def test_the_uuid_label_of_every_dcgm_exporter_namespace_is_understood(uuid_label: str) -> None:
    assert mig_activity(dcgm_page({GPU0: {2: 0.5}}, uuid_label=uuid_label)) == {(GPU0, 2): 0.5}


def test_sm_active_is_taken_where_gr_engine_active_is_not_exported() -> None:
    assert mig_activity(dcgm_page({GPU0: {2: 0.4}}, field=SM_ACTIVE)) == {(GPU0, 2): 0.4}
    both = dcgm_page({GPU0: {2: 0.9}}) + dcgm_page({GPU1: {3: 0.1}}, field=SM_ACTIVE)
    assert mig_activity(both) == {(GPU0, 2): 0.9}  # field 1001 first, never a mix


def test_a_value_that_is_not_a_ratio_is_skipped_and_named() -> None:
    page = dcgm_page({GPU0: {1: float("nan"), 2: 1e308, 3: -0.5, 4: 0.5}})
    problems: list[str] = []
    assert mig_activity(page, problems) == {(GPU0, 4): 0.5}
    assert len(problems) == 3 and all(GPU0 in p for p in problems)


def test_a_page_that_is_not_exposition_format_is_an_error() -> None:
    with pytest.raises(ScrapeError, match="not Prometheus text format"):
        mig_activity('DCGM_FI_PROF_GR_ENGINE_ACTIVE{GPU_I_ID="1" 0.5\n')


def test_the_reading_is_used_while_fresh_and_dropped_when_stale() -> None:
    now = [1000.0]
    script = Script(body=dcgm_page({GPU0: {1: 0.5, 2: 1.0}}).encode())
    with serve(script) as url:
        activity = MigActivity(f"{url}/metrics", 5.0, clock=lambda: now[0])
        try:
            assert activity.of_gpu(GPU0) == {}  # never read
            activity.read_once()
            assert activity.of_gpu(GPU0) == {1: 0.5, 2: 1.0}
            assert activity.of_gpu(GPU1) == {}
            now[0] += 15.0
            assert activity.of_gpu(GPU0) == {1: 0.5, 2: 1.0}
            script.status = 503  # the exporter fails: the last reading ages out
            with pytest.raises(ScrapeError, match="503"):
                activity.read_once()
            now[0] += 0.1
            assert activity.of_gpu(GPU0) == {}
            assert activity.probe().ok is False
        finally:
            activity.close()


def test_a_slow_exporter_costs_at_most_the_read_deadline() -> None:
    script = Script(body=dcgm_page({GPU0: {1: 0.5}}).encode(), delay_s=60.0)
    with serve(script) as url:  # the stalled answer's thread is a daemon: teardown won't wait
        activity = MigActivity(f"{url}/metrics", 1.0)
        try:
            started = time.monotonic()
            with pytest.raises(ScrapeError):
                activity.read_once()
            assert time.monotonic() - started < 10.0  # slack for a loaded machine, not 60 s
            assert "split by slices" in activity.probe().detail
        finally:
            activity.close()


def test_an_oversized_page_is_refused() -> None:
    huge = dcgm_page({GPU0: {1: 0.5}}) + "# " + "x" * (9 * 1024 * 1024) + "\n"
    with serve(Script(body=huge.encode())) as url:
        activity = MigActivity(f"{url}/metrics", 5.0)
        try:
            with pytest.raises(ScrapeError):
                activity.read_once()
        finally:
            activity.close()


def test_probe_says_when_the_page_has_no_instance_activity() -> None:
    whole_gpu_only = dcgm_page({GPU0: {}})
    with serve(Script(body=whole_gpu_only.encode())) as url:
        activity = MigActivity(f"{url}/metrics", 5.0)
        try:
            finding = activity.probe()
        finally:
            activity.close()
    assert not finding.ok
    assert "dcp-metrics-included" in finding.fix


def test_hostile_instance_ids_cost_their_series_only() -> None:
    page = dcgm_page({GPU0: {1: 0.5}}).replace('GPU_I_ID="1"', 'GPU_I_ID="\u00b2"')
    page += dcgm_page({GPU0: {2: 0.25}}).replace('GPU_I_ID="2"', f'GPU_I_ID="{"9" * 5000}"')
    page += dcgm_page({GPU1: {3: 0.75}})
    problems: list[str] = []
    assert mig_activity(page, problems) == {(GPU1, 3): 0.75}
    assert any("is no id" in p for p in problems)


def test_a_flood_of_other_gpus_neither_crowds_out_this_nodes_nor_floods_the_log() -> None:
    flood = {f"GPU-{n:08d}-0000-0000-0000-000000000000": {1: 0.5, 2: 0.5} for n in range(2_000)}
    page = dcgm_page({**flood, GPU0: {7: 0.9}})
    problems: list[str] = []
    unfiltered = mig_activity(page, problems)
    assert len(unfiltered) <= 64 * 16 and (GPU0, 7) not in unfiltered  # capped: never unbounded
    assert 0 < len(problems) <= 10
    assert mig_activity(page, uuids={GPU0}) == {(GPU0, 7): 0.9}  # this node's GPUs first
    many = dcgm_page({GPU0: {n: 0.1 for n in range(100)}})
    assert len(mig_activity(many)) == 16  # at most 16 instances of one GPU


def test_probe_says_when_the_page_names_none_of_this_nodes_mig_gpus() -> None:
    with serve(Script(body=dcgm_page({GPU1: {1: 0.5}}).encode())) as url:
        activity = MigActivity(f"{url}/metrics", 60.0)
        try:
            activity.start([GPU0])
            finding = activity.probe()
        finally:
            activity.close()
    assert not finding.ok and "another node's" in finding.detail
