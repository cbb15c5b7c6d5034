-- Schema 3: paid signup (issue 4). Stripe webhook events processed once,
-- subscription state kept in order, checkouts waiting for their license,
-- and the mail outbox.

-- Every Stripe event handled, by id: a repeat delivery finds its row and
-- changes nothing. The row is written in the same transaction as the
-- event's effect.
CREATE TABLE stripe_events (
    id           TEXT PRIMARY KEY,
    type         TEXT NOT NULL,
    created      INTEGER NOT NULL,
    processed_at INTEGER NOT NULL,
    outcome      TEXT NOT NULL
);

-- state_at: Stripe's `created` of the newest event applied to the status
-- fields; an older event never overwrites them.
ALTER TABLE subscriptions ADD COLUMN state_at INTEGER NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN quantity INTEGER NOT NULL DEFAULT 1 CHECK (quantity >= 1);
ALTER TABLE subscriptions ADD COLUMN past_due_since INTEGER;
ALTER TABLE subscriptions ADD COLUMN ended_at INTEGER;
CREATE INDEX subscriptions_organization ON subscriptions (organization_id);

-- A Checkout Session we created. browser_hash is the SHA-256 of the cookie
-- of the browser that started it (web signup), so only that browser sees
-- the key on the success page; reveal_key holds the key until it has been
-- shown there once, or until it is stale (then it is wiped).
CREATE TABLE checkouts (
    id              TEXT PRIMARY KEY,
    organization_id TEXT NOT NULL REFERENCES organizations (id),
    user_id         TEXT NOT NULL REFERENCES users (id),
    plan            TEXT NOT NULL,
    billing_interval TEXT NOT NULL CHECK (billing_interval IN ('month', 'year')),
    browser_hash    TEXT,
    license_id      TEXT REFERENCES licenses (id),
    reveal_key      TEXT,
    revealed_at     INTEGER,
    created_at      INTEGER NOT NULL,
    completed_at    INTEGER,
    -- Expired by the issuer when the organization started another one, so
    -- that one subscription cannot be paid for twice.
    expired_at      INTEGER
);
CREATE INDEX checkouts_organization ON checkouts (organization_id);

-- Mail is queued here in the transaction that makes it necessary, then
-- sent; a failed send is retried later. The body (which may carry a license
-- key) is wiped once the mail is sent.
CREATE TABLE email_outbox (
    id              TEXT PRIMARY KEY,
    kind            TEXT NOT NULL,
    recipient       TEXT NOT NULL,
    subject         TEXT NOT NULL,
    body            TEXT,
    created_at      INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER NOT NULL,
    sent_at         INTEGER,
    last_error      TEXT
);
CREATE INDEX email_outbox_due ON email_outbox (next_attempt_at) WHERE sent_at IS NULL;
