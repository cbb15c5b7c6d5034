-- Schema 7 on PostgreSQL: sign in with Google and GitHub; see
-- migrations/sqlite/0009_provider_sign_in.sql.
CREATE TABLE provider_identities (
    provider   TEXT NOT NULL CHECK (provider IN ('google', 'github')),
    subject    TEXT NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email      TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX provider_identities_user ON provider_identities (user_id, provider);

CREATE TABLE provider_logins (
    state_hash    TEXT PRIMARY KEY CHECK (length(state_hash) = 64),
    provider      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    link_user_id  TEXT REFERENCES users (id) ON DELETE CASCADE,
    then_go       TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL
);
CREATE INDEX provider_logins_expiry ON provider_logins (expires_at);

CREATE TABLE cli_codes (
    code_hash      TEXT PRIMARY KEY CHECK (length(code_hash) = 64),
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_challenge TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    created_at     BIGINT NOT NULL,
    expires_at     BIGINT NOT NULL
);
CREATE INDEX cli_codes_expiry ON cli_codes (expires_at);

CREATE TABLE device_codes (
    device_code_hash TEXT PRIMARY KEY CHECK (length(device_code_hash) = 64),
    user_code        TEXT NOT NULL UNIQUE,
    user_id          TEXT REFERENCES users (id) ON DELETE CASCADE,
    interval_seconds BIGINT NOT NULL,
    last_poll_at     BIGINT,
    created_at       BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL
);
CREATE INDEX device_codes_expiry ON device_codes (expires_at);
