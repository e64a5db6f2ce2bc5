"""Opening the ledger's SQLite file: a new one is created whole, under another name, and linked
into place; an existing one is recognised as a ledger before anything in it is touched (its
application_id, or exactly the tables of its schema version) and migrated; a problem is told
apart as one that may pass (a lock, a full disk) or one that never will (a foreign, damaged,
empty or newer file)."""

from __future__ import annotations

import logging
import os
import sqlite3
from pathlib import Path

from wattwise.accounts.schema import (
    APPLICATION_ID,
    CURRENT_SCHEMA,
    MIGRATIONS,
    SCHEMA_VERSION,
    TABLES_BY_VERSION,
)
from wattwise.errors import LedgerError
from wattwise.model import Finding

log = logging.getLogger("wattwise.accounts.ledger")


class Transient(Exception):
    """A problem that may pass: the file is tried again later."""


def open_ledger(path: Path) -> sqlite3.Connection:
    """The ledger at `path`, created whole or migrated to the current schema. LedgerError for a
    file that will never be usable, Transient for a problem that may pass."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.exists():
            _create(path)
        _check_identity(path)
        # A short busy timeout: a lock held elsewhere must not stall the tick. The ledger is
        # opened on the main thread and written by the scheduler's worker; one tick runs at
        # a time (max_instances=1) and close() follows the scheduler's shutdown, so the
        # connection is never used by two threads at once.
        db = sqlite3.connect(
            f"file:{path}?mode=rw",
            uri=True,
            timeout=0.25,
            isolation_level=None,
            check_same_thread=False,
        )
    except sqlite3.Error as exc:
        raise problem_of(path, exc) from None
    except OSError as exc:
        raise Transient(f"cannot open ledger {path}: {exc.strerror or exc}") from None
    try:
        version = db.execute("PRAGMA user_version").fetchone()[0]
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            if target == 5 and version > 0:
                log.warning(
                    "ledger %s: migrating to schema 5 (once; a large file takes a while)",
                    path,
                )
            db.executescript(
                f"BEGIN; {MIGRATIONS[target - 1]}; PRAGMA user_version={target}; "
                f"PRAGMA application_id={APPLICATION_ID}; COMMIT;"
            )
        if db.execute("PRAGMA application_id").fetchone()[0] != APPLICATION_ID:
            db.execute(f"PRAGMA application_id={APPLICATION_ID}")  # a ledger from before it
    except sqlite3.Error as exc:
        db.close()
        raise problem_of(path, exc) from None
    return db


def _create(path: Path) -> None:
    """A new ledger, made whole under another name and linked into place: the path never
    holds a half-made file, which could not then be told from somebody else's."""
    fresh = path.with_name(f".{path.name}.new-{os.getpid()}")
    fresh.unlink(missing_ok=True)
    try:
        db = sqlite3.connect(fresh, isolation_level=None)
        try:
            db.executescript(
                f"BEGIN; {CURRENT_SCHEMA}; PRAGMA user_version={SCHEMA_VERSION}; "
                f"PRAGMA application_id={APPLICATION_ID}; COMMIT;"
            )
            db.execute("PRAGMA journal_mode=WAL")
        finally:
            db.close()
        try:
            os.link(fresh, path)  # never over a file another process made meanwhile
        except FileExistsError:
            pass  # that one is checked like any other file
        except OSError:  # a filesystem without hard links: a rename, which could replace
            if not path.exists():  # a file made in the instant between; unlikely
                os.replace(fresh, path)
    finally:
        fresh.unlink(missing_ok=True)


def _check_identity(path: Path) -> None:
    """Recognises the file as a wattwise ledger, reading only; LedgerError if it is not."""
    untouched = "it was left untouched: move it aside to start a new ledger"
    if path.stat().st_size == 0:
        raise LedgerError(
            f"ledger {path} is an empty file: somebody else's, or left by a wattwise "
            f"older than 0.2 killed while creating it (this one creates a ledger whole); "
            f"{untouched}"
        )
    with open(path, "rb") as file:
        if file.read(16) != b"SQLite format 3\x00":
            raise LedgerError(f"{path} is not an SQLite file; {untouched}")
    reader = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=0.25)
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
                f"ledger {path} has schema {version}, newer than this wattwise "
                f"understands ({SCHEMA_VERSION}): upgrade wattwise"
            )
        return
    raise LedgerError(
        f"{path} is an SQLite file but not a wattwise ledger (application_id "
        f"{app_id}, user_version {version}, {len(tables)} tables); {untouched}"
    )


def problem_of(path: Path, exc: sqlite3.Error) -> Exception:
    """LedgerError for a file that will never be usable, Transient for one that may be."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    if name.startswith(("SQLITE_CORRUPT", "SQLITE_NOTADB")) or "malformed" in str(exc):
        return LedgerError(
            f"ledger {path} is damaged ({exc}); it was left untouched: move it aside "
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
    return Transient(f"ledger {path} {why}")


def probe_ledger(path: Path) -> Finding:
    """Whether the agent will be able to keep its ledger at `path`; writes nothing."""
    try:
        return _probe_ledger(path)
    except OSError as exc:
        return Finding.uncheckable("ledger", "sqlite", str(path), exc)


def _probe_ledger(path: Path) -> Finding:
    fix = "run as the agent's user, or fix the file's ownership"
    if path.is_dir() or (path.exists() and not path.is_file()):
        ok, detail = False, "is a directory or a special file, not a ledger file"
        fix = "set ledger.path to a file (for example /var/lib/wattwise/ledger.db)"
    elif path.exists():
        ok = os.access(path, os.R_OK | os.W_OK)
        detail = "present, writable" if ok else "present but not writable by this user"
        if ok and not _looks_like_sqlite(path):
            ok, detail = False, "present, but not an SQLite database"
            fix = "set ledger.path to the agent's ledger, or move this file aside"
    else:
        parent = next((p for p in path.parents if p.exists()), path.parent)
        ok = parent.is_dir() and os.access(parent, os.W_OK)
        detail = "will be created" if ok else f"cannot be created: {parent} is not writable"
        fix = "set ledger.path, or run as root"
    return Finding("ledger", "sqlite", str(path), ok, detail, "" if ok else fix)


def _looks_like_sqlite(path: Path) -> bool:
    """An empty file (SQLite makes it a database) or one with SQLite's header."""
    try:
        with path.open("rb") as file:
            head = file.read(16)
    except OSError:
        return False
    return head in (b"", b"SQLite format 3\x00")
