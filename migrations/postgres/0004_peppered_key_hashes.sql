-- License keys are stored as hex(HMAC-SHA256(pepper, SHA-256(key))) under
-- LICENSE_KEY_PEPPER (domain/license_key.rs). key_hash_version says which
-- scheme a row's key_hash is of: 1, hex(SHA-256(key)), from before the
-- pepper; 2, peppered. Existing rows, and rows an older issuer still writes
-- during an upgrade (the default), are 1; the issuer converts them in place
-- under its pepper whenever it opens the database (it needs the pepper, so
-- this static file cannot), and looks keys up by the peppered hash only.
ALTER TABLE licenses ADD COLUMN key_hash_version SMALLINT NOT NULL DEFAULT 1
    CHECK (key_hash_version IN (1, 2));
CREATE INDEX licenses_legacy_key_hash ON licenses (id) WHERE key_hash_version = 1;
