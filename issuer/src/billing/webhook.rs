//! `POST /webhooks/stripe`: Stripe's events, verified and applied exactly
//! once.
//!
//! - The `Stripe-Signature` header is checked against `STRIPE_WEBHOOK_SECRET`
//!   over the raw body, with a 5-minute tolerance (`async-stripe`'s
//!   `Webhook`, given our clock); anything else is refused before it is read.
//! - Each event id is applied once: its row in `stripe_events` and its
//!   effect commit in one transaction, so a repeat (also a simultaneous one)
//!   finds the row and changes nothing, and a crash half-way leaves nothing
//!   behind for the retry to trip over.
//! - Order: see [`super::state`].

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};
use serde_json::Value;

use crate::api::AppState;
use crate::config::Config;
use crate::db::DbError;
use crate::licensing::{self, NewLicense};
use crate::mail;

use super::state::{self, Applied, Graces};
use super::stripe_api::{StripeCallError, SubscriptionSnapshot};

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
    #[error("the body is not a Stripe event: {0}")]
    BadPayload(String),
    #[error("Stripe could not be asked about the event; it will be retried: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Internal(String),
}

impl From<DbError> for WebhookError {
    fn from(e: DbError) -> Self {
        WebhookError::Internal(e.to_string())
    }
}

impl From<rusqlite::Error> for WebhookError {
    fn from(e: rusqlite::Error) -> Self {
        WebhookError::Internal(e.to_string())
    }
}

impl From<licensing::LicenseError> for WebhookError {
    fn from(e: licensing::LicenseError) -> Self {
        WebhookError::Internal(e.to_string())
    }
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
    pub fn as_str(&self) -> &str {
        match self {
            Outcome::Applied => "applied",
            Outcome::Duplicate => "duplicate",
            Outcome::Stale => "stale",
            Outcome::Ignored(_) => "ignored",
        }
    }
}

/// A verified event.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub kind: String,
    pub created: i64,
    pub object: Value,
}

/// Checks the signature and reads the event.
pub fn verify(
    config: &Config,
    body: &[u8],
    signature: Option<&str>,
    now: i64,
) -> Result<Event, WebhookError> {
    let secret = config
        .stripe
        .as_ref()
        .and_then(|s| s.webhook_secret.as_ref())
        .ok_or(WebhookError::NotConfigured)?;
    let signature = signature
        .filter(|s| !s.trim().is_empty())
        .ok_or(WebhookError::MissingSignature)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| WebhookError::BadPayload("the body is not UTF-8".into()))?;
    // The library checks the signature, then the timestamp, then reads the
    // event into its typed model. Only the first two are the check: a
    // signed event its model cannot read (a type or field newer than the
    // library) is still Stripe's, and the issuer reads the few fields it
    // needs itself below.
    match stripe_webhook::Webhook::construct_event_with_timestamp(text, signature, secret, now) {
        Ok(_) => {}
        Err(stripe_webhook::WebhookError::BadParse(m)) => {
            tracing::debug!(reason = %m, "signed Stripe event outside the library's model");
        }
        Err(stripe_webhook::WebhookError::BadTimestamp(t)) => return Err(WebhookError::Stale(t)),
        Err(
            stripe_webhook::WebhookError::BadKey
            | stripe_webhook::WebhookError::BadHeader(_)
            | stripe_webhook::WebhookError::BadSignature,
        ) => return Err(WebhookError::BadSignature),
    }
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
    Ok(Event {
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

/// Applies a verified event. Stripe is asked first, outside the database
/// transaction, for what the event does not carry.
pub async fn process(state: &AppState, event: Event, now: i64) -> Result<Outcome, WebhookError> {
    // A repeat of an applied event is answered without asking Stripe.
    let id = event.id.clone();
    let seen: bool = state
        .db
        .run(move |c| {
            c.query_row(
                "SELECT EXISTS (SELECT 1 FROM stripe_events WHERE id = ?1)",
                [&id],
                |r| r.get(0),
            )
            .map_err(WebhookError::from)
        })
        .await?;
    if seen {
        return Ok(Outcome::Duplicate);
    }
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
    let config = std::sync::Arc::clone(&state.config);
    let (outcome, mailed) = state
        .db
        .run_write(move |c| apply(c, &config, &event, prefetched.as_ref(), now))
        .await?;
    if mailed {
        state.mailer.wake();
    }
    Ok(outcome)
}

fn graces(config: &Config) -> Graces {
    let secs = |d: std::time::Duration| i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
    Graces {
        billing: secs(config.billing_grace),
        past_due: secs(config.past_due_grace),
    }
}

/// The event and its effect, in one transaction. Returns the outcome and
/// whether a mail was queued.
fn apply(
    conn: &mut Connection,
    config: &Config,
    event: &Event,
    prefetched: Option<&SubscriptionSnapshot>,
    now: i64,
) -> Result<(Outcome, bool), WebhookError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let fresh = tx.execute(
        "INSERT INTO stripe_events (id, type, created, processed_at, outcome)
         VALUES (?1, ?2, ?3, ?4, 'processing') ON CONFLICT (id) DO NOTHING",
        params![event.id, event.kind, event.created, now],
    )?;
    if fresh == 0 {
        return Ok((Outcome::Duplicate, false));
    }
    let (outcome, mailed) = apply_event(&tx, config, event, prefetched, now)?;
    let recorded = match &outcome {
        Outcome::Ignored(why) => format!("ignored: {why}"),
        other => other.as_str().to_owned(),
    };
    tx.execute(
        "UPDATE stripe_events SET outcome = ?2 WHERE id = ?1",
        params![event.id, recorded],
    )?;
    tx.commit()?;
    Ok((outcome, mailed))
}

fn organization_of_customer(conn: &Connection, customer: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT id FROM organizations WHERE stripe_customer_id = ?1",
        [customer],
        |r| r.get(0),
    )
    .optional()
}

fn applied(a: Applied) -> Outcome {
    match a {
        Applied::Yes => Outcome::Applied,
        Applied::Stale => Outcome::Stale,
    }
}

fn apply_event(
    conn: &Connection,
    config: &Config,
    event: &Event,
    prefetched: Option<&SubscriptionSnapshot>,
    now: i64,
) -> Result<(Outcome, bool), WebhookError> {
    let Some(stripe) = config.stripe.as_ref() else {
        return Ok((Outcome::Ignored("Stripe is not configured".into()), false));
    };
    let prices = &stripe.prices;
    let graces = graces(config);
    let o = &event.object;
    let Some(customer) = id_of(&o["customer"]) else {
        return Ok((
            Outcome::Ignored(format!("{} has no customer", event.kind)),
            false,
        ));
    };
    let Some(org) = organization_of_customer(conn, &customer)? else {
        if matches!(
            event.kind.as_str(),
            "checkout.session.completed"
                | "customer.subscription.created"
                | "customer.subscription.updated"
                | "customer.subscription.deleted"
                | "invoice.paid"
                | "invoice.payment_failed"
        ) {
            tracing::warn!(event = %event.id, kind = %event.kind, %customer, "Stripe event for a customer this issuer does not know; ignored");
        }
        return Ok((Outcome::Ignored("unknown customer".into()), false));
    };
    match event.kind.as_str() {
        "checkout.session.completed" => {
            checkout_completed(conn, config, event, &org, prefetched, now)
        }
        "customer.subscription.created" | "customer.subscription.updated" => {
            let Some(snap) = snapshot(o) else {
                return Err(WebhookError::BadPayload(
                    "the subscription lacks id, customer or status".into(),
                ));
            };
            let a = state::apply_snapshot(conn, &org, &snap, event.created, now)?;
            state::sync_license(conn, &snap.id, prices, graces, now)?;
            Ok((applied(a), false))
        }
        "customer.subscription.deleted" => {
            let sub = id_of(&o["id"])
                .ok_or_else(|| WebhookError::BadPayload("the subscription has no id".into()))?;
            let a = state::record_deletion(conn, &org, &sub, &customer, event.created, now)?;
            state::sync_license(conn, &sub, prices, graces, now)?;
            Ok((applied(a), false))
        }
        "invoice.paid" | "invoice.payment_failed" => {
            let Some(sub) = invoice_subscription(o) else {
                return Ok((
                    Outcome::Ignored("the invoice is not for a subscription".into()),
                    false,
                ));
            };
            let a = if event.kind == "invoice.paid" {
                state::record_payment(
                    conn,
                    &org,
                    &sub,
                    &customer,
                    invoice_period_end(o),
                    event.created,
                    now,
                )?
            } else {
                state::record_failed_payment(conn, &org, &sub, &customer, event.created, now)?
            };
            state::sync_license(conn, &sub, prices, graces, now)?;
            Ok((applied(a), false))
        }
        other => Ok((Outcome::Ignored(format!("{other} is not handled")), false)),
    }
}

/// `checkout.session.completed`: the subscription (as Stripe has it now),
/// the organization's license, and the mail with its key.
fn checkout_completed(
    conn: &Connection,
    config: &Config,
    event: &Event,
    org: &str,
    snap: Option<&SubscriptionSnapshot>,
    now: i64,
) -> Result<(Outcome, bool), WebhookError> {
    let o = &event.object;
    let session_id = id_of(&o["id"])
        .ok_or_else(|| WebhookError::BadPayload("the Checkout Session has no id".into()))?;
    if o["mode"].as_str() != Some("subscription") {
        return Ok((
            Outcome::Ignored("not a subscription checkout".into()),
            false,
        ));
    }
    if !matches!(
        o["payment_status"].as_str(),
        Some("paid" | "no_payment_required")
    ) {
        return Ok((
            Outcome::Ignored("the checkout is not paid yet".into()),
            false,
        ));
    }
    let Some(snap) = snap else {
        return Err(WebhookError::BadPayload(
            "the Checkout Session has no subscription".into(),
        ));
    };
    let Some(stripe) = config.stripe.as_ref() else {
        return Ok((Outcome::Ignored("Stripe is not configured".into()), false));
    };
    state::apply_snapshot(conn, org, snap, event.created, now)?;
    let checkout: Option<(String, String)> = conn
        .query_row(
            "SELECT user_id, plan FROM checkouts WHERE id = ?1 AND organization_id = ?2",
            params![session_id, org],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    let existing: Option<String> = conn
        .query_row(
            "SELECT id FROM licenses WHERE stripe_subscription_id = ?1",
            [&snap.id],
            |r| r.get(0),
        )
        .optional()?;
    if existing.is_some() {
        state::sync_license(conn, &snap.id, &stripe.prices, graces(config), now)?;
        return Ok((Outcome::Applied, false));
    }
    // Who gets the key: the person who started the checkout, else the
    // organization's owner.
    let user_id = match &checkout {
        Some((user, _)) => Some(user.clone()),
        None => conn
            .query_row(
                "SELECT id FROM users WHERE organization_id = ?1 ORDER BY created_at LIMIT 1",
                [org],
                |r| r.get(0),
            )
            .optional()?,
    };
    let (email, org_name): (String, String) = match user_id {
        Some(uid) => conn.query_row(
            "SELECT u.email, o.name FROM users u JOIN organizations o ON o.id = u.organization_id
             WHERE u.id = ?1",
            [uid],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?,
        None => {
            return Ok((
                Outcome::Ignored("the organization has no user".into()),
                false,
            ));
        }
    };
    let plan = snap
        .price_id
        .as_deref()
        .and_then(|p| stripe.prices.plan_of(p))
        .map(|(plan, _)| plan)
        .or_else(|| checkout.as_ref().map(|(_, plan)| plan.as_str()))
        .and_then(crate::plans::find)
        .ok_or_else(|| {
            WebhookError::BadPayload(format!(
                "the subscription's price {} is none of the configured STRIPE_PRICE_*",
                snap.price_id.as_deref().unwrap_or("(none)")
            ))
        })?;
    let period_end = snap.current_period_end.unwrap_or(now);
    let (license, key) = licensing::create(
        conn,
        &NewLicense {
            email: &email,
            plan,
            expires_at: period_end.saturating_add(graces(config).billing),
            max_devices: None,
            organization_id: Some(org),
            stripe_subscription_id: Some(&snap.id),
        },
        now,
    )?;
    state::sync_license(conn, &snap.id, &stripe.prices, graces(config), now)?;
    conn.execute(
        "UPDATE checkouts SET license_id = ?2, completed_at = ?3,
             reveal_key = CASE WHEN browser_hash IS NOT NULL THEN ?4 END
         WHERE id = ?1",
        params![session_id, license.id, now, key.expose()],
    )?;
    let mail = mail::license_key_mail(
        config,
        &mail::LicenseMail {
            to: &email,
            key: key.expose(),
            plan_name: plan.name,
            organization_name: &org_name,
            renews_or_ends: &crate::api::rfc3339(period_end),
        },
    );
    mail::enqueue(conn, &mail, now)?;
    crate::audit::record(
        conn,
        &crate::audit::Event::new(now, "license_created", "ok")
            .actor(format!("stripe:{}", event.id))
            .subject("license", license.id.clone())
            .detail(format!("{} via checkout {session_id}", plan.id)),
    )?;
    Ok((Outcome::Applied, true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Overrides;
    use crate::db::Db;
    use serde_json::json;

    fn config(dir: &std::path::Path) -> Config {
        let d = dir.to_str().unwrap();
        Config::load(
            &[
                ("CODITECT_DATA_DIR", d),
                ("STRIPE_SECRET_KEY", "sk_test_unit"),
                ("STRIPE_WEBHOOK_SECRET", "whsec_unit"),
                ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
                ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
                ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
                ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
            ],
            &Overrides::default(),
            &mut Vec::new(),
        )
        .unwrap()
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failure_half_way_leaves_nothing_and_the_retry_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path());
        let db = Db::open(&dir.path().join("unit.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO organizations (id, name, stripe_customer_id, created_at)
                 VALUES ('org1', 'Acme', 'cus_1', 1);
             INSERT INTO users (id, email, password_hash, organization_id, created_at)
                 VALUES ('u1', 'owner@example.com', 'x', 'org1', 1);",
        )
        .unwrap();
        let event = Event {
            id: "evt_1".into(),
            kind: "checkout.session.completed".into(),
            created: 1_000,
            object: json!({"id": "cs_1", "mode": "subscription", "payment_status": "paid",
                           "customer": "cus_1", "subscription": "sub_1"}),
        };
        let snap = SubscriptionSnapshot {
            id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status: "active".into(),
            price_id: Some("price_pm".into()),
            quantity: 1,
            current_period_end: Some(50_000),
            cancel_at_period_end: false,
        };
        // The last step (queueing the mail) fails, as a full disk would.
        conn.execute_batch(
            "CREATE TRIGGER fail_mail BEFORE INSERT ON email_outbox
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        assert!(apply(&mut conn, &cfg, &event, Some(&snap), 2_000).is_err());
        for table in [
            "stripe_events",
            "licenses",
            "subscriptions",
            "email_outbox",
            "audit_log",
        ] {
            assert_eq!(
                count(&conn, table),
                0,
                "{table} kept part of a failed event"
            );
        }
        // Stripe retries once the problem is gone: applied once, then a duplicate.
        conn.execute_batch("DROP TRIGGER fail_mail").unwrap();
        let (outcome, mailed) = apply(&mut conn, &cfg, &event, Some(&snap), 3_000).unwrap();
        assert_eq!((outcome, mailed), (Outcome::Applied, true));
        let (outcome, mailed) = apply(&mut conn, &cfg, &event, Some(&snap), 4_000).unwrap();
        assert_eq!((outcome, mailed), (Outcome::Duplicate, false));
        for table in ["stripe_events", "licenses", "subscriptions", "email_outbox"] {
            assert_eq!(count(&conn, table), 1, "{table}");
        }
        let expires: i64 = conn
            .query_row("SELECT expires_at FROM licenses", [], |r| r.get(0))
            .unwrap();
        assert_eq!(
            expires,
            50_000 + 2 * 86_400,
            "period end plus BILLING_GRACE"
        );
    }

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
