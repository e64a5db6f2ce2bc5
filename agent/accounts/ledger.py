"""Durable per-job accounts in SQLite (WAL): every exported running total, and its history per
minute and per hour.

Layout (schema 5): `jobs` and `series` give integer ids (the node itself is job 0); `totals`
holds one row per job and series, the committed value of an exported counter; `minutes` and
`hours` hold what each minute and each closed hour added, keyed by time first, so that
retention is a range delete and a report reads only its window. Rollups and retention run once
an hour, never per tick. Each write is one transaction: the caller commits every few seconds,
and exports only what was committed, so a counter never goes backwards across a restart.

The file is opened, recognised, created or migrated by `ledger_file.py`: a foreign, damaged,
empty or newer file is refused and left untouched, with a message that names it and what to do.

A problem that may pass (a lock held elsewhere, a full disk, a directory not yet there) never
disables the ledger: the file is tried again with a backoff from one second to five minutes,
while the caller keeps what it counted in memory.
"""

from __future__ import annotations

import logging
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from wattwise.accounts.ledger_file import Transient, open_ledger, problem_of
from wattwise.errors import LedgerError, LedgerUnavailable
from wattwise.model import JobSeen, SeriesKey, Sums

log = logging.getLogger(__name__)

RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
MICRO = 1_000_000  # per-minute and hourly amounts are kept in millionths (uJ, work units)
NANO = 1_000_000_000  # and grams in billionths: a job's minute is a few hundredths of a gram
NODE = ""  # the job key of the node's own rows (unattributed energy, node totals)
INTENSITY = "intensity"  # a node series: seconds charged under one grid intensity


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One write transaction, taken at once (no lock upgrade later); rolled back on any error."""
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:
            db.execute("ROLLBACK")
        raise


@dataclass(slots=True)
class Batch:
    """What a commit adds: totals' increments, closed minutes, jobs seen and ended."""

    totals: Mapping[tuple[str, SeriesKey], Sums] = field(default_factory=dict)
    minutes: Mapping[tuple[int, str, SeriesKey], Sums] = field(default_factory=dict)
    jobs: Mapping[str, tuple[JobSeen, float, float]] = field(default_factory=dict)
    ended: Mapping[str, float] = field(default_factory=dict)


class Ledger:
    """Raises LedgerError for a file it refuses (foreign, damaged, empty, newer); a problem that
    may pass is `last_error`, and the file is tried again on later writes."""

    def __init__(
        self,
        path: Path,
        minutely_retention_s: float = 2 * 86400,
        hourly_retention_s: float = 400 * 86400,
        clock: Callable[[], float] = time.monotonic,
        node: str = "",
        cluster: str = "",
    ) -> None:
        """`node`, `cluster`: where its jobs ran, written with the first batch (fleet exports)."""
        self.path = path
        self._identity: tuple[str, str] | None = (node, cluster)
        self.minutely_retention_s = minutely_retention_s
        self.hourly_retention_s = hourly_retention_s
        self.last_error: str | None = None
        self.just_opened = False  # a later write opened the file: the caller reloads totals
        self._clock = clock
        self._retry_s = 0.0
        self._retry_at = 0.0
        self._job_ids: dict[str, int] = {NODE: 0}
        self._series_ids: dict[SeriesKey, int] = {}
        self._hours_until: float | None = None
        self._db: sqlite3.Connection | None = None
        self._try_open()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def _try_open(self) -> bool:
        """Opens the file if it is usable now; LedgerError if it never will be."""
        try:
            self._db = open_ledger(self.path)
        except Transient as exc:
            self.last_error = f"{exc}; job totals are kept in memory and the file tried again"
            self._retry_s = min(max(self._retry_s * 2, RETRY_FIRST_S), RETRY_MAX_S)
            self._retry_at = self._clock() + self._retry_s
            return False
        self._retry_s = 0.0
        return True

    def write(self, batch: Batch) -> bool:
        """Commits a batch in one transaction; False when the file cannot be written now (then
        `last_error` says why, and nothing of the batch is in it). LedgerError when the file
        turns out to be damaged: it is never written again."""
        if self._db is None:
            if self._clock() < self._retry_at or not self._try_open():
                return False
            self.just_opened = True
            log.info("ledger %s is open now; what was kept in memory is written", self.path)
        db = self._db
        assert db is not None
        try:
            with _transaction(db):
                self._write(db, batch)
        except sqlite3.Error as exc:
            self._forget_ids()  # ids made in the rolled-back transaction do not exist
            problem = problem_of(self.path, exc)
            if isinstance(problem, LedgerError):  # damaged: never written again
                self.close_without_writing()
                raise problem from None
            self.last_error = str(problem)
            return False
        self.last_error = None
        self._identity = None  # written: not again until the agent restarts
        return True

    def _write(self, db: sqlite3.Connection, batch: Batch) -> None:
        if self._identity is not None:
            node, cluster = self._identity
            db.executemany(
                "INSERT OR REPLACE INTO node_info VALUES (?, ?)",
                [("node", node), ("cluster", cluster)],
            )
        db.executemany(
            "INSERT INTO jobs (job_key, scheduler, kind, job_id, name, user, first_seen_unix_s, "
            "last_seen_unix_s) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(job_key) DO UPDATE "
            "SET last_seen_unix_s = excluded.last_seen_unix_s, name = excluded.name, "
            "user = excluded.user, ended_unix_s = NULL",
            [
                (j.job_key, j.scheduler, j.kind, j.job_id, j.name, j.user, first, last)
                for j, first, last in batch.jobs.values()
            ],
        )
        job = self._ids_of_jobs(db, {k for k, _ in batch.totals} | {k for _, k, _ in batch.minutes})
        series = self._ids_of_series(
            db, {s for _, s in batch.totals} | {s for *_, s in batch.minutes}
        )
        db.executemany(
            "INSERT INTO totals VALUES (?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "amount = amount + excluded.amount, carbon_g = carbon_g + excluded.carbon_g",
            [(job[k], series[s], a, g) for (k, s), (a, g) in batch.totals.items()],
        )
        db.executemany(
            "INSERT INTO minutes VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
            "amount = amount + excluded.amount, carbon_ng = carbon_ng + excluded.carbon_ng",
            [
                (minute, job[k], series[s], round(a * MICRO), round(g * NANO))
                for (minute, k, s), (a, g) in batch.minutes.items()
            ],
        )
        db.executemany(
            "UPDATE jobs SET ended_unix_s = ? WHERE job_key = ? AND ended_unix_s IS NULL",
            [(at, key) for key, at in batch.ended.items()],
        )

    def _ids_of_jobs(self, db: sqlite3.Connection, keys: set[str]) -> dict[str, int]:
        missing = keys - self._job_ids.keys()
        for key in missing:  # a job first seen since the last commit: its row exists now
            row = db.execute("SELECT id FROM jobs WHERE job_key = ?", (key,)).fetchone()
            if row is None:
                raise LedgerError(f"ledger {self.path}: job {key} has totals but no row")
            self._job_ids[key] = row[0]
        return self._job_ids

    def _ids_of_series(self, db: sqlite3.Connection, keys: set[SeriesKey]) -> dict[SeriesKey, int]:
        for key in keys - self._series_ids.keys():
            db.execute("INSERT OR IGNORE INTO series (measure, a, b, c) VALUES (?, ?, ?, ?)", key)
            self._series_ids[key] = db.execute(
                "SELECT id FROM series WHERE measure = ? AND a = ? AND b = ? AND c = ?", key
            ).fetchone()[0]
        return self._series_ids

    def _forget_ids(self) -> None:
        self._job_ids = {NODE: 0}
        self._series_ids = {}

    def maintain(self, now_unix_s: float) -> None:
        """Rolls every closed hour up from its minutes, then drops minutes and hours past their
        retention: once an hour, each statement a range of the time-first keys."""
        if self._db is None:
            return
        current_hour = now_unix_s // 3600 * 3600
        if self._hours_until is None:
            self._hours_until = self._rows("SELECT value FROM meta WHERE key = 'hours_until'")[0][0]
        if current_hour <= self._hours_until:
            return
        db = self._db
        try:
            with _transaction(db):
                db.execute(
                    "INSERT INTO hours SELECT minute / 3600 * 3600, job, series, sum(amount), "
                    "sum(carbon_ng) FROM minutes WHERE minute >= ? AND minute < ? "
                    "GROUP BY 1, 2, 3 ON CONFLICT DO UPDATE SET amount = amount + excluded.amount, "
                    "carbon_ng = carbon_ng + excluded.carbon_ng",
                    (self._hours_until, current_hour),
                )
                db.execute("UPDATE meta SET value = ? WHERE key = 'hours_until'", (current_hour,))
                cutoff = now_unix_s - self.minutely_retention_s
                if db.execute("DELETE FROM minutes WHERE minute < ?", (cutoff,)).rowcount:
                    # Reports say a window reaches before it only once rows were really lost.
                    db.execute(
                        "INSERT INTO meta VALUES ('minutes_deleted_before', ?) ON CONFLICT(key) "
                        "DO UPDATE SET value = max(value, excluded.value)",
                        (cutoff,),
                    )
                db.execute(
                    "DELETE FROM hours WHERE hour < ?", (now_unix_s - self.hourly_retention_s,)
                )
        except sqlite3.Error as exc:
            log.warning("ledger %s: hourly rollup not done now, tried again: %s", self.path, exc)
            return
        self._hours_until = current_hour

    def _rows(self, sql: str, args: tuple = ()) -> list[tuple]:
        """A read of the file; a damaged page is a LedgerError, like a damaged header."""
        if self._db is None:
            raise LedgerError(f"ledger {self.path} is not open: {self.last_error}")
        try:
            return self._db.execute(sql, args).fetchall()
        except sqlite3.DatabaseError as exc:
            problem = problem_of(self.path, exc)
            if not isinstance(problem, LedgerError):  # a lock: the file is tried again later
                problem = LedgerUnavailable(f"{problem}; job totals are kept in memory")
            raise problem from None

    def load(self, jobs: Iterable[str], node: bool = True) -> dict[str, dict[SeriesKey, Sums]]:
        """The committed totals of `jobs` and (with `node`) of the node (key ''), as exported
        counters resume from them. Read by job, so it costs the same however long the ledger's
        history."""
        loaded: dict[str, dict[SeriesKey, Sums]] = {}
        for key, measure, a, b, c, amount, grams in self._by_job(
            "SELECT j.job_key, s.measure, s.a, s.b, s.c, t.amount, t.carbon_g FROM jobs j "
            "JOIN totals t ON t.job = j.id JOIN series s ON s.id = t.series",
            [*jobs, NODE] if node else list(jobs),
        ):
            loaded.setdefault(key, {})[(measure, a, b, c)] = [amount, grams]
        return loaded

    def seen_times(self, jobs: Iterable[str]) -> dict[str, tuple[float, float]]:
        """When each of `jobs` was first and last seen, as its runtime resumes from them."""
        select = "SELECT j.job_key, j.first_seen_unix_s, j.last_seen_unix_s FROM jobs j"
        return {key: (first, last) for key, first, last in self._by_job(select, list(jobs))}

    def _by_job(self, select: str, keys: list[str]) -> list[tuple]:
        """`select` (over `jobs j`) for the rows of `keys`, read by job key."""
        found: list[tuple] = []
        for start in range(0, len(keys), 500):  # SQLite's bound on parameters
            chunk = keys[start : start + 500]
            where = f" WHERE j.job_key IN ({', '.join('?' * len(chunk))})"
            found += self._rows(select + where, tuple(chunk))
        return found

    def open_jobs(self) -> set[str]:
        rows = self._rows("SELECT job_key FROM jobs WHERE ended_unix_s IS NULL AND id != 0")
        return {key for (key,) in rows}

    def close(self) -> None:
        self.close_without_writing()

    def suspend(self, problem: LedgerUnavailable) -> None:
        """Closes the file for now and tries it again with backoff; the caller keeps what it
        counted."""
        self.close_without_writing()
        self.last_error = str(problem)
        self._retry_s = min(max(self._retry_s * 2, RETRY_FIRST_S), RETRY_MAX_S)
        self._retry_at = self._clock() + self._retry_s

    def close_without_writing(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None
        self._forget_ids()
        self._hours_until = None
