//! The calls the issuer makes to Stripe's API, through `async-stripe`: the
//! customer of an organization, Checkout Sessions, billing portal sessions,
//! and reading a subscription back.

use std::collections::HashMap;
use std::time::Duration;

use stripe::StripeRequest;
use stripe::{Client, ClientBuilder, StripeError};
use stripe_billing::billing_portal_session::CreateBillingPortalSession;
use stripe_billing::subscription::RetrieveSubscription;
use stripe_checkout::checkout_session::{
    CreateCheckoutSession, CreateCheckoutSessionLineItems, CreateCheckoutSessionSubscriptionData,
    ExpireCheckoutSession, RetrieveCheckoutSession,
};
use stripe_client_core::{RequestBuilder, StripeMethod};
use stripe_core::customer::CreateCustomer;
use stripe_shared::CheckoutSessionMode;

use crate::config::StripeConfig;
use crate::domain::billing::SubscriptionSnapshot;

/// Why a Stripe call failed, in words that are safe to show (never the key).
#[derive(Debug, thiserror::Error)]
pub enum StripeCallError {
    /// Stripe could not be reached or did not answer in time.
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
    /// Stripe answered with an error.
    #[error("Stripe refused the request ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Stripe's answer could not be read.
    #[error("Stripe's answer could not be read: {0}")]
    BadAnswer(String),
}

impl From<StripeError> for StripeCallError {
    fn from(e: StripeError) -> Self {
        match e {
            StripeError::Stripe(errors, status) => StripeCallError::Refused {
                status,
                message: errors
                    .message
                    .clone()
                    .unwrap_or_else(|| "no message".to_owned()),
            },
            StripeError::JSONDeserialize(m) => StripeCallError::BadAnswer(m),
            StripeError::ClientError(m) | StripeError::ConfigError(m) => {
                StripeCallError::Unreachable(m)
            }
            StripeError::Timeout => StripeCallError::Unreachable("timed out".into()),
        }
    }
}

/// `GET /v1/prices/{id}`.
struct RetrievePrice(String);

impl StripeRequest for RetrievePrice {
    type Output = stripe_shared::Price;

    fn build(&self) -> RequestBuilder {
        RequestBuilder::new(StripeMethod::Get, format!("/prices/{}", self.0))
    }
}

/// What a new Checkout Session needs.
#[derive(Debug, Clone)]
pub struct NewCheckout<'a> {
    pub customer_id: &'a str,
    pub price_id: &'a str,
    pub organization_id: &'a str,
    pub user_id: &'a str,
    pub plan: &'a str,
    pub interval: &'a str,
    pub success_url: String,
    pub cancel_url: String,
    pub trial_days: Option<u32>,
}

/// A Checkout Session: its id and the page to send the buyer to.
#[derive(Debug, Clone)]
pub struct CheckoutSession {
    pub id: String,
    pub url: String,
}

/// The Stripe client of the issuer.
pub struct StripeApi {
    client: Client,
}

/// How long one call to Stripe may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(20);

impl StripeApi {
    pub fn new(config: &StripeConfig) -> Result<Self, StripeCallError> {
        let mut builder = ClientBuilder::new(config.secret_key.as_str()).timeout(CALL_TIMEOUT);
        if let Some(base) = &config.api_base {
            builder = builder.url(base.clone());
        }
        let client = builder.build().map_err(StripeCallError::from)?;
        Ok(StripeApi { client })
    }

    /// Creates the Stripe customer of an organization. The idempotency key
    /// is the organization id, so two simultaneous first checkouts of one
    /// organization get the same customer.
    pub async fn create_customer(
        &self,
        organization_id: &str,
        organization_name: &str,
        email: &str,
    ) -> Result<String, StripeCallError> {
        let metadata = HashMap::from([("organization_id".to_owned(), organization_id.to_owned())]);
        let request = CreateCustomer::new()
            .email(email)
            .name(organization_name)
            .metadata(metadata);
        let key = stripe::IdempotencyKey::new(format!("coditect-customer-{organization_id}"))
            .map_err(|e| StripeCallError::BadAnswer(e.to_string()))?;
        let customer = request
            .customize()
            .request_strategy(stripe::RequestStrategy::Idempotent(key))
            .send(&self.client)
            .await?;
        Ok(customer.id.as_str().to_owned())
    }

    /// The amount a price charges per unit, in the currency's smallest
    /// unit, and the currency (`usd`).
    pub async fn price_amount(&self, price_id: &str) -> Result<(i64, String), StripeCallError> {
        let price = RetrievePrice(price_id.to_owned())
            .customize()
            .send(&self.client)
            .await?;
        let amount = price.unit_amount.ok_or_else(|| {
            StripeCallError::BadAnswer(format!("price {price_id} has no fixed unit amount"))
        })?;
        Ok((amount, price.currency.to_string()))
    }

    /// Creates a Checkout Session in subscription mode.
    pub async fn create_checkout(
        &self,
        new: &NewCheckout<'_>,
    ) -> Result<CheckoutSession, StripeCallError> {
        let metadata = HashMap::from([
            ("organization_id".to_owned(), new.organization_id.to_owned()),
            ("user_id".to_owned(), new.user_id.to_owned()),
            ("plan".to_owned(), new.plan.to_owned()),
            ("interval".to_owned(), new.interval.to_owned()),
        ]);
        let mut item = CreateCheckoutSessionLineItems::new();
        item.price = Some(new.price_id.to_owned());
        item.quantity = Some(1);
        let mut subscription = CreateCheckoutSessionSubscriptionData::new();
        subscription.metadata = Some(metadata.clone());
        subscription.trial_period_days = new.trial_days;
        let session = CreateCheckoutSession::new()
            .mode(CheckoutSessionMode::Subscription)
            .customer(new.customer_id)
            .client_reference_id(new.organization_id)
            .line_items(vec![item])
            .metadata(metadata)
            .subscription_data(subscription)
            .success_url(new.success_url.clone())
            .cancel_url(new.cancel_url.clone())
            .send(&self.client)
            .await?;
        let url = session.url.ok_or_else(|| {
            StripeCallError::BadAnswer("the new Checkout Session has no URL".into())
        })?;
        Ok(CheckoutSession {
            id: session.id.as_str().to_owned(),
            url,
        })
    }

    /// Expires an open Checkout Session, so that it can no longer be paid.
    /// Returns Stripe's status of the session afterwards: `expired`, or
    /// `complete` when it was paid before it could be expired.
    pub async fn expire_checkout(&self, id: &str) -> Result<String, StripeCallError> {
        match ExpireCheckoutSession::new(id).send(&self.client).await {
            Ok(_) => Ok("expired".to_owned()),
            // Not open any more: ask what it is.
            Err(StripeError::Stripe(_, 400)) => {
                let session = RetrieveCheckoutSession::new(id).send(&self.client).await?;
                Ok(session
                    .status
                    .map_or_else(|| "unknown".to_owned(), |s| s.as_str().to_owned()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a billing portal session; returns its URL.
    pub async fn create_portal(
        &self,
        customer_id: &str,
        return_url: &str,
    ) -> Result<String, StripeCallError> {
        let session = CreateBillingPortalSession::new()
            .customer(customer_id)
            .return_url(return_url)
            .send(&self.client)
            .await?;
        Ok(session.url)
    }

    /// Reads a subscription as Stripe has it now.
    pub async fn subscription(&self, id: &str) -> Result<SubscriptionSnapshot, StripeCallError> {
        let sub = RetrieveSubscription::new(id).send(&self.client).await?;
        let item = sub.items.data.first();
        Ok(SubscriptionSnapshot {
            id: sub.id.as_str().to_owned(),
            customer_id: sub.customer.id().as_str().to_owned(),
            status: sub.status.as_str().to_owned(),
            price_id: item.map(|i| i.price.id.as_str().to_owned()),
            quantity: item
                .and_then(|i| i.quantity)
                .and_then(|q| u32::try_from(q).ok())
                .unwrap_or(1)
                .max(1),
            current_period_end: item.map(|i| i.current_period_end),
            cancel_at_period_end: sub.cancel_at_period_end,
        })
    }
}
