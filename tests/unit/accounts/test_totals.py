"""The running totals keep any per-job figure of JOB_FIGURES without knowing it: a new figure
needs no change in accounts/ (docs/architecture.md, "A per-job figure")."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.book import book
from wattwise.accounts import totals as totals_module
from wattwise.model import JOB_FIGURES, JobFigure, JobRef, JobSeen, JobTotals

JOB = JobSeen("slurm:42", "slurm", "slurm", "42", "train", "alice")
REF = JobRef("slurm", "42", "/slurm:42")


@dataclass(frozen=True, slots=True)
class WithWater(JobTotals):
    """JobTotals as a newcomer would extend it: one field more."""

    water_l: tuple[tuple[str, float], ...] = ()


def _tick(accounts: totals_module.RunningTotals, t: float, figures: list[JobFigure]) -> None:
    accounts.apply(t, 1.0, {JOB.job_key: REF}, [], [], {JOB.job_key: JOB}, figures=figures)
    assert accounts.commit(t, force=True)


def test_a_new_per_job_figure_is_counted_committed_and_resumed_unchanged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(JOB_FIGURES, "water", ("water_l", 0))
    monkeypatch.setattr(totals_module, "JobTotals", WithWater)
    accounts = book(tmp_path / "ledger.db")
    _tick(accounts, 100.0, [JobFigure(JOB.job_key, "water", "loop1", 2.5)])
    _tick(accounts, 101.0, [JobFigure(JOB.job_key, "water", "loop1", 1.0)])
    (view,) = accounts.views()
    assert isinstance(view.totals, WithWater)
    assert view.totals.water_l == (("loop1", 3.5),)
    assert view.totals.work_units == ()  # the other figures are untouched
    assert accounts.ledger is not None
    accounts.ledger.close()

    # A restarted agent continues the figure from the ledger.
    again = book(tmp_path / "ledger.db")
    _tick(again, 102.0, [JobFigure(JOB.job_key, "water", "loop1", 0.5)])
    (view,) = again.views()
    assert view.totals.water_l == (("loop1", 4.0),)


def test_a_figure_in_grams_is_kept_in_the_grams_column(tmp_path: Path) -> None:
    accounts = book(tmp_path / "ledger.db")
    _tick(accounts, 100.0, [JobFigure(JOB.job_key, "embodied", "gpu", 7.0)])
    (view,) = accounts.views()
    assert view.totals.embodied_g == (("gpu", 7.0),)
    assert accounts._committed[JOB.job_key][("embodied", "gpu", "", "")] == [0.0, 7.0]


def test_totals_of_series_sum_operational_grams_over_states_and_count_held_idle_gpu() -> None:
    totals = JobTotals.of(
        {
            ("energy", "gpu", "nvml", "active"): [10.0, 1.0],
            ("energy", "gpu", "nvml", "idle"): [4.0, 0.5],
            ("work", "tokens", "", ""): [300.0, 0.0],
        }
    )
    assert totals.carbon_g == (("gpu", "nvml", 1.5),)
    assert totals.gpu_allocated_idle_j == 4.0
    assert totals.work_units == (("tokens", 300.0),)


def test_a_jobs_runtime_runs_from_its_first_sight_and_continues_across_a_restart(
    tmp_path: Path,
) -> None:
    accounts = book(tmp_path / "ledger.db")
    _tick(accounts, 100.0, [JobFigure(JOB.job_key, "work", "tokens", 5.0)])
    _tick(accounts, 160.0, [])
    assert [v.runtime_s for v in accounts.views()] == [60.0]
    assert accounts.ledger is not None
    accounts.ledger.close()

    # Restarted 40 s later: the runtime counts from the ledger's first sight, not from the
    # restart, so the exported counter never goes back.
    again = book(tmp_path / "ledger.db")
    _tick(again, 200.0, [])
    assert [v.runtime_s for v in again.views()] == [100.0]
    # The wall clock stepped back 50 s (NTP): the runtime holds until the clock passes where
    # it was; a drop would read as a reset and count the whole runtime again (found by review).
    _tick(again, 150.0, [])
    assert [v.runtime_s for v in again.views()] == [100.0]
    _tick(again, 230.0, [])
    assert [v.runtime_s for v in again.views()] == [130.0]
    assert again.ledger is not None
    again.ledger.close()

    # Restarted with the clock behind the ledger's last sight (review): it holds there too.
    third = book(tmp_path / "ledger.db")
    _tick(third, 180.0, [])
    assert [v.runtime_s for v in third.views()] == [130.0]
