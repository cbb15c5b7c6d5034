//! Paid signup (`docs/ARCHITECTURE.md`, "Payments"): Stripe Checkout and
//! the billing portal, and the webhook that turns Stripe's events into
//! licenses, exactly once and in order.

pub mod checkout;
pub mod prices;
pub mod signature;
pub mod stripe_api;
pub mod webhook;

use crate::domain::StorageError;
use crate::store::SharedStore;
use stripe_api::StripeCallError;

/// Why a billing operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BillingError {
    #[error("payments are not configured on this server (STRIPE_SECRET_KEY is not set)")]
    NotConfigured,
    #[error("there is no {plan} plan billed every {interval}")]
    UnknownPlan { plan: String, interval: String },
    #[error("the organization already has a subscription; manage it in the billing portal")]
    AlreadySubscribed,
    #[error("the organization has no billing account yet; start a subscription first")]
    NoCustomer,
    /// As many organizations have paid as `PILOT_USERS_LIMIT` allows.
    #[error("the pilot is full")]
    PilotFull,
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// How often the housekeeping runs.
const HOUSEKEEPING_EVERY: std::time::Duration = std::time::Duration::from_secs(600);

/// Starts the billing housekeeping (inside the tokio runtime): license keys
/// that waited longer than the reveal window to be shown on the success
/// page are wiped (the buyer has them by mail).
pub fn start_housekeeping(store: SharedStore) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
        loop {
            tick.tick().await;
            let wiped = store.wipe_stale_reveals(super::now()).await;
            match wiped {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    keys = n,
                    "wiped license keys never shown on the success page"
                ),
                Err(e) => tracing::warn!(error = %e, "billing housekeeping failed"),
            }
        }
    });
}
