-- Schema 4 on PostgreSQL: email verification, single-use account links and
-- failed sign-ins per (email, client); see migrations/sqlite/0006_accounts.sql.
ALTER TABLE users ADD COLUMN email_verified_at BIGINT;
UPDATE users SET email_verified_at = created_at;

CREATE TABLE account_tokens (
    token_hash TEXT PRIMARY KEY CHECK (length(token_hash) = 64),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    purpose    TEXT NOT NULL CHECK (purpose IN ('verify_email', 'reset_password')),
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
CREATE INDEX account_tokens_user ON account_tokens (user_id);

-- email is kept lowered; client '' is the count of all clients.
DROP TABLE login_throttle;
CREATE TABLE sign_in_failures (
    email           TEXT NOT NULL,
    client          TEXT NOT NULL,
    failures        BIGINT NOT NULL DEFAULT 0,
    last_failure_at BIGINT NOT NULL DEFAULT 0,
    succeeded_at    BIGINT,
    PRIMARY KEY (email, client)
);
