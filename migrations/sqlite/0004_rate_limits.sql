-- Schema 4: rate-limit counters in the database, as on PostgreSQL
-- (migrations/postgres/0002_rate_limits.sql). The SQLite server (one
-- process) counts in memory; the table gives this backend the same
-- storage interface, checked by the same conformance suite.
CREATE TABLE rate_limits (
    bucket TEXT PRIMARY KEY,
    tat_ms INTEGER NOT NULL
) WITHOUT ROWID;
