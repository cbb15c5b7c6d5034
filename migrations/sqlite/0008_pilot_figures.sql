-- Schema 8: what the pilot's figures (`coditect-issuer stats`) are read
-- from besides the licenses, checkouts and activations: the invoices
-- Stripe tried to collect, and each state a subscription went through.

-- One row per Stripe invoice of a subscription, written by the
-- `invoice.paid` and `invoice.payment_failed` webhooks: when the first
-- attempt was heard of, how many attempts failed, and when it was paid.
-- amount_minor is the amount due in the currency's smallest unit.
CREATE TABLE invoices (
    stripe_invoice_id      TEXT PRIMARY KEY,
    stripe_subscription_id TEXT NOT NULL,
    amount_minor           INTEGER,
    currency               TEXT,
    first_attempt_at       INTEGER NOT NULL,
    failed_attempts        INTEGER NOT NULL DEFAULT 0,
    paid_at                INTEGER
);
CREATE INDEX invoices_first_attempt ON invoices (first_attempt_at);

-- The subscription's state after each Stripe event that changed it (at:
-- when the issuer applied it), so the recurring revenue of any past moment
-- can be computed. Subscriptions from before this schema start with their
-- state as it was then.
CREATE TABLE subscription_history (
    seq                    INTEGER PRIMARY KEY,
    stripe_subscription_id TEXT NOT NULL,
    at                     INTEGER NOT NULL,
    status                 TEXT NOT NULL,
    price_id               TEXT,
    quantity               INTEGER NOT NULL
);
CREATE INDEX subscription_history_at ON subscription_history (at);
INSERT INTO subscription_history (stripe_subscription_id, at, status, price_id, quantity)
    SELECT stripe_subscription_id, updated_at, status, price_id, quantity FROM subscriptions;
