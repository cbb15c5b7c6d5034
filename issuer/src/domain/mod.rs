//! The licensing rules, with no SQL and no HTTP: plans, license keys,
//! licenses and their seats, accounts, subscriptions, mail and audit
//! records, the rate-limit rule, and the signed token a grant becomes.
//!
//! Nothing here reads the clock: every rule that depends on time takes
//! `now` (Unix seconds) as a parameter. Nothing here imports `store`, `app`
//! or `http` (see `docs/ARCHITECTURE.md`; `scripts/check-layers.sh` checks it).

pub mod account;
pub mod audit;
pub mod billing;
pub mod hs256;
pub mod input;
pub mod license;
pub mod license_key;
pub mod mail;
pub mod plans;
pub mod provider;
pub mod rate_limit;
pub mod stats;
pub mod tokens;

/// The database could not do what was asked. Never a refusal by the
/// rules: those have their own error types. The text is for the log only;
/// users see a request id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The database cannot be reached now (pool exhausted, connection
    /// refused); the same request may work later.
    #[error("the database is unavailable: {0}")]
    Unavailable(String),
    /// The database answered with an error.
    #[error("database error: {0}")]
    Failed(String),
}

/// RFC 3339 form of a Unix time, for JSON bodies, mails and pages.
pub fn rfc3339(t: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp(t)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_default()
}
