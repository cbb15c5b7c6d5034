-- Schema 2: the audit log and failed-login throttling.

-- One row per security-relevant event. Never holds a password, license key,
-- token or secret: actors and subjects are ids (and emails for sign-ins).
CREATE TABLE audit_log (
    id           INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    event        TEXT NOT NULL,
    outcome      TEXT NOT NULL,
    actor        TEXT,
    ip           TEXT,
    user_agent   TEXT,
    subject_type TEXT,
    subject_id   TEXT,
    detail       TEXT
);
CREATE INDEX audit_log_at ON audit_log (at);
CREATE INDEX audit_log_event_at ON audit_log (event, at);

-- Failed sign-ins per email (known or not, so that locking reveals nothing
-- about which emails have accounts). Five failures lock the email for 15
-- minutes; the lock lives here, so it survives a restart.
CREATE TABLE login_throttle (
    email        TEXT PRIMARY KEY COLLATE NOCASE,
    failures     INTEGER NOT NULL DEFAULT 0,
    locked_until INTEGER,
    updated_at   INTEGER NOT NULL
);
