"""Durable per-job energy accounts in SQLite (WAL), written once per tick in one transaction.

A file is recognised as a ledger before anything in it is touched: wattwise's own
application_id (or, for ledgers written before it existed, exactly the tables of their schema
version). A foreign, damaged, empty or newer file is refused and left untouched, with a message
that names it and what to do; a new ledger is created whole, under another name, and linked into
place, so no half-made ledger is ever found at the path.

A problem that may pass (a lock held elsewhere, a full disk, a directory not yet there) never
disables the ledger: the file is tried again with a backoff from one second to five minutes, and
meanwhile every tick's increments stay in memory, merged by key, for the next successful write.
A SIGKILL while the ledger cannot be written loses what is held in memory; the per-minute detail
held is bounded (MAX_PENDING_MINUTELY rows), the totals are not.
"""

from __future__ import annotations

import logging
import math
import os
import sqlite3
import time
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from agent.carbon.embodied import EmbodiedSplit
from agent.errors import WattwiseError
from agent.model import Finding, JobEnergy, Totals, UnattributedEnergy

log = logging.getLogger(__name__)

SCHEMA_VERSION = 4
APPLICATION_ID = 0x57415457  # "WATW" in PRAGMA application_id: this file is a wattwise ledger
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
# Per-minute rows held in memory while the ledger cannot be written (about a day of 50 jobs);
# beyond it the outage's per-minute detail is dropped, never the totals.
MAX_PENDING_MINUTELY = 500_000

# Each entry brings the schema from version i to i + 1. Append; never edit a shipped migration.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE jobs (
        job_key TEXT PRIMARY KEY,            -- "<scheduler>:<job_id>"
        scheduler TEXT NOT NULL,
        kind TEXT NOT NULL,                  -- slurm, pod, container, service, exec
        job_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL DEFAULT '',
        first_seen_unix_s REAL NOT NULL,
        last_seen_unix_s REAL NOT NULL,
        ended_unix_s REAL
    );
    CREATE TABLE job_energy (
        job_key TEXT NOT NULL REFERENCES jobs(job_key),
        domain TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('active', 'idle')),
        energy_j REAL NOT NULL,
        PRIMARY KEY (job_key, domain, source, state)
    ) WITHOUT ROWID;
    CREATE TABLE job_energy_minutely (
        job_key TEXT NOT NULL,
        minute_unix_s INTEGER NOT NULL,
        domain TEXT NOT NULL,
        source TEXT NOT NULL,
        state TEXT NOT NULL,
        energy_j REAL NOT NULL,
        PRIMARY KEY (job_key, minute_unix_s, domain, source, state)
    ) WITHOUT ROWID;
    CREATE TABLE unattributed_energy (
        domain TEXT NOT NULL,
        source TEXT NOT NULL,
        reason TEXT NOT NULL CHECK (reason IN ('system', 'idle')),
        energy_j REAL NOT NULL,
        PRIMARY KEY (domain, source, reason)
    ) WITHOUT ROWID;
    """,
    # 2: operational carbon (grams CO2e) beside every energy figure.
    """
    ALTER TABLE job_energy ADD COLUMN carbon_g REAL NOT NULL DEFAULT 0;
    ALTER TABLE job_energy_minutely ADD COLUMN carbon_g REAL NOT NULL DEFAULT 0;
    ALTER TABLE unattributed_energy ADD COLUMN carbon_g REAL NOT NULL DEFAULT 0;
    """,
    # 3: embodied carbon (SCI M) per job and component, and what no job held.
    """
    CREATE TABLE job_embodied (
        job_key TEXT NOT NULL REFERENCES jobs(job_key),
        component TEXT NOT NULL,             -- server, gpu
        carbon_g REAL NOT NULL,
        PRIMARY KEY (job_key, component)
    ) WITHOUT ROWID;
    CREATE TABLE job_embodied_minutely (
        job_key TEXT NOT NULL,
        minute_unix_s INTEGER NOT NULL,
        component TEXT NOT NULL,
        carbon_g REAL NOT NULL,
        PRIMARY KEY (job_key, minute_unix_s, component)
    ) WITHOUT ROWID;
    CREATE TABLE unreserved_embodied (
        component TEXT PRIMARY KEY,
        carbon_g REAL NOT NULL
    ) WITHOUT ROWID;
    """,
    # 4: work units jobs reported (tokens, samples, ...), for efficiency per joule and gram.
    """
    CREATE TABLE job_work (
        job_key TEXT NOT NULL REFERENCES jobs(job_key),
        unit TEXT NOT NULL,
        units REAL NOT NULL,
        PRIMARY KEY (job_key, unit)
    ) WITHOUT ROWID;
    CREATE TABLE job_work_minutely (
        job_key TEXT NOT NULL,
        minute_unix_s INTEGER NOT NULL,
        unit TEXT NOT NULL,
        units REAL NOT NULL,
        PRIMARY KEY (job_key, minute_unix_s, unit)
    ) WITHOUT ROWID;
    """,
)


_V1_TABLES = frozenset({"jobs", "job_energy", "job_energy_minutely", "unattributed_energy"})
_V3_TABLES = _V1_TABLES | {"job_embodied", "job_embodied_minutely", "unreserved_embodied"}
# The tables of each schema version: how a ledger from before application_id is recognised.
TABLES_BY_VERSION = {
    1: _V1_TABLES,
    2: _V1_TABLES,
    3: _V3_TABLES,
    4: _V3_TABLES | {"job_work", "job_work_minutely"},
}


class LedgerError(WattwiseError):
    """The ledger file cannot be used; the message says which file and what to do."""


class LedgerUnavailable(LedgerError):
    """The file could not be read just now (a lock held elsewhere); suspend() and it is tried
    again, like a file that could not be opened."""


class _Transient(Exception):
    """A problem that may pass: the file is tried again later."""


@dataclass(frozen=True, slots=True)
class JobSeen:
    job_key: str
    scheduler: str
    kind: str
    job_id: str
    name: str = ""
    user: str = ""


EnergyKey = tuple[str, str, str, str]  # job_key, domain, source, state


class Ledger:
    """Raises LedgerError for a file it refuses (foreign, damaged, empty, newer); a problem that
    may pass is `last_error`, and the file is tried again on later writes."""

    def __init__(
        self,
        path: Path,
        minutely_retention_s: float = 30 * 86400,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = path
        self.minutely_retention_s = minutely_retention_s
        self.last_error: str | None = None
        self.just_opened = False  # a later write opened the file: the caller adopts its totals
        self._clock = clock
        self._retry_s = 0.0
        self._retry_at = 0.0
        self._pending_jobs: dict[str, tuple[JobSeen, float, float]] = {}
        # Pending sums: key -> [joules, grams].
        self._pending_energy: dict[EnergyKey, list[float]] = defaultdict(lambda: [0.0, 0.0])
        self._pending_minutely: dict[tuple[str, int, str, str, str], list[float]] = defaultdict(
            lambda: [0.0, 0.0]
        )
        self._pending_unattributed: dict[tuple[str, str, str], list[float]] = defaultdict(
            lambda: [0.0, 0.0]
        )
        self._pending_ended: dict[str, float] = {}
        self._pending_embodied: dict[tuple[str, str], float] = defaultdict(float)
        self._pending_embodied_minutely: dict[tuple[str, int, str], float] = defaultdict(float)
        self._pending_unreserved: dict[str, float] = defaultdict(float)
        self._pending_work: dict[tuple[str, str], float] = defaultdict(float)
        self._pending_work_minutely: dict[tuple[str, int, str], float] = defaultdict(float)
        self._last_record_unix_s = time.time()
        self._db: sqlite3.Connection | None = None
        self._try_open()

    @property
    def is_open(self) -> bool:
        return self._db is not None

    def _try_open(self) -> bool:
        """Opens the file if it is usable now; LedgerError if it never will be."""
        try:
            self._db = self._open()
        except _Transient as exc:
            self.last_error = f"{exc}; job totals are kept in memory and the file tried again"
            self._retry_s = min(max(self._retry_s * 2, RETRY_FIRST_S), RETRY_MAX_S)
            self._retry_at = self._clock() + self._retry_s
            return False
        self._retry_s = 0.0
        return True

    def _open(self) -> sqlite3.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                self._create()
            self._check_identity()
            # A short busy timeout: a lock held elsewhere must not stall the tick. The ledger is
            # opened on the main thread and written by the scheduler's worker; one tick runs at
            # a time (max_instances=1) and close() follows the scheduler's shutdown, so the
            # connection is never used by two threads at once.
            db = sqlite3.connect(
                f"file:{self.path}?mode=rw",
                uri=True,
                timeout=0.25,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise self._problem(exc) from None
        except OSError as exc:
            raise _Transient(f"cannot open ledger {self.path}: {exc.strerror or exc}") from None
        try:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            for target in range(version + 1, SCHEMA_VERSION + 1):
                db.executescript(
                    f"BEGIN; {MIGRATIONS[target - 1]}; PRAGMA user_version={target}; "
                    f"PRAGMA application_id={APPLICATION_ID}; COMMIT;"
                )
            if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
                db.execute(f"PRAGMA application_id={APPLICATION_ID}")  # a ledger from before it
        except sqlite3.Error as exc:
            db.close()
            raise self._problem(exc) from None
        return db

    def _create(self) -> None:
        """A new ledger, made whole under another name and linked into place: the path never
        holds a half-made file, which could not then be told from somebody else's."""
        fresh = self.path.with_name(f".{self.path.name}.new-{os.getpid()}")
        fresh.unlink(missing_ok=True)
        try:
            db = sqlite3.connect(fresh, isolation_level=None)
            try:
                db.executescript(
                    f"BEGIN; {''.join(MIGRATIONS)}; PRAGMA user_version={SCHEMA_VERSION}; "
                    f"PRAGMA application_id={APPLICATION_ID}; COMMIT;"
                )
                db.execute("PRAGMA journal_mode=WAL")
            finally:
                db.close()
            try:
                os.link(fresh, self.path)  # never over a file another process made meanwhile
            except FileExistsError:
                pass  # that one is checked like any other file
            except OSError:  # a filesystem without hard links: a rename, which could replace
                if not self.path.exists():  # a file made in the instant between; unlikely
                    os.replace(fresh, self.path)
        finally:
            fresh.unlink(missing_ok=True)

    def _check_identity(self) -> None:
        """Recognises the file as a wattwise ledger, reading only; LedgerError if it is not."""
        untouched = "it was left untouched: move it aside to start a new ledger"
        if self.path.stat().st_size == 0:
            raise LedgerError(
                f"ledger {self.path} is an empty file: somebody else's, or left by a wattwise "
                f"older than 0.2 killed while creating it (this one creates a ledger whole); "
                f"{untouched}"
            )
        with open(self.path, "rb") as file:
            if file.read(16) != b"SQLite format 3\x00":
                raise LedgerError(f"{self.path} is not an SQLite file; {untouched}")
        reader = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=0.25)
        try:
            app_id = reader.execute("PRAGMA application_id").fetchone()[0]
            version = reader.execute("PRAGMA user_version").fetchone()[0]
            tables = {
                name
                for (name,) in reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            }
        finally:
            reader.close()
        if app_id == APPLICATION_ID or (app_id == 0 and tables == TABLES_BY_VERSION.get(version)):
            if version > SCHEMA_VERSION:
                raise LedgerError(
                    f"ledger {self.path} has schema {version}, newer than this wattwise "
                    f"understands ({SCHEMA_VERSION}): upgrade wattwise"
                )
            return
        raise LedgerError(
            f"{self.path} is an SQLite file but not a wattwise ledger (application_id "
            f"{app_id}, user_version {version}, {len(tables)} tables); {untouched}"
        )

    def _problem(self, exc: sqlite3.Error) -> Exception:
        """LedgerError for a file that will never be usable, _Transient for one that may be."""
        name = getattr(exc, "sqlite_errorname", "") or ""
        if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc):
            return LedgerError(
                f"ledger {self.path} is damaged ({exc}); it was left untouched: move it aside "
                "to start a new ledger, or restore it from a backup"
            )
        if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc):
            why = "is locked by another process (another wattwise agent, or a tool holding it)"
        elif name.startswith("SQLITE_FULL") or "full" in str(exc):
            why = "cannot grow: its disk is full"
        elif name.startswith("SQLITE_READONLY"):
            why = "is read-only here (file permissions, or a read-only mount)"
        elif name.startswith("SQLITE_CANTOPEN"):
            why = "cannot be opened (does its directory exist, writable by this user?)"
        else:
            why = f"failed: {exc}"
        return _Transient(f"ledger {self.path} {why}")

    def record(
        self,
        now_unix_s: float,
        jobs: Iterable[JobSeen] = (),
        energy: Iterable[JobEnergy] = (),
        unattributed: Iterable[UnattributedEnergy] = (),
        ended: Iterable[str] = (),
        embodied: EmbodiedSplit | None = None,
        work: dict[tuple[str, str], float] | None = None,
    ) -> bool:
        """Adds one tick; True when it (and anything pending) reached the disk."""
        self._last_record_unix_s = now_unix_s
        minute = int(now_unix_s // 60 * 60)
        # The file's last gate: one non-finite figure would fail every later write (NOT NULL)
        # and so stop the ledger for every job; it is dropped, loudly, instead.
        energy = [e for e in energy if _finite(e.job_key, e.energy_j, e.carbon_g)]
        unattributed = [u for u in unattributed if _finite(u.domain, u.energy_j, u.carbon_g)]
        work = {k: n for k, n in (work or {}).items() if _finite(k[0], n)}
        for job in jobs:
            first = self._pending_jobs.get(job.job_key, (job, now_unix_s, now_unix_s))[1]
            self._pending_jobs[job.job_key] = (job, first, now_unix_s)
        for e in energy:
            for sums in (
                self._pending_energy[(e.job_key, e.domain, e.source, e.state)],
                self._pending_minutely[(e.job_key, minute, e.domain, e.source, e.state)],
            ):
                sums[0] += e.energy_j
                sums[1] += e.carbon_g
        for u in unattributed:
            sums = self._pending_unattributed[(u.domain, u.source, u.reason)]
            sums[0] += u.energy_j
            sums[1] += u.carbon_g
        for job_key in ended:
            self._pending_ended[job_key] = now_unix_s
        if embodied is not None:
            for job_key, parts in embodied.jobs_g.items():
                for component, grams in parts.items():
                    if _finite(job_key, grams):
                        self._pending_embodied[(job_key, component)] += grams
                        self._pending_embodied_minutely[(job_key, minute, component)] += grams
            for component, grams in embodied.unreserved_g.items():
                if _finite(component, grams):
                    self._pending_unreserved[component] += grams
        for (job_key, unit), units in work.items():
            self._pending_work[(job_key, unit)] += units
            self._pending_work_minutely[(job_key, minute, unit)] += units
        self._bound_pending()
        if self._db is None:
            if self._clock() < self._retry_at or not self._try_open():
                return False
            self.just_opened = True
            log.info("ledger %s is open now; what was kept in memory is written", self.path)
        try:
            self._flush(now_unix_s)
        except sqlite3.Error as exc:
            problem = self._problem(exc)
            if isinstance(problem, LedgerError):  # damaged: never written again
                self.close_without_writing()
                raise problem from None
            self.last_error = f"{problem}; {self._pending_count()} rows kept in memory"
            return False
        self.last_error = None
        return True

    def _bound_pending(self) -> None:
        if (
            len(self._pending_minutely)
            + len(self._pending_embodied_minutely)
            + len(self._pending_work_minutely)
            <= MAX_PENDING_MINUTELY
        ):
            return
        log.error(
            "ledger %s: unwritable for long; the per-minute detail held in memory is dropped "
            "(%d rows), the totals are kept",
            self.path,
            MAX_PENDING_MINUTELY,
        )
        self._pending_minutely.clear()
        self._pending_embodied_minutely.clear()
        self._pending_work_minutely.clear()

    def _flush(self, now_unix_s: float) -> None:
        db = self._db
        assert db is not None
        db.execute("BEGIN IMMEDIATE")
        try:
            db.executemany(
                "INSERT INTO jobs VALUES (?, ?, ?, ?, ?, ?, ?, ?, NULL) ON CONFLICT(job_key) DO "
                "UPDATE SET last_seen_unix_s = excluded.last_seen_unix_s, name = excluded.name, "
                "user = excluded.user, ended_unix_s = NULL",
                [
                    (j.job_key, j.scheduler, j.kind, j.job_id, j.name, j.user, first, last)
                    for j, first, last in self._pending_jobs.values()
                ],
            )
            add = (
                "ON CONFLICT DO UPDATE SET energy_j = energy_j + excluded.energy_j, "
                "carbon_g = carbon_g + excluded.carbon_g"
            )
            db.executemany(
                "INSERT INTO job_energy (job_key, domain, source, state, energy_j, carbon_g) "
                f"VALUES (?, ?, ?, ?, ?, ?) {add}",
                [(*key, *sums) for key, sums in self._pending_energy.items()],
            )
            db.executemany(
                "INSERT INTO job_energy_minutely (job_key, minute_unix_s, domain, source, state, "
                f"energy_j, carbon_g) VALUES (?, ?, ?, ?, ?, ?, ?) {add}",
                [(*key, *sums) for key, sums in self._pending_minutely.items()],
            )
            db.executemany(
                "INSERT INTO unattributed_energy (domain, source, reason, energy_j, carbon_g) "
                f"VALUES (?, ?, ?, ?, ?) {add}",
                [(*key, *sums) for key, sums in self._pending_unattributed.items()],
            )
            add_g = "ON CONFLICT DO UPDATE SET carbon_g = carbon_g + excluded.carbon_g"
            db.executemany(
                f"INSERT INTO job_embodied VALUES (?, ?, ?) {add_g}",
                [(*key, g) for key, g in self._pending_embodied.items()],
            )
            db.executemany(
                f"INSERT INTO job_embodied_minutely VALUES (?, ?, ?, ?) {add_g}",
                [(*key, g) for key, g in self._pending_embodied_minutely.items()],
            )
            db.executemany(
                f"INSERT INTO unreserved_embodied VALUES (?, ?) {add_g}",
                list(self._pending_unreserved.items()),
            )
            add_units = "ON CONFLICT DO UPDATE SET units = units + excluded.units"
            db.executemany(
                f"INSERT INTO job_work VALUES (?, ?, ?) {add_units}",
                [(*key, u) for key, u in self._pending_work.items()],
            )
            db.executemany(
                f"INSERT INTO job_work_minutely VALUES (?, ?, ?, ?) {add_units}",
                [(*key, u) for key, u in self._pending_work_minutely.items()],
            )
            db.executemany(
                "UPDATE jobs SET ended_unix_s = ? WHERE job_key = ? AND ended_unix_s IS NULL",
                [(at, key) for key, at in self._pending_ended.items()],
            )
            for table in ("job_energy_minutely", "job_embodied_minutely", "job_work_minutely"):
                db.execute(
                    f"DELETE FROM {table} WHERE minute_unix_s < ?",
                    (now_unix_s - self.minutely_retention_s,),
                )
            db.execute("COMMIT")
        except sqlite3.Error:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        for pending in (
            self._pending_jobs,
            self._pending_energy,
            self._pending_minutely,
            self._pending_unattributed,
            self._pending_ended,
            self._pending_embodied,
            self._pending_embodied_minutely,
            self._pending_unreserved,
            self._pending_work,
            self._pending_work_minutely,
        ):
            pending.clear()

    def _pending_count(self) -> int:
        return (
            len(self._pending_energy)
            + len(self._pending_minutely)
            + len(self._pending_jobs)
            + len(self._pending_embodied_minutely)
            + len(self._pending_work_minutely)
        )

    def _rows(self, sql: str) -> list[tuple]:
        """A read of the file; a damaged page is a LedgerError, like a damaged header."""
        if self._db is None:
            raise LedgerError(f"ledger {self.path} is not open: {self.last_error}")
        try:
            return self._db.execute(sql).fetchall()
        except sqlite3.DatabaseError as exc:
            problem = self._problem(exc)
            if not isinstance(problem, LedgerError):  # a lock: the file is tried again later
                problem = LedgerUnavailable(f"{problem}; job totals are kept in memory")
            raise problem from None

    def totals(self, jobs: Iterable[str]) -> Totals:
        """The ledger's totals (what is pending included) for `jobs`, and the node's."""
        wanted = set(jobs)
        sums = self._job_sums()
        embodied = self.job_embodied_totals()
        return Totals(
            energy_j={k: v[0] for k, v in sums.items() if k[0] in wanted},
            carbon_g={k: v[1] for k, v in sums.items() if k[0] in wanted},
            unattributed_j=self.unattributed_totals(),
            node_carbon_g=self.carbon_total_g(),
            embodied_g={k: g for k, g in embodied.items() if k[0] in wanted},
            reserved_embodied_g=sum(embodied.values()),
            unreserved_g=self.unreserved_embodied_totals(),
            work_units={k: n for k, n in self.job_work_totals().items() if k[0] in wanted},
        )

    def job_embodied_totals(self) -> dict[tuple[str, str], float]:
        """Every job's embodied grams so far, by component."""
        rows = self._rows("SELECT job_key, component, carbon_g FROM job_embodied")
        totals = {(key, component): grams for key, component, grams in rows}
        for key, grams in self._pending_embodied.items():
            totals[key] = totals.get(key, 0.0) + grams
        return totals

    def job_work_totals(self) -> dict[tuple[str, str], float]:
        """Every job's reported work units so far, by unit."""
        totals = {(k, u): n for k, u, n in self._rows("SELECT job_key, unit, units FROM job_work")}
        for key, units in self._pending_work.items():
            totals[key] = totals.get(key, 0.0) + units
        return totals

    def unreserved_embodied_totals(self) -> dict[str, float]:
        totals = dict(self._rows("SELECT component, carbon_g FROM unreserved_embodied"))
        for key, grams in self._pending_unreserved.items():
            totals[key] = totals.get(key, 0.0) + grams
        return totals

    def job_totals(self) -> dict[EnergyKey, float]:
        """Every job's joules so far, so exported counters continue instead of restarting."""
        return {key: sums[0] for key, sums in self._job_sums().items()}

    def job_carbon_totals(self) -> dict[EnergyKey, float]:
        """Every job's operational grams so far."""
        return {key: sums[1] for key, sums in self._job_sums().items()}

    def _job_sums(self) -> dict[EnergyKey, list[float]]:
        rows = self._rows(
            "SELECT job_key, domain, source, state, energy_j, carbon_g FROM job_energy"
        )
        totals = {(k, d, s, st): [j, g] for k, d, s, st, j, g in rows}
        for key, (joules, grams) in self._pending_energy.items():
            sums = totals.setdefault(key, [0.0, 0.0])
            sums[0] += joules
            sums[1] += grams
        return totals

    def carbon_total_g(self) -> float:
        """All operational grams ever recorded: jobs and the unattributed remainder."""
        jobs, rest = (
            self._rows(f"SELECT coalesce(sum(carbon_g), 0) FROM {table}")[0][0]
            for table in ("job_energy", "unattributed_energy")
        )
        pending = sum(s[1] for s in self._pending_energy.values())
        pending += sum(s[1] for s in self._pending_unattributed.values())
        return jobs + rest + pending

    def unattributed_totals(self) -> dict[tuple[str, str, str], float]:
        rows = self._rows("SELECT domain, source, reason, energy_j FROM unattributed_energy")
        totals = {(d, s, r): j for d, s, r, j in rows}
        for key, (joules, _) in self._pending_unattributed.items():
            totals[key] = totals.get(key, 0.0) + joules
        return totals

    def open_jobs(self) -> set[str]:
        rows = self._rows("SELECT job_key FROM jobs WHERE ended_unix_s IS NULL")
        return {key for (key,) in rows} - self._pending_ended.keys()

    def close(self) -> None:
        """Writes what is still pending (as of the last tick), then closes the file."""
        try:
            if (
                self._pending_count()
                or self._pending_unattributed
                or self._pending_ended
                or self._pending_unreserved
            ):
                self._retry_at = 0.0  # one last try, whatever the backoff says
                if not self.record(self._last_record_unix_s):
                    log.error("%s; what was held in memory is lost", self.last_error)
        except LedgerError as exc:
            log.error("%s", exc)
        finally:
            self.close_without_writing()

    def suspend(self, problem: LedgerUnavailable) -> None:
        """Closes the file for now and tries it again with backoff, keeping what is pending."""
        self.close_without_writing()
        self.last_error = str(problem)
        self._retry_s = min(max(self._retry_s * 2, RETRY_FIRST_S), RETRY_MAX_S)
        self._retry_at = self._clock() + self._retry_s

    def close_without_writing(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None


def probe_ledger(path: Path) -> Finding:
    """Whether the agent will be able to keep its ledger at `path`; writes nothing."""
    if path.exists():
        ok = os.access(path, os.R_OK | os.W_OK)
        detail = "present, writable" if ok else "present but not writable by this user"
        fix = "run as the agent's user, or fix the file's ownership"
    else:
        parent = next((p for p in path.parents if p.exists()), path.parent)
        ok = os.access(parent, os.W_OK)
        detail = "will be created" if ok else f"cannot be created: {parent} is not writable"
        fix = "set ledger.path, or run as root"
    return Finding("ledger", "sqlite", str(path), ok, detail, "" if ok else fix)


def _finite(what: str, *values: float) -> bool:
    if all(math.isfinite(v) for v in values):
        return True
    log.error("ledger: a non-finite figure for %s was dropped: %s", what, values)
    return False
