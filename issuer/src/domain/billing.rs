//! Subscriptions and the licenses they pay for: the rules that decide a
//! license's plan, seats, status and end from Stripe's subscription state,
//! and the billing events the webhook turns Stripe's deliveries into.
//!
//! Order safety: the status fields of a subscription change only for an
//! event at least as new as the last one applied (`state_at`); a paid
//! period only ever moves the period end forward; a canceled subscription
//! stays canceled; a revoked license stays revoked. The store applies these
//! rules inside the transaction that records the event
//! (`Store::apply_stripe_event`), so each event takes effect exactly once.

use super::StorageError;
use super::license::NewLicense;
use super::mail::Mail;
use super::plans::Plan;

/// A subscription as the issuer keeps it: the fields that decide a license.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionSnapshot {
    pub id: String,
    pub customer_id: String,
    /// Stripe's status: `active`, `trialing`, `past_due`, `canceled`, …
    pub status: String,
    pub price_id: Option<String>,
    pub quantity: u32,
    /// End of the current paid (or trial) period.
    pub current_period_end: Option<i64>,
    pub cancel_at_period_end: bool,
}

/// How a subscription decides its license's lifetime.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Graces {
    /// Added to the end of a paid period (`BILLING_GRACE`).
    pub billing: i64,
    /// How long a past-due subscription keeps renewing (`PAST_DUE_GRACE`).
    pub past_due: i64,
}

/// Stripe statuses after which a subscription never comes back.
pub fn is_terminal(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// Stripe statuses whose license is usable.
pub fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due" | "incomplete")
}

/// Whether a subscription state as of `at` may replace the stored one
/// (`stored_status` as of `stored_at`): never after a terminal status, and
/// never an older state over a newer one. The same second is applied in
/// delivery order.
pub fn may_replace(stored_status: &str, stored_at: i64, at: i64) -> bool {
    !is_terminal(stored_status) && at >= stored_at
}

/// The license status a subscription status gives.
pub fn license_status_for(subscription_status: &str) -> &'static str {
    if is_live(subscription_status) {
        "active"
    } else if matches!(subscription_status, "paused" | "unpaid") {
        // Not over, but not paid for: refused until it is
        // (`license_suspended` tells the holder to fix the payment).
        "suspended"
    } else {
        "canceled"
    }
}

/// When the license of a subscription ends: at the end of the past-due
/// grace while a payment is overdue, else at the end of the paid period
/// plus the billing grace; `current` when neither is known.
pub fn license_end(
    subscription_status: &str,
    past_due_since: Option<i64>,
    period_end: Option<i64>,
    graces: Graces,
    current: i64,
) -> i64 {
    match (subscription_status, past_due_since, period_end) {
        ("past_due" | "unpaid", Some(since), _) => since.saturating_add(graces.past_due),
        (_, _, Some(end)) => end.saturating_add(graces.billing),
        _ => current,
    }
}

/// Machines a subscription pays for: the plan's devices per seat bought.
pub fn seats(plan: &Plan, quantity: u32) -> u32 {
    plan.entitlements
        .max_devices
        .saturating_mul(quantity.max(1))
}

/// Whether an event changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// An older event than the state already applied.
    Stale,
}

/// What became of a verified event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Applied now.
    Applied,
    /// Applied before (same event id): nothing changed.
    Duplicate,
    /// Older than the state already applied: recorded, nothing changed.
    Stale,
    /// Not an event the issuer acts on, or not about one of our customers.
    Ignored(String),
}

impl Outcome {
    /// The outcome's name (a fixed list: also a metrics label).
    pub fn as_str(&self) -> &'static str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Ignored(_) => "ignored",
        }
    }

    /// The outcome as recorded with the event.
    pub fn recorded(&self) -> String {
        match self {
            Outcome::Ignored(why) => format!("ignored: {why}"),
            other => other.as_str().to_owned(),
        }
    }
}

impl From<Applied> for Outcome {
    fn from(a: Applied) -> Self {
        match a {
            Applied::Yes => Outcome::Applied,
            Applied::Stale => Outcome::Stale,
        }
    }
}

/// A verified Stripe event: its identity, and what it asks of us.
#[derive(Debug, Clone)]
pub struct StripeEvent {
    pub id: String,
    pub kind: String,
    /// Stripe's `created`: the time the event's state is as of.
    pub created: i64,
    pub change: BillingChange,
}

/// What a Stripe event means for the issuer, read from its payload.
#[derive(Debug, Clone)]
pub enum BillingChange {
    /// A Checkout Session in subscription mode was paid: the subscription
    /// (as Stripe has it now) gets its license and the key is mailed.
    CheckoutCompleted {
        customer: String,
        session_id: String,
        subscription: SubscriptionSnapshot,
    },
    /// `customer.subscription.created` / `.updated`.
    SubscriptionChanged { snapshot: SubscriptionSnapshot },
    /// `customer.subscription.deleted`: ended for good.
    SubscriptionDeleted {
        customer: String,
        subscription_id: String,
    },
    /// `invoice.paid`: the paid period ends at `period_end`.
    InvoicePaid {
        customer: String,
        subscription_id: String,
        period_end: Option<i64>,
        /// The invoice, recorded for the pilot's figures (when it has an id).
        invoice: Option<InvoiceFacts>,
    },
    /// `invoice.payment_failed`: past due from the first failure on.
    PaymentFailed {
        customer: String,
        subscription_id: String,
        invoice: Option<InvoiceFacts>,
    },
    /// About one of our customers, but its payload lacks what the change
    /// needs (refused as a bad payload, nothing recorded).
    Malformed { customer: String, reason: String },
    /// Nothing to do; recorded with the reason.
    Ignore(String),
}

impl BillingChange {
    /// The Stripe customer the change is about.
    pub fn customer(&self) -> Option<&str> {
        match self {
            BillingChange::CheckoutCompleted { customer, .. }
            | BillingChange::SubscriptionDeleted { customer, .. }
            | BillingChange::InvoicePaid { customer, .. }
            | BillingChange::PaymentFailed { customer, .. }
            | BillingChange::Malformed { customer, .. } => Some(customer),
            BillingChange::SubscriptionChanged { snapshot } => Some(&snapshot.customer_id),
            BillingChange::Ignore(_) => None,
        }
    }
}

impl BillingChange {
    /// The subscription the change is about, if any.
    pub fn subscription_id(&self) -> Option<&str> {
        match self {
            BillingChange::CheckoutCompleted { subscription, .. } => Some(subscription.id.as_str()),
            BillingChange::SubscriptionChanged { snapshot } => Some(snapshot.id.as_str()),
            BillingChange::SubscriptionDeleted {
                subscription_id, ..
            }
            | BillingChange::InvoicePaid {
                subscription_id, ..
            }
            | BillingChange::PaymentFailed {
                subscription_id, ..
            } => Some(subscription_id.as_str()),
            BillingChange::Malformed { .. } | BillingChange::Ignore(_) => None,
        }
    }

    /// The invoice of a payment event, with whether it was paid.
    pub fn invoice(&self) -> Option<(&str, &InvoiceFacts, bool)> {
        match self {
            BillingChange::InvoicePaid {
                subscription_id,
                invoice: Some(i),
                ..
            } => Some((subscription_id.as_str(), i, true)),
            BillingChange::PaymentFailed {
                subscription_id,
                invoice: Some(i),
                ..
            } => Some((subscription_id.as_str(), i, false)),
            _ => None,
        }
    }
}

/// A Stripe invoice as the pilot's figures count it: its id and the
/// amount due (in the currency's smallest unit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvoiceFacts {
    pub id: String,
    pub amount_minor: Option<i64>,
    pub currency: Option<String>,
}

/// What the key mail of a new license is made from.
#[derive(Debug, Clone, Copy)]
pub struct LicenseMailFacts<'a> {
    pub to: &'a str,
    pub key: &'a str,
    pub plan_name: &'a str,
    pub organization_name: &'a str,
    /// End of the paid period (Unix seconds).
    pub period_end: i64,
}

/// The plan a Stripe price id sells (`STRIPE_PRICE_*`).
pub type PlanOfPrice = dyn Fn(&str) -> Option<&'static Plan> + Send + Sync;
/// Writes the license-key mail of a new license.
pub type LicenseMailWriter = dyn Fn(LicenseMailFacts<'_>) -> Mail + Send + Sync;

/// What applying a billing change needs to know besides the event.
#[derive(Clone)]
pub struct BillingRules {
    pub plan_of_price: std::sync::Arc<PlanOfPrice>,
    pub graces: Graces,
    /// The key mail, queued in the same transaction as the license.
    pub license_mail: std::sync::Arc<LicenseMailWriter>,
}

/// The license a paid checkout creates: the plan of the subscription's
/// price (else the plan the checkout was started for), paid until the
/// period's end plus the billing grace, for `email` of the organization.
pub fn paid_license<'a>(
    snap: &'a SubscriptionSnapshot,
    checkout_plan: Option<&str>,
    email: &'a str,
    organization_id: &'a str,
    rules: &BillingRules,
    now: i64,
) -> Result<NewLicense<'a>, ApplyError> {
    let plan = snap
        .price_id
        .as_deref()
        .and_then(|p| (rules.plan_of_price)(p))
        .or_else(|| checkout_plan.and_then(super::plans::find))
        .ok_or_else(|| {
            ApplyError::BadPayload(format!(
                "the subscription's price {} is none of the configured STRIPE_PRICE_*",
                snap.price_id.as_deref().unwrap_or("(none)")
            ))
        })?;
    let period_end = snap.current_period_end.unwrap_or(now);
    Ok(NewLicense {
        email,
        plan,
        expires_at: period_end.saturating_add(rules.graces.billing),
        max_devices: None,
        organization_id: Some(organization_id),
        stripe_subscription_id: Some(&snap.id),
    })
}

/// Why an event could not be applied.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("the body is not a usable Stripe event: {0}")]
    BadPayload(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// What the success page can show for a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    /// No checkout with this id was started in this browser.
    Unknown,
    /// Paid, but the webhook has not arrived yet.
    Pending,
    /// The key, shown now and never again.
    Key {
        key: String,
        plan: String,
        email: String,
        expires_at: i64,
    },
    /// Shown before: only where it went.
    AlreadyShown { email: String, key_hint: String },
}

/// How long a new key waits to be shown on the success page (seconds); it
/// is wiped after that (the buyer has it by mail).
pub const REVEAL_WINDOW: i64 = 24 * 3600;

/// How long a Checkout Session stays open at Stripe (seconds).
pub const CHECKOUT_LIFETIME: i64 = 24 * 3600;

/// A started Checkout Session, as recorded.
#[derive(Debug, Clone)]
pub struct CheckoutRecord {
    pub session_id: String,
    pub organization_id: String,
    pub user_id: String,
    pub plan: String,
    pub interval: String,
    /// Hash of the cookie of the browser that started it (web signup).
    pub browser_hash: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const GRACES: Graces = Graces {
        billing: 100,
        past_due: 1_000,
    };

    #[test]
    fn newer_or_equal_states_replace_older_ones_until_the_end() {
        assert!(may_replace("active", 10, 10));
        assert!(may_replace("past_due", 10, 11));
        assert!(!may_replace("active", 10, 9));
        assert!(!may_replace("canceled", 10, 99));
        assert!(!may_replace("incomplete_expired", 10, 99));
    }

    #[test]
    fn statuses_map_to_license_statuses() {
        for s in ["active", "trialing", "past_due", "incomplete"] {
            assert_eq!(license_status_for(s), "active", "{s}");
        }
        for s in ["paused", "unpaid"] {
            assert_eq!(license_status_for(s), "suspended", "{s}");
        }
        for s in ["canceled", "incomplete_expired"] {
            assert_eq!(license_status_for(s), "canceled", "{s}");
        }
    }

    #[test]
    fn the_end_follows_the_paid_period_or_the_past_due_grace() {
        assert_eq!(license_end("active", None, Some(5_000), GRACES, 1), 5_100);
        assert_eq!(
            license_end("past_due", Some(30), Some(5_000), GRACES, 1),
            1_030
        );
        assert_eq!(license_end("active", None, None, GRACES, 7), 7);
        let pro = super::super::plans::find("pilot-professional").unwrap();
        assert_eq!(seats(pro, 2), 6);
        assert_eq!(seats(pro, 0), 3);
    }
}
