-- Schema 1: the pilot plan's tables (organizations, users, licenses,
-- activations, subscriptions) in SQLite terms, plus server-side sessions.
-- Times are Unix seconds (INTEGER); ids are UUID text.

CREATE TABLE organizations (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    stripe_customer_id TEXT UNIQUE,
    created_at         INTEGER NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL UNIQUE COLLATE NOCASE CHECK (length(email) BETWEEN 3 AND 254),
    password_hash   TEXT NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    role            TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'member')),
    created_at      INTEGER NOT NULL
);
CREATE INDEX users_organization ON users (organization_id);

-- A login creates a session; the JWT names it, and logout ends it here, so a
-- stolen token is dead after logout even before it expires.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    revoked_at INTEGER
);
CREATE INDEX sessions_user ON sessions (user_id);

-- License keys are stored as SHA-256 hashes; key_hint (the last group) helps
-- people tell their licenses apart without revealing the key.
CREATE TABLE licenses (
    id                     TEXT PRIMARY KEY,
    key_hash               TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),
    key_hint               TEXT NOT NULL,
    organization_id        TEXT REFERENCES organizations (id),
    email                  TEXT NOT NULL,
    tier                   TEXT NOT NULL,
    status                 TEXT NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'suspended', 'revoked', 'canceled', 'expired')),
    expires_at             INTEGER NOT NULL,
    max_activations        INTEGER NOT NULL CHECK (max_activations >= 0),
    max_projects           INTEGER CHECK (max_projects IS NULL OR max_projects >= 0), -- NULL: unlimited
    ai_requests            INTEGER NOT NULL CHECK (ai_requests >= 0),
    stripe_subscription_id TEXT UNIQUE,
    created_at             INTEGER NOT NULL,
    updated_at             INTEGER NOT NULL,
    revoked_at             INTEGER,
    revoked_reason         TEXT
);
CREATE INDEX licenses_organization ON licenses (organization_id);

CREATE TABLE activations (
    id                TEXT PRIMARY KEY,
    license_id        TEXT NOT NULL REFERENCES licenses (id),
    hardware_id       TEXT NOT NULL CHECK (length(hardware_id) = 64),
    machine_name      TEXT,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    activated_at      INTEGER NOT NULL,
    last_validated_at INTEGER NOT NULL,
    deactivated_at    INTEGER,
    UNIQUE (license_id, hardware_id)
);

CREATE TABLE subscriptions (
    id                     TEXT PRIMARY KEY,
    organization_id        TEXT NOT NULL REFERENCES organizations (id),
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    stripe_customer_id     TEXT NOT NULL,
    status                 TEXT NOT NULL,
    price_id               TEXT,
    current_period_end     INTEGER,
    cancel_at_period_end   INTEGER NOT NULL DEFAULT 0,
    updated_at             INTEGER NOT NULL
);
