//! `POST /webhooks/stripe`: Stripe's events, verified, read and applied
//! exactly once.
//!
//! - The `Stripe-Signature` header is checked against `STRIPE_WEBHOOK_SECRET`
//!   over the raw body, with a 5-minute tolerance ([`check_signature`], in
//!   `signature.rs`): the delivery is Stripe's when **any** of the header's
//!   `v1` signatures matches (while a rolled secret is still valid, Stripe
//!   signs with both, in no promised order), each compared in constant
//!   time. Anything else is refused before the body is read.
//! - The event is read into a [`BillingChange`]; Stripe is asked first,
//!   outside any transaction, for what the event does not carry.
//! - The store applies it exactly once (`Store::apply_stripe_event`): the
//!   event's record and its effect commit in one transaction, so a repeat
//!   (also a simultaneous one) changes nothing, and a crash half-way leaves
//!   nothing behind for the retry to trip over.
//! - Every delivery, applied or refused, is audited; refusals of deliveries
//!   that were not Stripe's (no, a wrong or a stale signature, too large)
//!   cost a stranger little ([`refused`]): they count against the sender's
//!   address (`RATE_LIMIT_WEBHOOK_REFUSALS`; beyond it the answer is 429
//!   `rate_limited`), and the audit log gets the first of them from an
//!   address at once and the rest as one row with their counts
//!   (`AuditLog::log_repeated`). The limit is checked only after the
//!   signature failed, so a delivery Stripe signed is never limited, even
//!   from an address that also sent junk (behind a proxy the issuer was not
//!   told about, all clients share one address).

use std::sync::Arc;

use serde_json::Value;

pub use super::signature::{SIGNATURE_TOLERANCE_SECS, check_signature};
use super::stripe_api::StripeCallError;
use crate::app::AppState;
use crate::app::limits::{Decision, Refusal};
use crate::config::Config;
use crate::domain::audit::{Client, Event};
use crate::domain::billing::{
    ApplyError, BillingChange, BillingRules, Graces, InvoiceFacts, LicenseMailFacts, Outcome,
    StripeEvent, SubscriptionSnapshot,
};
use crate::domain::rfc3339;

/// Largest webhook body accepted (Stripe's events are a few KiB; an
/// invoice with many lines is larger).
pub const MAX_WEBHOOK_BYTES: usize = 512 * 1024;

/// Why a delivery was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("webhooks are not configured on this server (STRIPE_WEBHOOK_SECRET is not set)")]
    NotConfigured,
    #[error("the Stripe-Signature header is missing")]
    MissingSignature,
    #[error("the Stripe-Signature header does not match the body and the signing secret")]
    BadSignature,
    #[error("the signature is more than 5 minutes away from the server's clock (t={0})")]
    Stale(i64),
    #[error("the event must be at most {MAX_WEBHOOK_BYTES} bytes")]
    TooLarge,
    #[error("the body is not a Stripe event: {0}")]
    BadPayload(String),
    #[error("Stripe could not be asked about the event; it will be retried: {0}")]
    Unavailable(String),
    #[error(
        "too many refused deliveries from this address: at most {}; deliveries with a valid Stripe-Signature are never limited. Try again in {} seconds",
        .0.report.rate.describe(),
        .0.retry_after
    )]
    RateLimited(Refusal),
    #[error("{0}")]
    Internal(String),
}

impl WebhookError {
    /// The stable code of the refusal (answer and audit row).
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::NotConfigured => "webhooks_not_configured",
            WebhookError::MissingSignature => "missing_signature",
            WebhookError::BadSignature => "bad_signature",
            WebhookError::Stale(_) => "stale_signature",
            WebhookError::TooLarge => "payload_too_large",
            WebhookError::BadPayload(_) => "bad_event",
            WebhookError::Unavailable(_) => "retry_later",
            WebhookError::RateLimited(_) => "rate_limited",
            WebhookError::Internal(_) => "internal_error",
        }
    }
}

impl WebhookError {
    /// Whether the delivery was refused before it was known to be
    /// Stripe's (anybody can cause these; without a webhook secret no
    /// delivery can be known to be Stripe's).
    pub fn is_unverified(&self) -> bool {
        matches!(
            self,
            WebhookError::NotConfigured
                | WebhookError::MissingSignature
                | WebhookError::BadSignature
                | WebhookError::Stale(_)
                | WebhookError::TooLarge
                | WebhookError::RateLimited(_)
        )
    }
}

impl From<ApplyError> for WebhookError {
    fn from(e: ApplyError) -> Self {
        match e {
            ApplyError::BadPayload(m) => WebhookError::BadPayload(m),
            ApplyError::Storage(s) => WebhookError::Internal(s.to_string()),
        }
    }
}

impl From<crate::domain::StorageError> for WebhookError {
    fn from(e: crate::domain::StorageError) -> Self {
        WebhookError::Internal(e.to_string())
    }
}

/// An event whose signature checked out, before it is read.
#[derive(Debug, Clone)]
pub struct SignedEvent {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
}

/// What a delivery came to.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id: String,
    pub outcome: Outcome,
}

/// Handles one delivery: verifies, applies, audits. A refusal is audited
/// too (with its code) and logged; it changes nothing else.
pub async fn receive(
    state: &AppState,
    client: &Client,
    body: &[u8],
    signature: Option<&str>,
    now: i64,
) -> Result<Received, WebhookError> {
    let event = match verify(&state.config, body, signature, now) {
        Ok(e) => e,
        Err(e) => return Err(refused(state, client, now, e).await),
    };
    let (id, kind) = (event.id.clone(), event.kind.clone());
    match process(state, event, now).await {
        Ok(outcome) => {
            tracing::info!(event = %id, %kind, outcome = outcome.as_str(), "Stripe event");
            let mut audit = Event::new(now, "stripe_webhook", outcome.as_str())
                .actor("stripe")
                .subject("stripe_event", id.clone())
                .client(client);
            audit.detail = Some(match &outcome {
                Outcome::Ignored(why) => format!("{kind}: {why}"),
                _ => kind.clone(),
            });
            state.audit.log(audit).await;
            Ok(Received {
                event_id: id,
                outcome,
            })
        }
        Err(e) => {
            if matches!(e, WebhookError::Internal(_)) {
                tracing::error!(event = %id, %kind, error = %e, "Stripe event failed");
            }
            Err(refused(state, client, now, e).await)
        }
    }
}

/// Logs and audits a refused delivery; returns the error to answer with.
///
/// A refusal of a delivery that was not Stripe's ([`WebhookError::is_unverified`])
/// counts against its address's `RATE_LIMIT_WEBHOOK_REFUSALS`; beyond that
/// the answer is [`WebhookError::RateLimited`]. Either way it is audited as
/// a repeat (`AuditLog::log_repeated`): the first from an address at once,
/// the next ones until the end of the minute as one row with their counts,
/// so junk costs no write of its own. If the counts cannot be read, the
/// refusal stands as it is (it is a refusal already).
pub async fn refused(
    state: &AppState,
    client: &Client,
    now: i64,
    error: WebhookError,
) -> WebhookError {
    if !error.is_unverified() {
        tracing::warn!(code = error.code(), detail = %error, "Stripe webhook refused");
        state
            .audit
            .log(
                Event::new(now, "stripe_webhook", error.code())
                    .actor("stripe")
                    .client(client),
            )
            .await;
        return error;
    }
    let ip = client.ip.as_deref().and_then(|ip| ip.parse().ok());
    let error = match state.limits.check_webhook_refusal(ip).await {
        Ok(Decision::Refused(refusal)) => WebhookError::RateLimited(refusal),
        Ok(Decision::Allowed(_)) => error,
        Err(e) => {
            tracing::warn!(error = %e, "cannot count a refused webhook delivery");
            error
        }
    };
    // Over the limit: not logged one by one either.
    if !matches!(error, WebhookError::RateLimited(_)) {
        tracing::warn!(code = error.code(), detail = %error, "Stripe webhook refused");
    }
    state
        .audit
        .log_repeated(
            Event::new(now, "stripe_webhook", error.code())
                .actor("stripe")
                .client(client),
        )
        .await;
    error
}

/// Checks the signature and reads the event.
pub fn verify(
    config: &Config,
    body: &[u8],
    signature: Option<&str>,
    now: i64,
) -> Result<SignedEvent, WebhookError> {
    let secret = config
        .stripe
        .as_ref()
        .and_then(|s| s.webhook_secret.as_ref())
        .ok_or(WebhookError::NotConfigured)?;
    let signature = signature
        .filter(|s| !s.trim().is_empty())
        .ok_or(WebhookError::MissingSignature)?;
    check_signature(signature, body, secret, now)?;
    // Signed by Stripe: from here on, what cannot be read is Stripe's
    // event the issuer does not understand (answered 400, audited).
    let text = std::str::from_utf8(body)
        .map_err(|_| WebhookError::BadPayload("the body is not UTF-8".into()))?;
    let value: Value =
        serde_json::from_str(text).map_err(|e| WebhookError::BadPayload(e.to_string()))?;
    let id = value["id"]
        .as_str()
        .filter(|s| !s.is_empty() && s.len() <= 255)
        .ok_or_else(|| WebhookError::BadPayload("no event id".into()))?;
    let kind = value["type"]
        .as_str()
        .ok_or_else(|| WebhookError::BadPayload("no event type".into()))?;
    let created = value["created"]
        .as_i64()
        .ok_or_else(|| WebhookError::BadPayload("no event time".into()))?;
    Ok(SignedEvent {
        id: id.to_owned(),
        kind: kind.to_owned(),
        created,
        object: value["data"]["object"].clone(),
    })
}

/// The id of an object field that may be expanded (`"cus_1"` or `{"id": "cus_1", …}`).
fn id_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Object(o) => o.get("id").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    }
}

/// A subscription object of an event, as the issuer keeps it.
pub fn snapshot(object: &Value) -> Option<SubscriptionSnapshot> {
    let item = &object["items"]["data"][0];
    Some(SubscriptionSnapshot {
        id: id_of(&object["id"])?,
        customer_id: id_of(&object["customer"])?,
        status: object["status"].as_str()?.to_owned(),
        price_id: id_of(&item["price"]),
        quantity: item["quantity"]
            .as_u64()
            .and_then(|q| u32::try_from(q).ok())
            .unwrap_or(1)
            .max(1),
        current_period_end: item["current_period_end"]
            .as_i64()
            .or_else(|| object["current_period_end"].as_i64()),
        cancel_at_period_end: object["cancel_at_period_end"].as_bool().unwrap_or(false),
    })
}

/// The subscription an invoice is for.
fn invoice_subscription(object: &Value) -> Option<String> {
    id_of(&object["parent"]["subscription_details"]["subscription"])
        .or_else(|| id_of(&object["subscription"]))
}

/// The end of the latest service period an invoice pays for.
fn invoice_period_end(object: &Value) -> Option<i64> {
    object["lines"]["data"]
        .as_array()
        .and_then(|lines| {
            lines
                .iter()
                .filter_map(|l| l["period"]["end"].as_i64())
                .max()
        })
        .or_else(|| object["period_end"].as_i64())
}

/// The invoice's id and amount due, for the pilot's figures.
fn invoice_facts(object: &Value) -> Option<InvoiceFacts> {
    Some(InvoiceFacts {
        id: id_of(&object["id"]).filter(|id| !id.is_empty() && id.len() <= 255)?,
        amount_minor: object["amount_due"].as_i64(),
        currency: object["currency"]
            .as_str()
            .filter(|c| c.len() <= 16)
            .map(str::to_ascii_lowercase),
    })
}

/// What the event means for us, with the subscription read back from
/// Stripe where the event does not carry it (a completed checkout).
fn change_of(event: &SignedEvent, subscription: Option<SubscriptionSnapshot>) -> BillingChange {
    let o = &event.object;
    let Some(customer) = id_of(&o["customer"]) else {
        return BillingChange::Ignore(format!("{} has no customer", event.kind));
    };
    let malformed = |reason: &str| BillingChange::Malformed {
        customer: customer.clone(),
        reason: reason.to_owned(),
    };
    match event.kind.as_str() {
        "checkout.session.completed" => {
            let Some(session_id) = id_of(&o["id"]) else {
                return malformed("the Checkout Session has no id");
            };
            if o["mode"].as_str() != Some("subscription") {
                return BillingChange::Ignore("not a subscription checkout".into());
            }
            if !matches!(
                o["payment_status"].as_str(),
                Some("paid" | "no_payment_required")
            ) {
                return BillingChange::Ignore("the checkout is not paid yet".into());
            }
            match subscription {
                Some(subscription) => BillingChange::CheckoutCompleted {
                    customer,
                    session_id,
                    subscription,
                },
                None => malformed("the Checkout Session has no subscription"),
            }
        }
        "customer.subscription.created" | "customer.subscription.updated" => match snapshot(o) {
            Some(snapshot) => BillingChange::SubscriptionChanged { snapshot },
            None => malformed("the subscription lacks id, customer or status"),
        },
        "customer.subscription.deleted" => match id_of(&o["id"]) {
            Some(subscription_id) => BillingChange::SubscriptionDeleted {
                customer,
                subscription_id,
            },
            None => malformed("the subscription has no id"),
        },
        "invoice.paid" | "invoice.payment_failed" => {
            let Some(subscription_id) = invoice_subscription(o) else {
                return BillingChange::Ignore("the invoice is not for a subscription".into());
            };
            let invoice = invoice_facts(o);
            if event.kind == "invoice.paid" {
                BillingChange::InvoicePaid {
                    customer,
                    subscription_id,
                    period_end: invoice_period_end(o),
                    invoice,
                }
            } else {
                BillingChange::PaymentFailed {
                    customer,
                    subscription_id,
                    invoice,
                }
            }
        }
        other => BillingChange::Ignore(format!("{other} is not handled")),
    }
}

/// Applies a verified event. Stripe is asked first, outside the database
/// transaction, for what the event does not carry.
pub async fn process(
    state: &AppState,
    event: SignedEvent,
    now: i64,
) -> Result<Outcome, WebhookError> {
    // A repeat of an applied event is answered without asking Stripe.
    if state.store.stripe_event_seen(&event.id).await? {
        return Ok(Outcome::Duplicate);
    }
    let Some(rules) = rules(&state.config) else {
        return Ok(Outcome::Ignored("Stripe is not configured".into()));
    };
    let prefetched = match event.kind.as_str() {
        "checkout.session.completed" => match id_of(&event.object["subscription"]) {
            Some(sub) if event.object["mode"].as_str() == Some("subscription") => {
                let (stripe, _) = state
                    .stripe()
                    .map_err(|_| WebhookError::Unavailable("Stripe is not configured".into()))?;
                Some(stripe.subscription(&sub).await.map_err(|e| match e {
                    StripeCallError::Refused { status: 404, .. } => {
                        WebhookError::BadPayload(format!("Stripe has no subscription {sub}"))
                    }
                    other => WebhookError::Unavailable(other.to_string()),
                })?)
            }
            _ => None,
        },
        _ => None,
    };
    let change = change_of(&event, prefetched);
    let event = StripeEvent {
        id: event.id,
        kind: event.kind,
        created: event.created,
        change,
    };
    let (outcome, mailed) = state.store.apply_stripe_event(&event, &rules, now).await?;
    if mailed {
        state.mailer.wake();
    }
    Ok(outcome)
}

/// The rules a billing change is applied with, from the configuration
/// (`None` without Stripe settings).
pub fn rules(config: &Arc<Config>) -> Option<BillingRules> {
    let stripe = config.stripe.as_ref()?;
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    let prices = stripe.prices.clone();
    let mail_config = Arc::clone(config);
    Some(BillingRules {
        plan_of_price: Arc::new(move |price| {
            prices
                .plan_of(price)
                .and_then(|(plan, _)| crate::domain::plans::find(plan))
        }),
        graces: Graces {
            billing: secs(config.billing_grace),
            past_due: secs(config.past_due_grace),
        },
        license_mail: Arc::new(move |facts: LicenseMailFacts<'_>| {
            crate::app::mail::templates::license_key_mail(
                &mail_config,
                &crate::app::mail::templates::LicenseMail {
                    to: facts.to,
                    key: facts.key,
                    plan_name: facts.plan_name,
                    organization_name: facts.organization_name,
                    renews_or_ends: &rfc3339(facts.period_end),
                },
            )
        }),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn event_fields_are_read_from_expanded_and_plain_forms() {
        let invoice = json!({
            "customer": {"id": "cus_9"},
            "parent": {"subscription_details": {"subscription": "sub_9"}},
            "lines": {"data": [{"period": {"end": 10}}, {"period": {"end": 30}}, {"period": {}}]}
        });
        assert_eq!(id_of(&invoice["customer"]).as_deref(), Some("cus_9"));
        assert_eq!(invoice_subscription(&invoice).as_deref(), Some("sub_9"));
        assert_eq!(invoice_period_end(&invoice), Some(30));
        assert_eq!(invoice_facts(&invoice), None, "an invoice without an id");
        let facts =
            invoice_facts(&json!({"id": "in_1", "amount_due": 1900, "currency": "USD"})).unwrap();
        assert_eq!(
            (
                facts.id.as_str(),
                facts.amount_minor,
                facts.currency.as_deref()
            ),
            ("in_1", Some(1900), Some("usd"))
        );
        let old_style = json!({"subscription": "sub_8", "period_end": 7, "lines": {"data": []}});
        assert_eq!(invoice_subscription(&old_style).as_deref(), Some("sub_8"));
        assert_eq!(invoice_period_end(&old_style), Some(7));
        let sub = json!({"id": "sub_1", "customer": "cus_1", "status": "trialing",
            "items": {"data": [{"price": {"id": "price_x"}, "quantity": 0, "current_period_end": 99}]}});
        let s = snapshot(&sub).unwrap();
        assert_eq!((s.quantity, s.current_period_end), (1, Some(99)));
        assert_eq!(s.price_id.as_deref(), Some("price_x"));
        assert!(snapshot(&json!({"id": "sub_1"})).is_none());
    }
}
