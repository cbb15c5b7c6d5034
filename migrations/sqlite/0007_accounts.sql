-- Schema 6: seat integrity for accounts (issue 13, items 5-7).
--
-- Email verification: a new account is unverified until its owner opens
-- the link mailed to it; an unverified account whose organization never
-- paid is deleted after UNVERIFIED_ACCOUNT_TTL, which frees the address.
-- Accounts that existed before this schema count as verified.
ALTER TABLE users ADD COLUMN email_verified_at INTEGER;
UPDATE users SET email_verified_at = created_at;

-- Single-use links mailed to an account (verify the address, reset the
-- password). Only the SHA-256 of the random token is kept; a link is used
-- by one UPDATE that sets used_at, so it works once whatever the process.
CREATE TABLE account_tokens (
    token_hash TEXT PRIMARY KEY CHECK (length(token_hash) = 64),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    used_at    INTEGER
);
CREATE INDEX account_tokens_user ON account_tokens (user_id);

-- Failed sign-ins, per (email, client) and per email (client = ''): the
-- progressive delay of domain::account::sign_in_refused_until. client is a
-- salted SHA-256 of the client address, never the address. succeeded_at
-- marks a client that signed in to this email: it is not slowed down by
-- the failures of others. Replaces the per-email lock of schema 2.
DROP TABLE login_throttle;
CREATE TABLE sign_in_failures (
    email           TEXT NOT NULL COLLATE NOCASE,
    client          TEXT NOT NULL,
    failures        INTEGER NOT NULL DEFAULT 0,
    last_failure_at INTEGER NOT NULL DEFAULT 0,
    succeeded_at    INTEGER,
    PRIMARY KEY (email, client)
);
