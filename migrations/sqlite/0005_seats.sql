-- Schema 5: seat rules. An activation made air-gapped is marked with the
-- expiry of its token (only the operator frees it before then), and every
-- seat a key holder frees is a transfer, counted per license over a
-- window (domain::license::TRANSFER_WINDOW).
ALTER TABLE activations ADD COLUMN offline_until INTEGER;

CREATE TABLE seat_transfers (
    id            INTEGER PRIMARY KEY,
    license_id    TEXT NOT NULL REFERENCES licenses (id),
    activation_id TEXT NOT NULL REFERENCES activations (id),
    freed_at      INTEGER NOT NULL
);
CREATE INDEX seat_transfers_by_license ON seat_transfers (license_id, freed_at);
