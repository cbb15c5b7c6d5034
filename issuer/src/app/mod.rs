//! The use cases: what the issuer does, independent of how it is asked.
//!
//! A use case takes typed input (a parsed [`LicenseKey`], a `HardwareId`,
//! a signed-in [`User`]), applies the rules of `domain`, calls the store
//! (one whole operation per call), writes the audit trail and signs tokens.
//! The HTTP handlers (`http`) and the operator's commands (`admin`) parse
//! their input and call these; they do not orchestrate. Nothing here
//! imports `http`.
//!
//! [`LicenseKey`]: crate::domain::license_key::LicenseKey
//! [`User`]: crate::domain::account::User

pub mod accounts;
pub mod audit;
pub mod billing;
pub mod cli_login;
pub mod licenses;
pub mod limits;
pub mod mail;
pub mod metrics;
pub mod passwords;
pub mod pilot_gauges;
pub mod providers;
pub mod stats;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::Config;
use crate::domain::tokens::TokenPolicy;
use crate::store::SharedStore;

/// What every use case can reach: the configuration, the store, and the
/// background workers (audit writer, mail sender) of this process.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: SharedStore,
    pub audit: audit::AuditLog,
    /// Stripe's API, when configured.
    pub stripe: Option<Arc<billing::stripe_api::StripeApi>>,
    /// What the plans cost, read from Stripe (none when payments are off).
    pub prices: Option<Arc<billing::prices::PriceBook>>,
    /// The mail sender.
    pub mailer: mail::Mailer,
    /// Request rate limits: in the database on PostgreSQL, in this
    /// process on SQLite (see `app::limits`).
    pub limits: Arc<limits::Limiters>,
    /// The process's metrics (`/metrics`); other modules add theirs with
    /// [`metrics::Metrics::gauge`].
    pub metrics: Arc<metrics::Metrics>,
    /// Set when the process has been asked to stop: `/readyz` answers 503
    /// from then on, so no new traffic is sent here.
    pub draining: Arc<AtomicBool>,
}

impl AppState {
    /// The state of a running server (starts the audit writer, the mail
    /// sender, the billing housekeeping, the audit log's pruning and, on
    /// PostgreSQL, the pruning of the rate-limit counters, so it must be
    /// called inside the tokio runtime).
    pub fn new(config: Config, store: SharedStore) -> Self {
        let stripe = config.stripe.as_ref().and_then(|c| {
            billing::stripe_api::StripeApi::new(c)
                .map_err(|e| tracing::error!(error = %e, "cannot set up the Stripe client"))
                .ok()
                .map(Arc::new)
        });
        let prices = match (&stripe, &config.stripe) {
            (Some(api), Some(c)) => Some(billing::prices::PriceBook::start(
                Arc::clone(api),
                c.prices.clone(),
            )),
            _ => None,
        };
        let config = Arc::new(config);
        let metrics = Arc::new(metrics::Metrics::new());
        if let Some(at) = config.metrics.signing_key_rotate_by {
            metrics.set_signing_key_rotate_by(at);
        }
        billing::start_housekeeping(Arc::clone(&store));
        audit::start_pruning(Arc::clone(&store), config.audit_retention_days);
        accounts::start_housekeeping(Arc::clone(&store), config.unverified_account_ttl);
        AppState {
            limits: Arc::new(limits::Limiters::for_store(&config, &store)),
            mailer: mail::Mailer::start(Arc::clone(&store), Arc::clone(&config)),
            audit: audit::AuditLog::start(Arc::clone(&store)),
            draining: Arc::new(AtomicBool::new(false)),
            metrics,
            config,
            stripe,
            prices,
            store,
        }
    }

    /// The Stripe client and settings, or `NotConfigured`.
    pub fn stripe(
        &self,
    ) -> Result<
        (
            &billing::stripe_api::StripeApi,
            &crate::config::StripeConfig,
        ),
        billing::BillingError,
    > {
        match (&self.stripe, &self.config.stripe) {
            (Some(api), Some(cfg)) => Ok((api, cfg)),
            _ => Err(billing::BillingError::NotConfigured),
        }
    }

    /// Whether the process is stopping.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    /// The first step of stopping: readiness goes false.
    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    /// The last step of stopping, once no request is in flight: the mail
    /// sender stops (its unsent claims go back to the outbox) and every
    /// audit event queued is written. Bounded by `budget`.
    pub async fn finish(&self, budget: Duration) {
        let started = tokio::time::Instant::now();
        self.mailer.stop(budget / 2).await;
        let left = budget.saturating_sub(started.elapsed());
        if tokio::time::timeout(left, self.audit.flush())
            .await
            .is_err()
        {
            tracing::error!("the audit log could not be flushed before the stop");
        }
    }

    pub fn token_policy(&self) -> TokenPolicy {
        TokenPolicy {
            lifetime: self.config.token_lifetime,
            renew_after: self.config.token_renew_after,
        }
    }
}

/// Current Unix time. The edges (handlers, workers, admin commands) read
/// the clock here and hand it to the logic.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

/// Current Unix time in milliseconds (for the rate-limit counters).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}
