"""Per-minute rows of the running totals: the current minute's, and closed minutes the ledger
has not yet taken. A minute is handed on once it has passed, so each ledger row is written
whole; while the ledger cannot be written the closed minutes wait here, up to a bound."""

from __future__ import annotations

import logging

from wattwise.model import SeriesKey, Sums

log = logging.getLogger("wattwise.accounts.totals")

# Per-minute rows held while the ledger cannot be written (about a day of 50 jobs); beyond it
# the outage's per-minute detail is dropped, never the totals.
MAX_PENDING_MINUTES = 500_000

Row = tuple[str, SeriesKey]  # (job key, series)


class MinuteRows:
    def __init__(self) -> None:
        self.minute = -1
        self.rows: dict[Row, Sums] = {}
        self._closed: dict[int, dict[Row, Sums]] = {}

    def add(self, row: Row, amount: float, grams: float, minute: int) -> None:
        """Runs for every share of every tick."""
        if minute != self.minute:  # a new minute: the last one's rows are closed
            self._close()
            self.minute = minute
        add_to(self.rows, row, amount, grams)

    def closed(self, now_unix_s: float, force: bool) -> dict[tuple[int, str, SeriesKey], Sums]:
        """Every closed minute's rows for the ledger. The current minute is closed once it has
        passed, or at once with `force` (when stopping)."""
        if self.rows and (force or self.minute < now_unix_s // 60 * 60):
            self._close()
        return {
            (minute, key, series): sums
            for minute, rows in self._closed.items()
            for (key, series), sums in rows.items()
        }

    def written(self) -> None:
        self._closed = {}

    def not_written(self) -> None:
        """The ledger refused them: kept for the next commit, within the bound."""
        held = sum(len(rows) for rows in self._closed.values())
        if held > MAX_PENDING_MINUTES:
            log.error(
                "ledger unwritable for long: the per-minute detail held in memory is dropped "
                "(%d rows), the totals are kept",
                held,
            )
            self._closed = {}

    def _close(self) -> None:
        """Adds the current minute's rows to any rows of the same minute still unwritten (a
        wall clock stepped back can come to a minute twice)."""
        if self.rows:
            closed = self._closed.setdefault(self.minute, {})
            for row, (amount, grams) in self.rows.items():
                add_to(closed, row, amount, grams)
        self.minute, self.rows = -1, {}


def add_to(sums_by: dict, key: object, amount: float, grams: float) -> None:
    """Adds to a running [amount, grams] pair as the ledger's upsert does: a new row starts at
    the increment, an existing one adds it (the same floating-point operations)."""
    sums = sums_by.get(key)
    if sums is None:
        sums_by[key] = [amount, grams]
    else:
        sums[0] += amount
        sums[1] += grams
