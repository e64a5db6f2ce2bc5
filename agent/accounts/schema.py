"""The ledger's layout: schema 6's tables, the in-place migrations from older schemas, and the
tables each version had (how a ledger from before application_id is recognised). Declarative:
the statements are run by accounts/ledger.py."""

from __future__ import annotations

SCHEMA_VERSION = 6
APPLICATION_ID = 0x57415457  # "WATW" in PRAGMA application_id: this file is a wattwise ledger

# The layout of schema 5, which the migration from 4 builds. Per-minute and hourly amounts are
# integers (uJ, millionths of a work unit, ng): small on disk.
SCHEMA_5 = """
    CREATE TABLE jobs (
        id INTEGER PRIMARY KEY,              -- 0 is the node itself
        job_key TEXT NOT NULL UNIQUE,        -- "<scheduler>:<job_id>"; '' for the node
        scheduler TEXT NOT NULL,
        kind TEXT NOT NULL,                  -- slurm, pod, container, service, exec
        job_id TEXT NOT NULL,
        name TEXT NOT NULL DEFAULT '',
        user TEXT NOT NULL DEFAULT '',
        first_seen_unix_s REAL NOT NULL,
        last_seen_unix_s REAL NOT NULL,
        ended_unix_s REAL
    );
    INSERT INTO jobs VALUES (0, '', '', 'node', '', '', '', 0, 0, NULL);
    CREATE TABLE series (
        id INTEGER PRIMARY KEY,
        measure TEXT NOT NULL,     -- energy, embodied, work; node: unattributed, unreserved, node
        a TEXT NOT NULL,                     -- domain, component or unit
        b TEXT NOT NULL DEFAULT '',          -- source
        c TEXT NOT NULL DEFAULT '',          -- state (active, idle) or reason (system, idle)
        UNIQUE (measure, a, b, c)
    );
    INSERT INTO series (measure, a) VALUES ('node', 'operational'), ('node', 'embodied');
    CREATE TABLE totals (
        job INTEGER NOT NULL,
        series INTEGER NOT NULL,
        amount REAL NOT NULL,                -- joules, or work units
        carbon_g REAL NOT NULL,
        PRIMARY KEY (job, series)
    ) WITHOUT ROWID;
    INSERT INTO totals SELECT 0, id, 0, 0 FROM series WHERE measure = 'node';
    CREATE TABLE minutes (
        minute INTEGER NOT NULL,             -- unix seconds of the minute's start
        job INTEGER NOT NULL,
        series INTEGER NOT NULL,
        amount INTEGER NOT NULL,             -- millionths (uJ, work units)
        carbon_ng INTEGER NOT NULL,
        PRIMARY KEY (minute, job, series)
    ) WITHOUT ROWID;
    CREATE TABLE hours (
        hour INTEGER NOT NULL,               -- unix seconds of the hour's start
        job INTEGER NOT NULL,
        series INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        carbon_ng INTEGER NOT NULL,
        PRIMARY KEY (hour, job, series)
    ) WITHOUT ROWID;
    CREATE TABLE meta (key TEXT PRIMARY KEY, value REAL NOT NULL);
    INSERT INTO meta VALUES ('hours_until', 0);
"""
NODE_INFO = """
    CREATE TABLE node_info (key TEXT PRIMARY KEY, value TEXT NOT NULL);  -- node, cluster
"""
# The layout of schema 6: a new ledger is made with it directly.
CURRENT_SCHEMA = SCHEMA_5 + NODE_INFO

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
    # 5: integer ids for jobs and series, one table of totals, per-minute rows keyed by the minute
    # first (retention is a range delete), hourly rollups kept longer (SCHEMA_5).
    """
    ALTER TABLE jobs RENAME TO jobs_v4;
    """
    + SCHEMA_5
    + """
    INSERT INTO jobs (job_key, scheduler, kind, job_id, name, user, first_seen_unix_s,
                      last_seen_unix_s, ended_unix_s)
        SELECT job_key, scheduler, kind, job_id, name, user, first_seen_unix_s,
               last_seen_unix_s, ended_unix_s FROM jobs_v4 ORDER BY first_seen_unix_s;
    INSERT OR IGNORE INTO series (measure, a, b, c)
        SELECT DISTINCT 'energy', domain, source, state FROM job_energy;
    INSERT OR IGNORE INTO series (measure, a, b, c)
        SELECT DISTINCT 'unattributed', domain, source, reason FROM unattributed_energy;
    INSERT OR IGNORE INTO series (measure, a)
        SELECT DISTINCT 'embodied', component FROM job_embodied;
    INSERT OR IGNORE INTO series (measure, a)
        SELECT DISTINCT 'unreserved', component FROM unreserved_embodied;
    INSERT OR IGNORE INTO series (measure, a) SELECT DISTINCT 'work', unit FROM job_work;
    INSERT INTO totals SELECT j.id, s.id, e.energy_j, e.carbon_g FROM job_energy e
        JOIN jobs j ON j.job_key = e.job_key
        JOIN series s
            ON s.measure = 'energy' AND s.a = e.domain AND s.b = e.source AND s.c = e.state;
    INSERT INTO totals SELECT 0, s.id, u.energy_j, u.carbon_g FROM unattributed_energy u
        JOIN series s ON s.measure = 'unattributed' AND s.a = u.domain AND s.b = u.source
            AND s.c = u.reason;
    INSERT INTO totals SELECT j.id, s.id, 0, e.carbon_g FROM job_embodied e
        JOIN jobs j ON j.job_key = e.job_key
        JOIN series s ON s.measure = 'embodied' AND s.a = e.component;
    INSERT INTO totals SELECT 0, s.id, 0, u.carbon_g FROM unreserved_embodied u
        JOIN series s ON s.measure = 'unreserved' AND s.a = u.component;
    INSERT INTO totals SELECT j.id, s.id, w.units, 0 FROM job_work w
        JOIN jobs j ON j.job_key = w.job_key JOIN series s ON s.measure = 'work' AND s.a = w.unit;
    UPDATE totals SET carbon_g = (SELECT coalesce(sum(carbon_g), 0) FROM job_energy)
        + (SELECT coalesce(sum(carbon_g), 0) FROM unattributed_energy)
        WHERE job = 0
        AND series = (SELECT id FROM series WHERE measure = 'node' AND a = 'operational');
    UPDATE totals SET carbon_g = (SELECT coalesce(sum(carbon_g), 0) FROM job_embodied)
        WHERE job = 0
        AND series = (SELECT id FROM series WHERE measure = 'node' AND a = 'embodied');
    INSERT INTO minutes SELECT m.minute_unix_s, j.id, s.id,
            CAST(round(sum(m.energy_j) * 1e6) AS INTEGER),
            CAST(round(sum(m.carbon_g) * 1e9) AS INTEGER)
        FROM job_energy_minutely m JOIN jobs j ON j.job_key = m.job_key
        JOIN series s
            ON s.measure = 'energy' AND s.a = m.domain AND s.b = m.source AND s.c = m.state
        GROUP BY 1, 2, 3;
    INSERT INTO minutes SELECT m.minute_unix_s, j.id, s.id,
            0, CAST(round(sum(m.carbon_g) * 1e9) AS INTEGER)
        FROM job_embodied_minutely m JOIN jobs j ON j.job_key = m.job_key
        JOIN series s ON s.measure = 'embodied' AND s.a = m.component GROUP BY 1, 2, 3;
    INSERT INTO minutes SELECT m.minute_unix_s, j.id, s.id,
            CAST(round(sum(m.units) * 1e6) AS INTEGER), 0
        FROM job_work_minutely m JOIN jobs j ON j.job_key = m.job_key
        JOIN series s ON s.measure = 'work' AND s.a = m.unit GROUP BY 1, 2, 3;
    -- Every hour before the last one with minutes is closed: rolled up now.
    UPDATE meta SET value = (SELECT coalesce(max(minute), 0) / 3600 * 3600 FROM minutes)
        WHERE key = 'hours_until';
    INSERT INTO hours
        SELECT minute / 3600 * 3600, job, series, sum(amount), sum(carbon_ng) FROM minutes
        WHERE minute < (SELECT value FROM meta WHERE key = 'hours_until') GROUP BY 1, 2, 3;
    DROP TABLE job_energy; DROP TABLE job_energy_minutely; DROP TABLE unattributed_energy;
    DROP TABLE job_embodied; DROP TABLE job_embodied_minutely; DROP TABLE unreserved_embodied;
    DROP TABLE job_work; DROP TABLE job_work_minutely; DROP TABLE jobs_v4;
    """,
    # 5 -> 6: the node and cluster the ledger's jobs ran on, for fleet exports.
    NODE_INFO,
)


_V1_TABLES = frozenset({"jobs", "job_energy", "job_energy_minutely", "unattributed_energy"})
_V3_TABLES = _V1_TABLES | {"job_embodied", "job_embodied_minutely", "unreserved_embodied"}
# The tables of each schema version: how a ledger from before application_id is recognised.
TABLES_BY_VERSION = {
    1: _V1_TABLES,
    2: _V1_TABLES,
    3: _V3_TABLES,
    4: _V3_TABLES | {"job_work", "job_work_minutely"},
    5: frozenset({"jobs", "series", "totals", "minutes", "hours", "meta"}),
    6: frozenset({"jobs", "series", "totals", "minutes", "hours", "meta", "node_info"}),
}
