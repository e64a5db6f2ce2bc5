from __future__ import annotations

import logging

import pytest

from wattwise.statelog import ProblemLog

log = logging.getLogger("wattwise.test")


def test_a_lasting_problem_is_one_line_a_change_another_and_its_end_one_more(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problems = ProblemLog(log, "%s answers again")
    with caplog.at_level(logging.INFO, "wattwise.test"):
        for _ in range(100):
            problems.problem("meter", "meter failed: timeout")
        problems.problem("meter", "meter failed: 503")
        problems.clear("meter")
        problems.clear("meter")
    assert [r.getMessage() for r in caplog.records] == [
        "meter failed: timeout",
        "meter failed: 503",
        "meter answers again",
    ]
    assert problems.current("meter") is None


def test_once_ignores_a_changed_message_and_the_origins_kept_are_bounded(
    caplog: pytest.LogCaptureFixture,
) -> None:
    problems = ProblemLog(log, limit=3)
    with caplog.at_level(logging.INFO, "wattwise.test"):
        problems.problem("pid 7", "bad value 1", once=True)
        problems.problem("pid 7", "bad value 2", once=True)
        for n in range(10):
            problems.problem(f"pid {n + 100}", "bad")
    assert [r.getMessage() for r in caplog.records][:2] == ["bad value 1", "bad"]
    assert len(problems._open) == 3
    assert problems.current("pid 7") is None  # the oldest origins were forgotten
