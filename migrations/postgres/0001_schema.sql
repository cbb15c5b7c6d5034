-- Schema 1 on PostgreSQL: the same tables as migrations/sqlite/0001..0003,
-- written for PostgreSQL. Times are Unix seconds (BIGINT); ids are UUID
-- text; counts are BIGINT (the issuer reads them as unsigned integers).
-- Emails compare without case, as SQLite's COLLATE NOCASE does: the
-- unique indexes are on lower(email) and every lookup lowers both sides.

CREATE TABLE organizations (
    id                 TEXT PRIMARY KEY,
    name               TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 255),
    stripe_customer_id TEXT UNIQUE,
    created_at         BIGINT NOT NULL
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    email           TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254),
    password_hash   TEXT NOT NULL,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    role            TEXT NOT NULL DEFAULT 'owner' CHECK (role IN ('owner', 'admin', 'member')),
    created_at      BIGINT NOT NULL
);
CREATE UNIQUE INDEX users_email ON users (lower(email));
CREATE INDEX users_organization ON users (organization_id);

-- A login creates a session; the JWT names it, and logout ends it here.
CREATE TABLE sessions (
    id         TEXT PRIMARY KEY,
    user_id    TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT
);
CREATE INDEX sessions_user ON sessions (user_id);

-- License keys are stored as SHA-256 hashes; key_hint is the last group.
CREATE TABLE licenses (
    id                     TEXT PRIMARY KEY,
    key_hash               TEXT NOT NULL UNIQUE CHECK (length(key_hash) = 64),
    key_hint               TEXT NOT NULL,
    organization_id        TEXT REFERENCES organizations (id),
    email                  TEXT NOT NULL,
    tier                   TEXT NOT NULL,
    status                 TEXT NOT NULL DEFAULT 'active'
                           CHECK (status IN ('active', 'suspended', 'revoked', 'canceled', 'expired')),
    expires_at             BIGINT NOT NULL,
    max_activations        BIGINT NOT NULL CHECK (max_activations >= 0),
    max_projects           BIGINT CHECK (max_projects IS NULL OR max_projects >= 0), -- NULL: unlimited
    ai_requests            BIGINT NOT NULL CHECK (ai_requests >= 0),
    stripe_subscription_id TEXT UNIQUE,
    created_at             BIGINT NOT NULL,
    updated_at             BIGINT NOT NULL,
    revoked_at             BIGINT,
    revoked_reason         TEXT
);
CREATE INDEX licenses_organization ON licenses (organization_id);

CREATE TABLE activations (
    id                TEXT PRIMARY KEY,
    license_id        TEXT NOT NULL REFERENCES licenses (id),
    hardware_id       TEXT NOT NULL CHECK (length(hardware_id) = 64),
    machine_name      TEXT,
    status            TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'deactivated')),
    activated_at      BIGINT NOT NULL,
    last_validated_at BIGINT NOT NULL,
    deactivated_at    BIGINT,
    UNIQUE (license_id, hardware_id)
);

-- state_at: Stripe's `created` of the newest event applied to the status
-- fields; an older event never overwrites them.
CREATE TABLE subscriptions (
    id                     TEXT PRIMARY KEY,
    organization_id        TEXT NOT NULL REFERENCES organizations (id),
    stripe_subscription_id TEXT NOT NULL UNIQUE,
    stripe_customer_id     TEXT NOT NULL,
    status                 TEXT NOT NULL,
    price_id               TEXT,
    current_period_end     BIGINT,
    cancel_at_period_end   BOOLEAN NOT NULL DEFAULT FALSE,
    updated_at             BIGINT NOT NULL,
    state_at               BIGINT NOT NULL DEFAULT 0,
    quantity               BIGINT NOT NULL DEFAULT 1 CHECK (quantity >= 1),
    past_due_since         BIGINT,
    ended_at               BIGINT
);
CREATE INDEX subscriptions_organization ON subscriptions (organization_id);

-- One row per security-relevant event; never a password, key, token or
-- secret.
CREATE TABLE audit_log (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at           BIGINT NOT NULL,
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

-- Failed sign-ins per email (lowered), known or not.
CREATE TABLE login_throttle (
    email        TEXT PRIMARY KEY,
    failures     BIGINT NOT NULL DEFAULT 0,
    locked_until BIGINT,
    updated_at   BIGINT NOT NULL
);

-- Every Stripe event handled, by id, written in the same transaction as
-- the event's effect.
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    created      BIGINT NOT NULL,
    processed_at BIGINT NOT NULL,
    outcome      TEXT NOT NULL
);

-- A Checkout Session we created (see migrations/sqlite/0003_billing.sql).
CREATE TABLE checkouts (
    id               TEXT PRIMARY KEY,
    organization_id  TEXT NOT NULL REFERENCES organizations (id),
    user_id          TEXT NOT NULL REFERENCES users (id),
    plan             TEXT NOT NULL,
    billing_interval TEXT NOT NULL CHECK (billing_interval IN ('month', 'year')),
    browser_hash     TEXT,
    license_id       TEXT REFERENCES licenses (id),
    reveal_key       TEXT,
    revealed_at      BIGINT,
    created_at       BIGINT NOT NULL,
    completed_at     BIGINT,
    expired_at       BIGINT
);
CREATE INDEX checkouts_organization ON checkouts (organization_id);

-- The mail outbox; the body (which may carry a license key) is wiped once
-- the mail is sent.
CREATE TABLE email_outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT,
    created_at      BIGINT NOT NULL,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    sent_at         BIGINT,
    last_error      TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE sent_at IS NULL;
