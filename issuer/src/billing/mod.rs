//! Paid signup (DESIGN §7): Stripe Checkout and the billing portal, and
//! the webhook that turns Stripe's events into licenses, exactly once and
//! in order.

pub mod checkout;
pub mod state;
pub mod stripe_api;
pub mod webhook;

use crate::db::DbError;
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
    #[error(transparent)]
    Stripe(#[from] StripeCallError),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("{0}")]
    Internal(String),
}

impl From<rusqlite::Error> for BillingError {
    fn from(e: rusqlite::Error) -> Self {
        BillingError::Db(DbError::Sqlite(e))
    }
}
