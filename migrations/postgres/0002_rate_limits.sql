-- Schema 2 on PostgreSQL: rate-limit counters shared by every issuer
-- process, so that a limit holds across instances and restarts.
--
-- One row per bucket: the limit's name and the hex SHA-256 of a salt
-- (derived from JWT_SECRET) and the client address or license key, never
-- the address or the key itself. tat_ms is the bucket's GCRA theoretical
-- arrival time in Unix milliseconds (see issuer/src/domain/rate_limit.rs);
-- a row whose tat_ms is not after now is as good as no row, and is pruned.
--
-- Every check updates its row: the fill factor leaves room on each page
-- for the new version (a HOT update), and there is deliberately no index
-- on tat_ms (it would make every update write to it); pruning scans.
--
-- UNLOGGED: a check writes no WAL and waits for no disk flush (a renewal
-- makes two checks). The price: after a crash of the database server, or
-- on a failover to a replica, the counters start empty, which only lets
-- through at most one more burst per limit. A restart of the issuer, or a
-- clean restart of the database, keeps them.
CREATE UNLOGGED TABLE rate_limits (
    bucket TEXT PRIMARY KEY,
    tat_ms BIGINT NOT NULL
) WITH (fillfactor = 70);
