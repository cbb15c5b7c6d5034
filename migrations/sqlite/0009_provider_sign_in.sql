-- Schema 9: sign in with Google and GitHub (issue 16).
--
-- Provider identities: the provider's stable subject id (Google's `sub`,
-- GitHub's numeric user id), never just the email, tied to one user. One
-- identity of each provider per user.
CREATE TABLE provider_identities (
    provider   TEXT NOT NULL CHECK (provider IN ('google', 'github')),
    subject    TEXT NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    -- The verified email the provider gave when the identity was linked.
    email      TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (provider, subject)
);
CREATE UNIQUE INDEX provider_identities_user ON provider_identities (user_id, provider);

-- Sign-ins started at a provider and not yet back: the SHA-256 of the
-- `state` (the browser holds the state itself in a short-lived HttpOnly
-- cookie), the OpenID nonce and the PKCE verifier. A callback takes its
-- row by deleting it, so a state works once; rows live ten minutes.
CREATE TABLE provider_logins (
    state_hash    TEXT PRIMARY KEY CHECK (length(state_hash) = 64),
    provider      TEXT NOT NULL,
    nonce         TEXT NOT NULL,
    pkce_verifier TEXT NOT NULL,
    -- The signed-in user who asked to link this provider, if any.
    link_user_id  TEXT REFERENCES users (id) ON DELETE CASCADE,
    -- Where to go after: `checkout:<plan>:<interval>`, or NULL (the account).
    then_go       TEXT,
    created_at    INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL
);
CREATE INDEX provider_logins_expiry ON provider_logins (expires_at);

-- One-time codes handing a browser sign-in to the CLI (`coditect login`):
-- the SHA-256 of the code, the user, the PKCE challenge of the CLI and its
-- loopback redirect URI. Used once (deleted as read), two minutes.
CREATE TABLE cli_codes (
    code_hash      TEXT PRIMARY KEY CHECK (length(code_hash) = 64),
    user_id        TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    code_challenge TEXT NOT NULL,
    redirect_uri   TEXT NOT NULL,
    created_at     INTEGER NOT NULL,
    expires_at     INTEGER NOT NULL
);
CREATE INDEX cli_codes_expiry ON cli_codes (expires_at);

-- Device authorization (RFC 8628, `coditect login --device`): the SHA-256
-- of the device code the CLI polls with, the user code a person approves
-- at /device, the user once approved. Polled no faster than
-- interval_seconds (last_poll_at); taken (deleted) by the poll that finds
-- it approved; ten minutes.
CREATE TABLE device_codes (
    device_code_hash TEXT PRIMARY KEY CHECK (length(device_code_hash) = 64),
    user_code        TEXT NOT NULL UNIQUE,
    user_id          TEXT REFERENCES users (id) ON DELETE CASCADE,
    interval_seconds INTEGER NOT NULL,
    last_poll_at     INTEGER,
    created_at       INTEGER NOT NULL,
    expires_at       INTEGER NOT NULL
);
CREATE INDEX device_codes_expiry ON device_codes (expires_at);
