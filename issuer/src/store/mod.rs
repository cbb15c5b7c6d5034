//! Storage: the only part of the issuer that knows SQL.
//!
//! [`Store`] is the interface the use cases (`app`) call, one trait per
//! aggregate. Each method is a whole operation with its own transaction:
//! the invariants (a license never has more active seats than it allows; a
//! Stripe event takes effect once; a mail is queued with the change that
//! needs it and claimed by one sender at a time) hold inside these methods,
//! not in their callers. Errors come back as domain errors
//! ([`StorageError`] for the database's own failures); no database type
//! leaves this module.
//!
//! Backends: [`sqlite`] (embedded, one process) and [`postgres`] (any
//! number of processes on one server). Every backend passes the same
//! conformance tests (`store/conformance.rs`).

pub mod postgres;
pub mod sqlite;

#[cfg(test)]
pub(crate) mod conformance;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use verifier::HardwareId;

use crate::domain::StorageError;
use crate::domain::account::{AccountError, LinkPurpose, SignInRecord, User};
use crate::domain::audit::Event;
use crate::domain::billing::{
    ApplyError, BillingRules, CheckoutRecord, Outcome, Reveal, StripeEvent,
};
use crate::domain::license::{
    Activation, Freed, Grant, License, LicenseError, NewLicense, Releaser, Seat,
};
use crate::domain::license_key::{KeyPepper, LicenseKey};
use crate::domain::mail::{DueMail, Failure, Mail, Next, OutboxBacklog, OutboxEntry};
use crate::domain::provider::{CliCode, DeviceCode, DevicePoll, ProviderLogin};
use crate::domain::rate_limit::{Gcra, GcraOutcome};
use crate::domain::stats::PilotFacts;

/// The handle every part of the server holds.
pub type SharedStore = Arc<dyn Store>;

/// Why a database could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OpenError {
    #[error(
        "the database at {location} has schema version {found}, newer than this build knows ({known}); run a newer coditect-issuer"
    )]
    NewerSchema {
        location: String,
        found: u32,
        known: u32,
    },
    #[error("cannot open the database at {location}: {reason}")]
    Open { location: String, reason: String },
    #[error("migration {name} failed: {reason}")]
    Migration { name: String, reason: String },
    #[error(
        "the database at {location} has schema version {found}, this build needs {needed}; run `coditect-issuer migrate` first (in production the server never migrates on its own)"
    )]
    NotMigrated {
        location: String,
        found: u32,
        needed: u32,
    },
}

/// Whether opening a database may change its schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Migrations {
    /// Apply pending migrations (development, and `coditect-issuer migrate`).
    Apply,
    /// Only check: a database behind this build is refused (a production
    /// server; migrations run as their own step, before a new version
    /// takes traffic).
    Require,
}

/// Opens (creating it if needed) the SQLite database at `path` and brings
/// its schema up to date. License keys are stored and looked up by their
/// hash under `pepper` (stored hashes from before the pepper are
/// converted as it opens).
pub fn open_sqlite(path: &std::path::Path, pepper: KeyPepper) -> Result<SharedStore, OpenError> {
    Ok(Arc::new(sqlite::SqliteStore::open(path, pepper)?))
}

/// Connects to the PostgreSQL database at `url` and brings its schema up
/// to date (under an advisory lock: several processes may start at once),
/// or with [`Migrations::Require`] only checks that it is. License keys as
/// with [`open_sqlite`].
pub async fn open_postgres(
    url: &postgres::PgUrl,
    migrations: Migrations,
    pepper: KeyPepper,
) -> Result<SharedStore, OpenError> {
    Ok(Arc::new(
        postgres::PgStore::open(url, migrations, pepper).await?,
    ))
}

/// The pepper the storage tests use.
#[cfg(test)]
pub(crate) fn test_pepper() -> KeyPepper {
    KeyPepper::new(b"the storage tests' pepper, 32 bytes or more")
}

/// All of the issuer's storage.
#[async_trait]
pub trait Store:
    Accounts
    + Identities
    + Licenses
    + Billing
    + Outbox
    + AuditTrail
    + RateCounters
    + Send
    + Sync
    + 'static
{
    /// Whether the database answers (for `/readyz`).
    async fn ping(&self) -> Result<(), StorageError>;
    /// Whether several issuer processes may serve from this database at
    /// once (PostgreSQL). What must hold across them, the rate limits
    /// included, is then kept in the database rather than in a process.
    fn is_shared(&self) -> bool;
    /// The schema version the database is at.
    async fn schema_version(&self) -> Result<u32, StorageError>;
    /// Where the data is, for logs and admin output (never a password).
    fn location(&self) -> String;
    /// The connection pool's state now (for the metrics).
    fn pool_status(&self) -> PoolStatus;
}

/// A connection pool's state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStatus {
    /// Connections lent out now.
    pub in_use: u32,
    /// Connections open and free.
    pub idle: u32,
    /// The most the pool opens.
    pub max: u32,
    /// Callers waiting for a connection (PostgreSQL; 0 on SQLite, whose
    /// pool does not tell).
    pub waiting: u32,
}

/// Database errors of this process since it started, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueryErrors {
    /// Outages: busy or locked (SQLite), lost or refused connections, no
    /// connection free in time.
    pub unavailable: u64,
    /// Every other failure of a statement.
    pub failed: u64,
}

static UNAVAILABLE_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static FAILED_ERRORS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Counts a database error as it becomes a [`StorageError`] (both
/// backends' conversions call this), for the metrics.
pub(crate) fn counted(e: StorageError) -> StorageError {
    let counter = match &e {
        StorageError::Unavailable(_) => &UNAVAILABLE_ERRORS,
        StorageError::Failed(_) => &FAILED_ERRORS,
    };
    counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    e
}

/// The database errors counted so far in this process.
pub fn query_errors() -> QueryErrors {
    QueryErrors {
        unavailable: UNAVAILABLE_ERRORS.load(std::sync::atomic::Ordering::Relaxed),
        failed: FAILED_ERRORS.load(std::sync::atomic::Ordering::Relaxed),
    }
}

/// Organizations, users, failed sign-ins and login sessions.
#[async_trait]
pub trait Accounts {
    /// Creates an organization and its first user (role `owner`), with an
    /// unverified email. `pilot_limit` caps the organizations with a
    /// completed checkout (the pilot's places; unpaid signups take none):
    /// `SignupFull` once that many have paid. Counted and inserted under
    /// one lock (`BEGIN IMMEDIATE`; an advisory lock on PostgreSQL).
    async fn signup(
        &self,
        email: &str,
        password_hash: &str,
        company_name: &str,
        pilot_limit: Option<u32>,
        now: i64,
    ) -> Result<User, AccountError>;
    /// Creates an organization with no users (the operator's licenses);
    /// returns its id.
    async fn create_organization(&self, name: &str, now: i64) -> Result<String, StorageError>;
    /// How many users there are.
    async fn user_count(&self) -> Result<u32, StorageError>;
    /// How many organizations have completed a checkout: the pilot's
    /// places taken (by organizations other than `except`, if given).
    async fn paid_organization_count(&self, except: Option<&str>) -> Result<u32, StorageError>;
    /// For a sign-in at `now` from `client` (a salted hash of its
    /// address): the failed sign-ins counted for this email from this
    /// client and from all, and its user with the password hash (if it has
    /// an account).
    async fn sign_in_lookup(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(SignInRecord, Option<(User, String)>), StorageError>;
    /// Counts a failed sign-in for `email` (known or not) from `client`
    /// and from all clients, atomically (also across processes); failures
    /// older than `FAILURE_MEMORY_SECONDS` are forgotten first. Returns
    /// the counts after this one.
    async fn record_failed_sign_in(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<SignInRecord, StorageError>;
    /// After a successful sign-in: forgets this client's failures for the
    /// email and remembers that it signed in at `now`.
    async fn clear_failed_sign_ins(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(), StorageError>;
    /// If `email` has an account: stores a link token (its hash) for it
    /// and queues `mail` (which carries the link), in one transaction.
    /// Returns whether it did; an unknown email changes nothing.
    async fn issue_account_link(
        &self,
        email: &str,
        purpose: LinkPurpose,
        token_hash: &str,
        expires_at: i64,
        mail: &Mail,
        now: i64,
    ) -> Result<bool, StorageError>;
    /// Uses an email-verification link (once, unexpired, whatever the
    /// process): the account's email is verified. `None`: no such link.
    async fn verify_email(&self, token_hash: &str, now: i64) -> Result<Option<User>, StorageError>;
    /// Uses a password-reset link (once, unexpired): the new password hash,
    /// the email verified (the link proved the mailbox), every session of
    /// the user revoked, every other link of it used up, and the failed
    /// sign-ins of the email forgotten, in one transaction. `None`: no
    /// such link, and nothing changed.
    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<User>, StorageError>;
    /// Deletes accounts whose email is still unverified and that were
    /// created before `created_before`, when their organization never
    /// paid (no completed checkout, license or subscription): the user,
    /// its sessions, links, unpaid checkouts and organization. Only the
    /// account of `email` when given. Returns how many.
    async fn delete_unverified_accounts(
        &self,
        created_before: i64,
        email: Option<&str>,
    ) -> Result<u64, StorageError>;
    /// Starts a session for the user; returns its id.
    async fn create_session(
        &self,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<String, StorageError>;
    /// The user of a live session (not ended, not expired at `now`).
    async fn session_user(&self, session_id: &str, now: i64) -> Result<Option<User>, StorageError>;
    /// Ends a session.
    async fn end_session(&self, session_id: &str, now: i64) -> Result<(), StorageError>;
}

/// Sign-ins with a provider: the identities tied to users and the
/// sign-ins started and not yet back.
#[async_trait]
pub trait Identities {
    /// Keeps a started sign-in (and drops those expired at `now`).
    async fn begin_provider_login(
        &self,
        login: &ProviderLogin,
        now: i64,
    ) -> Result<(), StorageError>;
    /// Takes the started sign-in of `state_hash` once: deleted as it is
    /// read, `None` when unknown, taken already or expired.
    async fn take_provider_login(
        &self,
        state_hash: &str,
        now: i64,
    ) -> Result<Option<ProviderLogin>, StorageError>;
    /// The user an identity of `provider` is tied to.
    async fn identity_user(
        &self,
        provider: &str,
        subject: &str,
    ) -> Result<Option<User>, StorageError>;
    /// The user with this email (any case).
    async fn user_by_email(&self, email: &str) -> Result<Option<User>, StorageError>;
    /// Ties an identity to a user: `false` (nothing changed) when the
    /// identity is tied to someone already or the user has another
    /// identity of this provider.
    async fn link_identity(
        &self,
        user_id: &str,
        provider: &str,
        subject: &str,
        email: &str,
        now: i64,
    ) -> Result<bool, StorageError>;
    /// A new organization and its owner whose email the provider verified
    /// (no usable password), tied to the identity, in one transaction:
    /// `EmailTaken` and `SignupFull` as [`Accounts::signup`], `EmailTaken`
    /// too when the identity is tied already.
    /// Keeps a device authorization (and drops those expired at `now`).
    async fn begin_device(&self, code: &DeviceCode, now: i64) -> Result<(), StorageError>;
    /// Approves the device authorization of `user_code` for `user_id`:
    /// `false` when unknown, expired or approved already.
    async fn approve_device(
        &self,
        user_code: &str,
        user_id: &str,
        now: i64,
    ) -> Result<bool, StorageError>;
    /// One poll of a device code (see [`DevicePoll`]); an approved code is
    /// deleted as it is answered.
    async fn poll_device(
        &self,
        device_code_hash: &str,
        now: i64,
    ) -> Result<DevicePoll, StorageError>;
    /// Keeps a code for the CLI (and drops those expired at `now`).
    async fn issue_cli_code(&self, code: &CliCode, now: i64) -> Result<(), StorageError>;
    /// Takes a CLI code once, with its user: deleted as it is read, `None`
    /// when unknown, used or expired.
    async fn take_cli_code(
        &self,
        code_hash: &str,
        now: i64,
    ) -> Result<Option<(CliCode, User)>, StorageError>;
    #[allow(clippy::too_many_arguments)]
    async fn provider_signup(
        &self,
        email: &str,
        company_name: &str,
        pilot_limit: Option<u32>,
        provider: &str,
        subject: &str,
        now: i64,
    ) -> Result<User, AccountError>;
}

/// Licenses and their seats (activations).
#[async_trait]
pub trait Licenses {
    /// Creates a license; returns it with its key, which exists in plain
    /// text only in this answer.
    async fn create_license(
        &self,
        new: &NewLicense<'_>,
        now: i64,
    ) -> Result<(License, LicenseKey), LicenseError>;
    async fn license(&self, id: &str) -> Result<Option<License>, StorageError>;
    async fn license_by_key(&self, key: &LicenseKey) -> Result<Option<License>, StorageError>;
    /// All licenses (newest first), or an organization's, each with its
    /// activations (active ones first).
    async fn licenses_with_activations(
        &self,
        organization_id: Option<&str>,
    ) -> Result<Vec<(License, Vec<Activation>)>, StorageError>;
    /// The activations of a license, active ones first.
    async fn activations(&self, license_id: &str) -> Result<Vec<Activation>, StorageError>;
    /// Takes a seat for this machine. The same machine again gets its
    /// activation back; a new machine needs a free seat, also when many
    /// ask at once.
    /// `offline_until` marks an air-gapped activation with its token's
    /// expiry (it only ever moves later). A machine beyond the seats after
    /// a downgrade is refused (`domain::license::seat_rank_allowed`).
    async fn activate_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        machine_name: Option<&str>,
        offline_until: Option<i64>,
        now: i64,
    ) -> Result<Grant, LicenseError>;
    /// Renews an active seat on a usable license, within the seats (a
    /// machine beyond them after a downgrade is refused); the last renewal
    /// time moves to `now` (to the minute).
    async fn renew_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        now: i64,
    ) -> Result<Grant, LicenseError>;
    /// Frees a seat under the rules of `domain::license::release`, decided
    /// and written in one transaction with the license locked; a counted
    /// freeing is recorded as a transfer. Freeing a free seat is not an
    /// error and changes nothing.
    async fn free_seat(
        &self,
        by: &Releaser<'_>,
        seat: Seat<'_>,
        now: i64,
    ) -> Result<Freed, LicenseError>;
    /// When the seats of a license freed by its holder after `since` were
    /// freed, oldest first.
    async fn seat_transfers(&self, license_id: &str, since: i64) -> Result<Vec<i64>, StorageError>;
    /// Replaces the key of a license of `organization_id` that is not
    /// revoked by `new_key`, and queues `mail` (which carries it), in one
    /// transaction: from then on the old key finds nothing (its machines
    /// activate again with the new key, on the seats they hold). `NotFound`
    /// for another organization's license, and nothing changes.
    async fn replace_key(
        &self,
        license_id: &str,
        organization_id: &str,
        new_key: &LicenseKey,
        mail: &Mail,
        now: i64,
    ) -> Result<License, LicenseError>;
    /// Revokes a license: renewals are refused from now on.
    async fn revoke_license(
        &self,
        id: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<License, LicenseError>;
}

/// Stripe customers, checkouts, subscriptions and their events.
#[async_trait]
pub trait Billing {
    /// What the pilot's figures are made of for the period from `since`
    /// to `now` (`domain::stats::PilotFacts`), read consistently.
    async fn pilot_facts(&self, since: i64, now: i64) -> Result<PilotFacts, StorageError>;
    /// Whether this Stripe event was applied already.
    async fn stripe_event_seen(&self, event_id: &str) -> Result<bool, StorageError>;
    /// Applies a Stripe event exactly once: its record and its effect
    /// (subscription, license, key mail, audit row) commit together, and a
    /// repeat, also a simultaneous one, is a `Duplicate`. Returns the
    /// outcome and whether a mail was queued.
    async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        rules: &BillingRules,
        now: i64,
    ) -> Result<(Outcome, bool), ApplyError>;
    /// The organization's Stripe customer, if it has one.
    async fn stripe_customer(&self, organization_id: &str) -> Result<Option<String>, StorageError>;
    /// Whether the organization has a subscription that is still paid for.
    async fn has_live_subscription(&self, organization_id: &str) -> Result<bool, StorageError>;
    /// Stores the organization's Stripe customer unless it has one; returns
    /// the one stored (ours, or a simultaneous checkout's).
    async fn set_stripe_customer(
        &self,
        organization_id: &str,
        customer_id: &str,
    ) -> Result<String, StorageError>;
    /// The organization's checkouts started after `since` and neither
    /// completed nor expired.
    async fn open_checkouts(
        &self,
        organization_id: &str,
        since: i64,
    ) -> Result<Vec<String>, StorageError>;
    /// Marks a checkout expired (unless it completed).
    async fn checkout_expired(&self, session_id: &str, now: i64) -> Result<(), StorageError>;
    /// Records a started checkout (again: nothing changes).
    async fn record_checkout(
        &self,
        checkout: &CheckoutRecord,
        now: i64,
    ) -> Result<(), StorageError>;
    /// The key of a completed checkout, for the browser that started it,
    /// once; it is wiped as it is shown.
    async fn reveal_key(
        &self,
        session_id: &str,
        browser_hash: &str,
        now: i64,
    ) -> Result<Reveal, StorageError>;
    /// Wipes keys that waited longer than the reveal window; returns how
    /// many.
    async fn wipe_stale_reveals(&self, now: i64) -> Result<usize, StorageError>;
}

/// The mail outbox.
#[async_trait]
pub trait Outbox {
    /// Queues a mail on its own (mail that belongs to a change is queued
    /// by that change's operation, in its transaction); returns its id.
    async fn enqueue_mail(&self, mail: &Mail, now: i64) -> Result<String, StorageError>;
    /// Takes up to `limit` due unsent mails, oldest first, and moves their
    /// next attempt `CLAIM_SECS` ahead so that no other sender takes them.
    async fn claim_mail(&self, now: i64, limit: usize) -> Result<Vec<DueMail>, StorageError>;
    /// The mail went out: its body (it can hold a key) is wiped.
    async fn mail_sent(&self, id: &str, now: i64) -> Result<(), StorageError>;
    /// Counts a failed attempt and schedules the next one, or gives up.
    /// `None` when the mail is no longer waiting.
    async fn mail_failed(
        &self,
        id: &str,
        now: i64,
        failure: &Failure,
        retry_initial: Duration,
    ) -> Result<Option<Next>, StorageError>;
    /// The newest `limit` mails (only unsent ones if `unsent_only`),
    /// oldest first.
    async fn outbox(&self, unsent_only: bool, limit: u32)
    -> Result<Vec<OutboxEntry>, StorageError>;
    /// Makes an unsent mail due at `now` with a fresh count of attempts;
    /// false if there is no such unsent mail.
    async fn retry_mail(&self, id: &str, now: i64) -> Result<bool, StorageError>;
    /// Gives back claims a stopping sender will not use: those unsent
    /// mails become due at `now` (their attempts unchanged), so another
    /// sender takes them at once instead of after the claim runs out.
    /// Returns how many were given back.
    async fn release_mail(&self, ids: &[String], now: i64) -> Result<usize, StorageError>;
    /// How many mails are unsent (waiting, given up) and when the oldest
    /// of them was queued.
    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StorageError>;
}

/// Rate-limit counters kept in the database, for limits that hold across
/// processes and restarts: one GCRA state (a theoretical arrival time, see
/// `domain::rate_limit`) per bucket. A bucket is a limit's name and a
/// salted hash, never a client address or a license key.
#[async_trait]
pub trait RateCounters {
    /// Counts one request at `now_ms` against `bucket` under `gcra`,
    /// atomically (also across processes): allowed, the bucket's state
    /// moves on; refused, it is left as it was. Returns the outcome and the
    /// bucket's state after it.
    async fn gcra(
        &self,
        bucket: &str,
        gcra: &Gcra,
        now_ms: i64,
    ) -> Result<GcraOutcome, StorageError>;
    /// Deletes up to `limit` buckets whose state is as good as none at
    /// `now_ms` (theoretical arrival time not after it); returns how many.
    async fn prune_rate_counters(&self, now_ms: i64, limit: u32) -> Result<u64, StorageError>;
}

/// The audit log.
#[async_trait]
pub trait AuditTrail {
    /// Appends events in one transaction.
    async fn append_audit(&self, events: &[Event]) -> Result<(), StorageError>;
    /// Reads events, oldest first: the newest `limit` since `since`,
    /// optionally of one kind.
    async fn audit_events(
        &self,
        since: Option<i64>,
        event: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError>;
    /// Deletes up to `limit` events from before `before` (oldest first);
    /// returns how many. Processes pruning at once skip each other's rows.
    async fn prune_audit(&self, before: i64, limit: u32) -> Result<u64, StorageError>;
}
