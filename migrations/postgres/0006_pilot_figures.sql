-- Schema 6 on PostgreSQL: the invoices Stripe tried to collect and each
-- state a subscription went through, for the pilot's figures; see
-- migrations/sqlite/0008_pilot_figures.sql.
CREATE TABLE invoices (
    stripe_invoice_id      TEXT PRIMARY KEY,
    stripe_subscription_id TEXT NOT NULL,
    amount_minor           BIGINT,
    currency               TEXT,
    first_attempt_at       BIGINT NOT NULL,
    failed_attempts        BIGINT NOT NULL DEFAULT 0,
    paid_at                BIGINT
);
CREATE INDEX invoices_first_attempt ON invoices (first_attempt_at);

CREATE TABLE subscription_history (
    seq                    BIGSERIAL PRIMARY KEY,
    stripe_subscription_id TEXT NOT NULL,
    at                     BIGINT NOT NULL,
    status                 TEXT NOT NULL,
    price_id               TEXT,
    quantity               BIGINT NOT NULL
);
CREATE INDEX subscription_history_at ON subscription_history (at);
INSERT INTO subscription_history (stripe_subscription_id, at, status, price_id, quantity)
    SELECT stripe_subscription_id, updated_at, status, price_id, quantity FROM subscriptions ORDER BY updated_at;
