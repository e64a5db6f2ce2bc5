"""The AdminComment wattwise keeps in Slurm (issue 15): what survives sacctmgr (it lowercases
and cuts at a quote in Slurm 22.05), array tasks' accounting ids, others' summaries."""

from __future__ import annotations

import math
from datetime import datetime

import pytest

from wattwise.accounts.slurm_comment import (
    SlurmError,
    accounting_id,
    comment,
    others,
    parse,
    runtime_s,
    start_s,
)

FIGURES = {"energy_j": 3000.0, "measured_j": 2000.0, "estimated_j": 1000.0,
           "operational_g": 0.5, "embodied_g": 0.25, "carbon_g": 0.75, "nodes": 2}  # fmt: skip


def test_the_comment_survives_what_sacctmgr_does_to_it() -> None:
    text = comment(FIGURES, 1800.0, "HPC East")
    assert text == text.lower() and '"' not in text and "'" not in text and " " not in text
    back = parse(text.upper())  # lowercased or not, it reads the same
    assert back is not None
    assert back["cluster"] == "hpc-east" and back["energy_j"] == 3000.0
    assert back["estimated_j"] == 1000.0 and back["nodes"] == 2
    assert back["sci_g_per_job_hour"] == 1.5  # 0.75 g over half an hour
    assert parse(f"JS1:H4sIAAAA {text}") == back
    assert others(f"JS1:H4sIAAAA {text}") == "JS1:H4sIAAAA"
    assert parse("JS1:H4sIAAAA") is None and parse("") is None


def test_no_number_that_is_not_finite_is_written() -> None:
    with pytest.raises(SlurmError, match="not all finite"):
        comment({**FIGURES, "energy_j": math.inf}, 60.0, "east")
    assert "sci_g_per_job_hour" not in (parse(comment(FIGURES, 0.0, "east")) or {})


def test_an_array_task_is_named_as_sacctmgr_knows_it() -> None:
    assert accounting_id("1234", {"ArrayJobId": "1200", "ArrayTaskId": "34"}) == "1234"
    assert accounting_id("1200", {"ArrayJobId": "1200", "ArrayTaskId": "35"}) == "1200_35"
    assert accounting_id("1234", {"JobId": "1234"}) == "1234"
    assert accounting_id("1234", {"ArrayJobId": "1200", "ArrayTaskId": "N/A"}) == "1234"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("00:00:01", 1), ("12:34:56", 45296), ("2-01:00:00", 176400), ("INVALID", 0), ("", 0)],
)
def test_run_time_is_read_from_slurms_form(text: str, seconds: float) -> None:
    assert runtime_s({"RunTime": text}) == seconds


def test_the_epilog_reads_the_store_from_the_jobs_start_only() -> None:
    now = 1_800_000_000.0
    started = datetime.fromtimestamp(now - 3600).isoformat(timespec="seconds")  # local time
    assert start_s({"StartTime": started}, now) == pytest.approx(now - 3660)
    assert start_s({"StartTime": "Unknown"}, now) == now - 30 * 86400
    assert start_s({}, now, lookback_s=3600) == now - 3600
