//! Long file: every trait of the storage interface implemented for SQLite
//! in one place, each method the same short hop; split by trait it would
//! repeat the plumbing in each file.
//!
//! [`SqliteStore`]: the storage interface over one SQLite file. Each
//! method is one hop to a blocking thread running the SQL of its aggregate
//! (`accounts.rs`, `licenses.rs`, `billing/`, `checkouts.rs`, `outbox.rs`,
//! `audit.rs`; `rate_limits.rs` implements its trait itself); methods that
//! write wait for the writer's turn.

use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use verifier::HardwareId;

use super::{Db, accounts, audit, billing, checkouts, licenses, outbox, stats};
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
use crate::domain::mail::{DueMail, Failure, Mail, Next, OutboxEntry};
use crate::domain::stats::PilotFacts;
use crate::store::{Accounts, AuditTrail, Billing, Licenses, OpenError, Outbox, Store};

/// The embedded backend.
#[derive(Clone)]
pub struct SqliteStore {
    pub(super) db: Db,
    /// Keys the stored hashes of license keys.
    pepper: KeyPepper,
}

impl SqliteStore {
    /// Opens (creating if needed) the database, applies pending
    /// migrations, and converts license-key hashes of the scheme before
    /// the pepper to the peppered one under `pepper`.
    pub fn open(path: &Path, pepper: KeyPepper) -> Result<Self, OpenError> {
        let db = Db::open(path)?;
        let upgraded = db
            .conn()
            .map_err(StorageError::from)
            .and_then(|mut c| {
                licenses::upgrade_legacy_key_hashes(&mut c, &pepper).map_err(StorageError::from)
            })
            .map_err(|e| OpenError::Migration {
                name: "(peppering license-key hashes)".into(),
                reason: e.to_string(),
            })?;
        if upgraded > 0 {
            tracing::info!(
                licenses = upgraded,
                "converted license-key hashes to the peppered scheme"
            );
        }
        Ok(SqliteStore { db, pepper })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.db.path
    }

    /// Copies the database to `out` with SQLite's online backup API: a
    /// consistent copy while the server keeps serving (a write during the
    /// copy makes it start over, so the copy is of one moment). The copy
    /// is written beside `out` and renamed into place, readable only by
    /// its owner; an existing `out` is refused.
    pub async fn backup_to(&self, out: &Path) -> Result<(), super::BackupError> {
        let out = out.to_path_buf();
        self.db.run(move |conn| super::backup(conn, &out)).await
    }
}

/// A storage error of an operation that answers with a domain error.
fn storage<E: Into<StorageError>>(e: E) -> StorageError {
    e.into()
}

#[async_trait]
impl Store for SqliteStore {
    async fn ping(&self) -> Result<(), StorageError> {
        self.db
            .run(|c| {
                c.query_row("SELECT 1", [], |r| r.get::<_, i64>(0))
                    .map(|_| ())
                    .map_err(storage)
            })
            .await
    }

    async fn schema_version(&self) -> Result<u32, StorageError> {
        self.db
            .run(|c| super::schema_version(c).map_err(storage))
            .await
    }

    fn is_shared(&self) -> bool {
        false
    }

    fn location(&self) -> String {
        self.db.path.display().to_string()
    }
}

#[async_trait]
impl Accounts for SqliteStore {
    async fn signup(
        &self,
        email: &str,
        password_hash: &str,
        company_name: &str,
        pilot_limit: Option<u32>,
        now: i64,
    ) -> Result<User, AccountError> {
        let (email, hash, company) = (
            email.to_owned(),
            password_hash.to_owned(),
            company_name.to_owned(),
        );
        self.db
            .run_write(move |c| accounts::signup(c, &email, &hash, &company, pilot_limit, now))
            .await
    }

    async fn create_organization(&self, name: &str, now: i64) -> Result<String, StorageError> {
        let name = name.to_owned();
        self.db
            .run_write(move |c| accounts::create_organization(c, &name, now).map_err(storage))
            .await
    }

    async fn user_count(&self) -> Result<u32, StorageError> {
        self.db
            .run(|c| {
                c.query_row("SELECT count(*) FROM users", [], |r| r.get(0))
                    .map_err(storage)
            })
            .await
    }

    async fn paid_organization_count(&self, except: Option<&str>) -> Result<u32, StorageError> {
        let except = except.unwrap_or_default().to_owned();
        self.db
            .run(move |c| accounts::paid_organizations(c, &except).map_err(storage))
            .await
    }

    async fn sign_in_lookup(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(SignInRecord, Option<(User, String)>), StorageError> {
        let _ = now;
        let (email, client) = (email.to_owned(), client.to_owned());
        self.db
            .run(move |c| {
                let record = accounts::sign_in_record(c, &email, &client)?;
                let found = accounts::find_by_email(c, &email)?;
                Ok::<_, AccountError>((record, found))
            })
            .await
            .map_err(account_storage)
    }

    async fn record_failed_sign_in(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<SignInRecord, StorageError> {
        let (email, client) = (email.to_owned(), client.to_owned());
        self.db
            .run_write(move |c| accounts::record_failure(c, &email, &client, now))
            .await
            .map_err(account_storage)
    }

    async fn clear_failed_sign_ins(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let (email, client) = (email.to_owned(), client.to_owned());
        self.db
            .run_write(move |c| accounts::clear_failures(c, &email, &client, now))
            .await
            .map_err(account_storage)
    }

    async fn issue_account_link(
        &self,
        email: &str,
        purpose: LinkPurpose,
        token_hash: &str,
        expires_at: i64,
        mail: &Mail,
        now: i64,
    ) -> Result<bool, StorageError> {
        let (email, hash, mail) = (email.to_owned(), token_hash.to_owned(), mail.clone());
        self.db
            .run_write(move |c| {
                accounts::issue_link(c, &email, purpose, &hash, expires_at, &mail, now)
            })
            .await
            .map_err(account_storage)
    }

    async fn verify_email(&self, token_hash: &str, now: i64) -> Result<Option<User>, StorageError> {
        let hash = token_hash.to_owned();
        self.db
            .run_write(move |c| accounts::verify_email(c, &hash, now))
            .await
            .map_err(account_storage)
    }

    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<User>, StorageError> {
        let (hash, password) = (token_hash.to_owned(), password_hash.to_owned());
        self.db
            .run_write(move |c| accounts::reset_password(c, &hash, &password, now))
            .await
            .map_err(account_storage)
    }

    async fn delete_unverified_accounts(
        &self,
        created_before: i64,
        email: Option<&str>,
    ) -> Result<u64, StorageError> {
        let email = email.map(str::to_owned);
        self.db
            .run_write(move |c| accounts::delete_unverified(c, created_before, email.as_deref()))
            .await
            .map_err(account_storage)
    }

    async fn create_session(
        &self,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<String, StorageError> {
        let user_id = user_id.to_owned();
        self.db
            .run_write(move |c| accounts::create_session(c, &user_id, now, expires_at))
            .await
            .map_err(account_storage)
    }

    async fn session_user(&self, session_id: &str, now: i64) -> Result<Option<User>, StorageError> {
        let sid = session_id.to_owned();
        self.db
            .run(move |c| accounts::session_user(c, &sid, now))
            .await
            .map_err(account_storage)
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        let sid = session_id.to_owned();
        self.db
            .run_write(move |c| accounts::end_session(c, &sid, now))
            .await
            .map_err(account_storage)
    }
}

/// The account functions answer only storage failures where the trait
/// promises a [`StorageError`]; anything else would be a bug, reported as
/// a failure.
fn account_storage(e: AccountError) -> StorageError {
    match e {
        AccountError::Storage(s) => s,
        other => StorageError::Failed(other.to_string()),
    }
}

#[async_trait]
impl Licenses for SqliteStore {
    async fn create_license(
        &self,
        new: &NewLicense<'_>,
        now: i64,
    ) -> Result<(License, LicenseKey), LicenseError> {
        let email = new.email.to_owned();
        let plan = new.plan;
        let (expires_at, max_devices) = (new.expires_at, new.max_devices);
        let org = new.organization_id.map(str::to_owned);
        let sub = new.stripe_subscription_id.map(str::to_owned);
        let pepper = self.pepper.clone();
        self.db
            .run_write(move |c| {
                licenses::create(
                    c,
                    &NewLicense {
                        email: &email,
                        plan,
                        expires_at,
                        max_devices,
                        organization_id: org.as_deref(),
                        stripe_subscription_id: sub.as_deref(),
                    },
                    &pepper,
                    now,
                )
            })
            .await
    }

    async fn license(&self, id: &str) -> Result<Option<License>, StorageError> {
        let id = id.to_owned();
        self.db
            .run(move |c| licenses::get(c, &id).map_err(storage))
            .await
    }

    async fn license_by_key(&self, key: &LicenseKey) -> Result<Option<License>, StorageError> {
        let key = key.hash(&self.pepper);
        self.db
            .run(move |c| licenses::find_by_key(c, &key).map_err(storage))
            .await
    }

    async fn licenses_with_activations(
        &self,
        organization_id: Option<&str>,
    ) -> Result<Vec<(License, Vec<Activation>)>, StorageError> {
        let org = organization_id.map(str::to_owned);
        self.db
            .run(move |c| licenses::list_with_activations(c, org.as_deref()).map_err(storage))
            .await
    }

    async fn activations(&self, license_id: &str) -> Result<Vec<Activation>, StorageError> {
        let id = license_id.to_owned();
        self.db
            .run(move |c| licenses::activations(c, &id).map_err(storage))
            .await
    }

    async fn activate_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        machine_name: Option<&str>,
        offline_until: Option<i64>,
        now: i64,
    ) -> Result<Grant, LicenseError> {
        let (key, hw, name) = (
            key.hash(&self.pepper),
            *hardware_id,
            machine_name.map(str::to_owned),
        );
        self.db
            .run_write(move |c| {
                licenses::activate(c, &key, &hw, name.as_deref(), offline_until, now)
            })
            .await
    }

    async fn renew_seat(
        &self,
        key: &LicenseKey,
        hardware_id: &HardwareId,
        now: i64,
    ) -> Result<Grant, LicenseError> {
        let (key, hw) = (key.hash(&self.pepper), *hardware_id);
        self.db
            .run(move |c| licenses::validate(c, &key, &hw, now))
            .await
    }

    async fn free_seat(
        &self,
        by: &Releaser<'_>,
        seat: Seat<'_>,
        now: i64,
    ) -> Result<Freed, LicenseError> {
        // The connection runs on its own thread: owned copies go there.
        enum OwnedSeat {
            Machine(HardwareId),
            Activation(String),
        }
        enum OwnedBy {
            Holder(LicenseKey, HardwareId, Option<String>),
            Operator(String),
            Organization(String, String),
        }
        let seat = match seat {
            Seat::Machine(hw) => OwnedSeat::Machine(*hw),
            Seat::Activation(id) => OwnedSeat::Activation(id.to_owned()),
        };
        let key_hash = match by {
            Releaser::Holder { key, .. } => Some(key.hash(&self.pepper)),
            Releaser::Operator { .. } | Releaser::Organization { .. } => None,
        };
        let by = match by {
            Releaser::Holder {
                key,
                machine,
                organization,
            } => OwnedBy::Holder((*key).clone(), **machine, organization.map(str::to_owned)),
            Releaser::Operator { license_id } => OwnedBy::Operator((*license_id).to_owned()),
            Releaser::Organization {
                license_id,
                organization,
            } => OwnedBy::Organization((*license_id).to_owned(), (*organization).to_owned()),
        };
        self.db
            .run_write(move |c| {
                let seat = match &seat {
                    OwnedSeat::Machine(hw) => Seat::Machine(hw),
                    OwnedSeat::Activation(id) => Seat::Activation(id),
                };
                let by = match &by {
                    OwnedBy::Holder(key, machine, organization) => Releaser::Holder {
                        key,
                        machine,
                        organization: organization.as_deref(),
                    },
                    OwnedBy::Operator(license_id) => Releaser::Operator { license_id },
                    OwnedBy::Organization(license_id, organization) => Releaser::Organization {
                        license_id,
                        organization,
                    },
                };
                licenses::deactivate(c, key_hash.as_ref(), &by, seat, now)
            })
            .await
    }

    async fn seat_transfers(&self, license_id: &str, since: i64) -> Result<Vec<i64>, StorageError> {
        let id = license_id.to_owned();
        self.db
            .run(move |c| licenses::transfers_since(c, &id, since).map_err(storage))
            .await
    }

    async fn replace_key(
        &self,
        license_id: &str,
        organization_id: &str,
        new_key: &LicenseKey,
        mail: &Mail,
        now: i64,
    ) -> Result<License, LicenseError> {
        let (id, org) = (license_id.to_owned(), organization_id.to_owned());
        let (key, mail, pepper) = (new_key.clone(), mail.clone(), self.pepper.clone());
        self.db
            .run_write(move |c| licenses::replace_key(c, &pepper, &id, &org, &key, &mail, now))
            .await
    }

    async fn revoke_license(
        &self,
        id: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<License, LicenseError> {
        let (id, reason) = (id.to_owned(), reason.map(str::to_owned));
        self.db
            .run_write(move |c| licenses::revoke(c, &id, reason.as_deref(), now))
            .await
    }
}

#[async_trait]
impl Billing for SqliteStore {
    async fn pilot_facts(&self, since: i64, now: i64) -> Result<PilotFacts, StorageError> {
        self.db
            .run(move |c| stats::facts(c, since, now).map_err(storage))
            .await
    }

    async fn stripe_event_seen(&self, event_id: &str) -> Result<bool, StorageError> {
        let id = event_id.to_owned();
        self.db
            .run(move |c| billing::stripe_event_seen(c, &id).map_err(storage))
            .await
    }

    async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        rules: &BillingRules,
        now: i64,
    ) -> Result<(Outcome, bool), ApplyError> {
        let (event, rules) = (event.clone(), rules.clone());
        let pepper = self.pepper.clone();
        self.db
            .run_write(move |c| billing::apply_event(c, &event, &rules, &pepper, now))
            .await
    }

    async fn stripe_customer(&self, organization_id: &str) -> Result<Option<String>, StorageError> {
        let org = organization_id.to_owned();
        self.db
            .run(move |c| checkouts::customer_of(c, &org).map_err(storage))
            .await
    }

    async fn has_live_subscription(&self, organization_id: &str) -> Result<bool, StorageError> {
        let org = organization_id.to_owned();
        self.db
            .run(move |c| checkouts::has_live_subscription(c, &org).map_err(storage))
            .await
    }

    async fn set_stripe_customer(
        &self,
        organization_id: &str,
        customer_id: &str,
    ) -> Result<String, StorageError> {
        let (org, customer) = (organization_id.to_owned(), customer_id.to_owned());
        self.db
            .run_write(move |c| checkouts::set_customer(c, &org, &customer))
            .await
    }

    async fn open_checkouts(
        &self,
        organization_id: &str,
        since: i64,
    ) -> Result<Vec<String>, StorageError> {
        let org = organization_id.to_owned();
        self.db
            .run(move |c| checkouts::open_checkouts(c, &org, since).map_err(storage))
            .await
    }

    async fn checkout_expired(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        let id = session_id.to_owned();
        self.db
            .run_write(move |c| checkouts::checkout_expired(c, &id, now).map_err(storage))
            .await
    }

    async fn record_checkout(
        &self,
        checkout: &CheckoutRecord,
        now: i64,
    ) -> Result<(), StorageError> {
        let checkout = checkout.clone();
        self.db
            .run_write(move |c| checkouts::record_checkout(c, &checkout, now).map_err(storage))
            .await
    }

    async fn reveal_key(
        &self,
        session_id: &str,
        browser_hash: &str,
        now: i64,
    ) -> Result<Reveal, StorageError> {
        let (id, browser) = (session_id.to_owned(), browser_hash.to_owned());
        self.db
            .run_write(move |c| checkouts::reveal(c, &id, &browser, now))
            .await
    }

    async fn wipe_stale_reveals(&self, now: i64) -> Result<usize, StorageError> {
        self.db
            .run_write(move |c| checkouts::wipe_stale_reveals(c, now).map_err(storage))
            .await
    }
}

#[async_trait]
impl Outbox for SqliteStore {
    async fn enqueue_mail(&self, mail: &Mail, now: i64) -> Result<String, StorageError> {
        let mail = mail.clone();
        self.db
            .run_write(move |c| outbox::enqueue(c, &mail, now).map_err(storage))
            .await
    }

    async fn claim_mail(&self, now: i64, limit: usize) -> Result<Vec<DueMail>, StorageError> {
        self.db
            .run_write(move |c| outbox::claim_due(c, now, limit).map_err(storage))
            .await
    }

    async fn mail_sent(&self, id: &str, now: i64) -> Result<(), StorageError> {
        let id = id.to_owned();
        self.db
            .run_write(move |c| outbox::record_sent(c, &id, now).map_err(storage))
            .await
    }

    async fn mail_failed(
        &self,
        id: &str,
        now: i64,
        failure: &Failure,
        retry_initial: Duration,
    ) -> Result<Option<Next>, StorageError> {
        let (id, failure) = (id.to_owned(), failure.clone());
        self.db
            .run_write(move |c| {
                outbox::record_failure(c, &id, now, &failure, retry_initial).map_err(storage)
            })
            .await
    }

    async fn outbox(
        &self,
        unsent_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        self.db
            .run(move |c| outbox::list(c, unsent_only, limit).map_err(storage))
            .await
    }

    async fn retry_mail(&self, id: &str, now: i64) -> Result<bool, StorageError> {
        let id = id.to_owned();
        self.db
            .run_write(move |c| outbox::retry_now(c, &id, now).map_err(storage))
            .await
    }

    async fn release_mail(&self, ids: &[String], now: i64) -> Result<usize, StorageError> {
        let ids = ids.to_vec();
        self.db
            .run_write(move |c| outbox::release(c, &ids, now).map_err(storage))
            .await
    }
}

#[async_trait]
impl AuditTrail for SqliteStore {
    async fn append_audit(&self, events: &[Event]) -> Result<(), StorageError> {
        let events = events.to_vec();
        self.db
            .run_write(move |c| {
                let tx = c.transaction()?;
                for e in &events {
                    audit::record(&tx, e)?;
                }
                tx.commit()?;
                Ok::<_, StorageError>(())
            })
            .await
    }

    async fn audit_events(
        &self,
        since: Option<i64>,
        event: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        let event = event.map(str::to_owned);
        self.db
            .run(move |c| audit::query(c, since, event.as_deref(), limit).map_err(storage))
            .await
    }

    async fn prune_audit(&self, before: i64, limit: u32) -> Result<u64, StorageError> {
        let deleted = self
            .db
            .run_write(move |c| audit::prune(c, before, limit).map_err(StorageError::from))
            .await?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}
