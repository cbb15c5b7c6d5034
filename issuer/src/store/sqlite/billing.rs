//! Billing on SQLite: Stripe events applied exactly once, subscription
//! state and the licenses it decides, customers, checkouts, and the
//! shown-once key of a checkout.
//!
//! The order-safety rules are the domain's (`domain::billing`); here they
//! are applied inside the transaction that records the event.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{licenses, scrub};
use crate::domain::StorageError;
use crate::domain::audit::Event;
use crate::domain::billing::{
    Applied, ApplyError, BillingChange, BillingRules, CheckoutRecord, LicenseMailFacts, Outcome,
    REVEAL_WINDOW, Reveal, StripeEvent, SubscriptionSnapshot, license_end, license_status_for,
    may_replace, seats,
};
use crate::domain::license::{LicenseError, NewLicense, project_limit_column};

#[derive(Debug)]
struct Row {
    status: String,
    state_at: i64,
    past_due_since: Option<i64>,
}

fn row(conn: &Connection, id: &str) -> rusqlite::Result<Option<Row>> {
    conn.query_row(
        "SELECT status, state_at, past_due_since FROM subscriptions WHERE stripe_subscription_id = ?1",
        [id],
        |r| {
            Ok(Row {
                status: r.get(0)?,
                state_at: r.get(1)?,
                past_due_since: r.get(2)?,
            })
        },
    )
    .optional()
}

/// Applies a whole subscription (from `customer.subscription.*` or read
/// back from Stripe) as of `at`.
pub fn apply_snapshot(
    conn: &Connection,
    organization_id: &str,
    s: &SubscriptionSnapshot,
    at: i64,
    now: i64,
) -> rusqlite::Result<Applied> {
    let existing = row(conn, &s.id)?;
    let past_due_since = |old: Option<i64>| (s.status == "past_due").then(|| old.unwrap_or(at));
    let ended_at = crate::domain::billing::is_terminal(&s.status).then_some(at);
    match existing {
        None => {
            conn.execute(
                "INSERT INTO subscriptions (id, organization_id, stripe_subscription_id,
                     stripe_customer_id, status, price_id, current_period_end,
                     cancel_at_period_end, updated_at, state_at, quantity, past_due_since, ended_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                params![
                    uuid::Uuid::new_v4().to_string(),
                    organization_id,
                    s.id,
                    s.customer_id,
                    s.status,
                    s.price_id,
                    s.current_period_end,
                    s.cancel_at_period_end,
                    now,
                    at,
                    s.quantity,
                    past_due_since(None),
                    ended_at,
                ],
            )?;
            Ok(Applied::Yes)
        }
        Some(old) if !may_replace(&old.status, old.state_at, at) => Ok(Applied::Stale),
        Some(old) => {
            conn.execute(
                "UPDATE subscriptions SET status = ?2, price_id = coalesce(?3, price_id),
                     current_period_end = coalesce(?4, current_period_end),
                     cancel_at_period_end = ?5, quantity = ?6, state_at = ?7,
                     past_due_since = ?8, ended_at = ?9, updated_at = ?10
                 WHERE stripe_subscription_id = ?1",
                params![
                    s.id,
                    s.status,
                    s.price_id,
                    s.current_period_end,
                    s.cancel_at_period_end,
                    s.quantity,
                    at,
                    past_due_since(old.past_due_since),
                    ended_at,
                    now,
                ],
            )?;
            Ok(Applied::Yes)
        }
    }
}

/// A paid invoice (`invoice.paid`): the paid period ends at `period_end`
/// (never moved backwards), and a past-due subscription is active again.
pub fn record_payment(
    conn: &Connection,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    period_end: Option<i64>,
    at: i64,
    now: i64,
) -> rusqlite::Result<Applied> {
    ensure_row(conn, organization_id, subscription_id, customer_id, now)?;
    conn.execute(
        "UPDATE subscriptions SET
             current_period_end = max(coalesce(current_period_end, 0), coalesce(?2, 0)),
             updated_at = ?3
         WHERE stripe_subscription_id = ?1",
        params![subscription_id, period_end, now],
    )?;
    conn.execute(
        "UPDATE subscriptions SET status = 'active', past_due_since = NULL, state_at = ?2
         WHERE stripe_subscription_id = ?1 AND status IN ('past_due', 'unpaid') AND state_at <= ?2",
        params![subscription_id, at],
    )?;
    Ok(Applied::Yes)
}

/// A failed payment (`invoice.payment_failed`): the subscription is past
/// due from the first failure on.
pub fn record_failed_payment(
    conn: &Connection,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    at: i64,
    now: i64,
) -> rusqlite::Result<Applied> {
    ensure_row(conn, organization_id, subscription_id, customer_id, now)?;
    let old = row(conn, subscription_id)?;
    match old {
        Some(old) if !may_replace(&old.status, old.state_at, at) => Ok(Applied::Stale),
        _ => {
            conn.execute(
                "UPDATE subscriptions SET status = 'past_due',
                     past_due_since = coalesce(past_due_since, ?2), state_at = ?2, updated_at = ?3
                 WHERE stripe_subscription_id = ?1",
                params![subscription_id, at, now],
            )?;
            Ok(Applied::Yes)
        }
    }
}

/// `customer.subscription.deleted`: the subscription has ended for good,
/// whatever order the events come in.
pub fn record_deletion(
    conn: &Connection,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    at: i64,
    now: i64,
) -> rusqlite::Result<Applied> {
    ensure_row(conn, organization_id, subscription_id, customer_id, now)?;
    conn.execute(
        "UPDATE subscriptions SET status = 'canceled', ended_at = coalesce(ended_at, ?2),
             state_at = max(state_at, ?2), cancel_at_period_end = 0, updated_at = ?3
         WHERE stripe_subscription_id = ?1",
        params![subscription_id, at, now],
    )?;
    Ok(Applied::Yes)
}

/// A row for a subscription first heard of through an invoice: status
/// `incomplete` and `state_at` 0, so the first real snapshot overrides it.
fn ensure_row(
    conn: &Connection,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO subscriptions (id, organization_id, stripe_subscription_id, stripe_customer_id,
             status, updated_at, state_at)
         VALUES (?1, ?2, ?3, ?4, 'incomplete', ?5, 0)
         ON CONFLICT (stripe_subscription_id) DO NOTHING",
        params![
            uuid::Uuid::new_v4().to_string(),
            organization_id,
            subscription_id,
            customer_id,
            now
        ],
    )?;
    Ok(())
}

/// Brings the license of a subscription (if it has one yet) in line with
/// it: plan and seats from the price and quantity, status, and expiry at
/// the end of the paid period plus the grace, or, past due, at the end of
/// the past-due grace. A revoked license stays revoked.
pub fn sync_license(
    conn: &Connection,
    subscription_id: &str,
    rules: &BillingRules,
    now: i64,
) -> Result<(), LicenseError> {
    let sub = conn
        .query_row(
            "SELECT status, price_id, quantity, current_period_end, past_due_since
             FROM subscriptions WHERE stripe_subscription_id = ?1",
            [subscription_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, Option<String>>(1)?,
                    r.get::<_, u32>(2)?,
                    r.get::<_, Option<i64>>(3)?,
                    r.get::<_, Option<i64>>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((status, price_id, quantity, period_end, past_due_since)) = sub else {
        return Ok(());
    };
    let license = conn
        .query_row(
            "SELECT id, tier, status, expires_at FROM licenses WHERE stripe_subscription_id = ?1",
            [subscription_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            },
        )
        .optional()?;
    let Some((license_id, tier, license_status, expires_at)) = license else {
        return Ok(());
    };
    if license_status == "revoked" {
        return Ok(());
    }
    let plan = price_id
        .as_deref()
        .and_then(|p| (rules.plan_of_price)(p))
        .or_else(|| crate::domain::plans::find(&tier));
    let Some(plan) = plan else {
        return Ok(());
    };
    let ent = plan.entitlements;
    let max_projects = project_limit_column(ent.max_projects);
    let new_status = license_status_for(&status);
    let new_expiry = license_end(
        &status,
        past_due_since,
        period_end,
        rules.graces,
        expires_at,
    );
    conn.execute(
        "UPDATE licenses SET tier = ?2, max_activations = ?3, max_projects = ?4, ai_requests = ?5,
             status = ?6, expires_at = ?7, updated_at = ?8
         WHERE id = ?1",
        params![
            license_id,
            plan.id,
            seats(plan, quantity),
            max_projects,
            ent.ai_requests,
            new_status,
            new_expiry,
            now,
        ],
    )?;
    Ok(())
}

/// The event and its effect, in one transaction. Returns the outcome and
/// whether a mail was queued.
pub(super) fn apply_event(
    conn: &mut Connection,
    event: &StripeEvent,
    rules: &BillingRules,
    now: i64,
) -> Result<(Outcome, bool), ApplyError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let fresh = tx.execute(
        "INSERT INTO stripe_events (id, type, created, processed_at, outcome)
         VALUES (?1, ?2, ?3, ?4, 'processing') ON CONFLICT (id) DO NOTHING",
        params![event.id, event.kind, event.created, now],
    )?;
    if fresh == 0 {
        return Ok((Outcome::Duplicate, false));
    }
    let (outcome, mailed) = apply_change(&tx, event, rules, now)?;
    tx.execute(
        "UPDATE stripe_events SET outcome = ?2 WHERE id = ?1",
        params![event.id, outcome.recorded()],
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

fn apply_change(
    conn: &Connection,
    event: &StripeEvent,
    rules: &BillingRules,
    now: i64,
) -> Result<(Outcome, bool), ApplyError> {
    let Some(customer) = event.change.customer() else {
        if let BillingChange::Ignore(why) = &event.change {
            return Ok((Outcome::Ignored(why.clone()), false));
        }
        return Ok((Outcome::Ignored("no customer".into()), false));
    };
    let Some(org) = organization_of_customer(conn, customer)? else {
        tracing::warn!(event = %event.id, kind = %event.kind, %customer, "Stripe event for a customer this issuer does not know; ignored");
        return Ok((Outcome::Ignored("unknown customer".into()), false));
    };
    let license_error = |e: LicenseError| match e {
        LicenseError::Storage(s) => ApplyError::Storage(s),
        other => ApplyError::Storage(StorageError::Failed(other.to_string())),
    };
    let at = event.created;
    match &event.change {
        BillingChange::CheckoutCompleted {
            session_id,
            subscription,
            ..
        } => checkout_completed(conn, event, rules, &org, session_id, subscription, now),
        BillingChange::SubscriptionChanged { snapshot } => {
            let a = apply_snapshot(conn, &org, snapshot, at, now)?;
            sync_license(conn, &snapshot.id, rules, now).map_err(license_error)?;
            Ok((a.into(), false))
        }
        BillingChange::SubscriptionDeleted {
            subscription_id, ..
        } => {
            let a = record_deletion(conn, &org, subscription_id, customer, at, now)?;
            sync_license(conn, subscription_id, rules, now).map_err(license_error)?;
            Ok((a.into(), false))
        }
        BillingChange::InvoicePaid {
            subscription_id,
            period_end,
            ..
        } => {
            let a = record_payment(conn, &org, subscription_id, customer, *period_end, at, now)?;
            sync_license(conn, subscription_id, rules, now).map_err(license_error)?;
            Ok((a.into(), false))
        }
        BillingChange::PaymentFailed {
            subscription_id, ..
        } => {
            let a = record_failed_payment(conn, &org, subscription_id, customer, at, now)?;
            sync_license(conn, subscription_id, rules, now).map_err(license_error)?;
            Ok((a.into(), false))
        }
        BillingChange::Malformed { reason, .. } => Err(ApplyError::BadPayload(reason.clone())),
        BillingChange::Ignore(why) => Ok((Outcome::Ignored(why.clone()), false)),
    }
}

/// `checkout.session.completed`: the subscription (as Stripe has it now),
/// the organization's license, and the mail with its key.
fn checkout_completed(
    conn: &Connection,
    event: &StripeEvent,
    rules: &BillingRules,
    org: &str,
    session_id: &str,
    snap: &SubscriptionSnapshot,
    now: i64,
) -> Result<(Outcome, bool), ApplyError> {
    let license_error = |e: LicenseError| match e {
        LicenseError::Storage(s) => ApplyError::Storage(s),
        other => ApplyError::Storage(StorageError::Failed(other.to_string())),
    };
    apply_snapshot(conn, org, snap, event.created, now)?;
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
        sync_license(conn, &snap.id, rules, now).map_err(license_error)?;
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
        .and_then(|p| (rules.plan_of_price)(p))
        .or_else(|| {
            checkout
                .as_ref()
                .and_then(|(_, plan)| crate::domain::plans::find(plan))
        })
        .ok_or_else(|| {
            ApplyError::BadPayload(format!(
                "the subscription's price {} is none of the configured STRIPE_PRICE_*",
                snap.price_id.as_deref().unwrap_or("(none)")
            ))
        })?;
    let period_end = snap.current_period_end.unwrap_or(now);
    let (license, key) = licenses::create(
        conn,
        &NewLicense {
            email: &email,
            plan,
            expires_at: period_end.saturating_add(rules.graces.billing),
            max_devices: None,
            organization_id: Some(org),
            stripe_subscription_id: Some(&snap.id),
        },
        now,
    )
    .map_err(license_error)?;
    sync_license(conn, &snap.id, rules, now).map_err(license_error)?;
    conn.execute(
        "UPDATE checkouts SET license_id = ?2, completed_at = ?3,
             reveal_key = CASE WHEN browser_hash IS NOT NULL THEN ?4 END
         WHERE id = ?1",
        params![session_id, license.id, now, key.expose()],
    )?;
    let mail = (rules.license_mail)(LicenseMailFacts {
        to: &email,
        key: key.expose(),
        plan_name: plan.name,
        organization_name: &org_name,
        period_end,
    });
    super::outbox::enqueue(conn, &mail, now)?;
    super::audit::record(
        conn,
        &Event::new(now, "license_created", "ok")
            .actor(format!("stripe:{}", event.id))
            .subject("license", license.id.clone())
            .detail(format!("{} via checkout {session_id}", plan.id)),
    )?;
    Ok((Outcome::Applied, true))
}

pub(super) fn stripe_event_seen(conn: &Connection, id: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM stripe_events WHERE id = ?1)",
        [id],
        |r| r.get(0),
    )
}

pub(super) fn customer_of(conn: &Connection, org: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT stripe_customer_id FROM organizations WHERE id = ?1",
        [org],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

pub(super) fn has_live_subscription(conn: &Connection, org: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE organization_id = ?1
             AND status IN ('active', 'trialing', 'past_due'))",
        [org],
        |r| r.get(0),
    )
}

pub(super) fn set_customer(
    conn: &Connection,
    org: &str,
    customer: &str,
) -> Result<String, StorageError> {
    conn.execute(
        "UPDATE organizations SET stripe_customer_id = ?2
         WHERE id = ?1 AND stripe_customer_id IS NULL",
        params![org, customer],
    )?;
    customer_of(conn, org)?
        .ok_or_else(|| StorageError::Failed(format!("organization {org} does not exist")))
}

pub(super) fn open_checkouts(
    conn: &Connection,
    org: &str,
    since: i64,
) -> rusqlite::Result<Vec<String>> {
    let mut stmt = conn.prepare(
        "SELECT id FROM checkouts WHERE organization_id = ?1
         AND completed_at IS NULL AND expired_at IS NULL AND created_at > ?2",
    )?;
    let ids = stmt.query_map(params![org, since], |r| r.get(0))?;
    ids.collect()
}

pub(super) fn checkout_expired(conn: &Connection, id: &str, now: i64) -> rusqlite::Result<()> {
    conn.execute(
        "UPDATE checkouts SET expired_at = ?2 WHERE id = ?1 AND completed_at IS NULL",
        params![id, now],
    )?;
    Ok(())
}

pub(super) fn record_checkout(
    conn: &Connection,
    c: &CheckoutRecord,
    now: i64,
) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
             browser_hash, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
         ON CONFLICT (id) DO NOTHING",
        params![
            c.session_id,
            c.organization_id,
            c.user_id,
            c.plan,
            c.interval,
            c.browser_hash,
            now
        ],
    )?;
    Ok(())
}

/// The key of a completed checkout for the browser that started it, once.
pub(super) fn reveal(
    conn: &mut Connection,
    session_id: &str,
    browser: &str,
    now: i64,
) -> Result<Reveal, StorageError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    type RowT = (Option<String>, Option<String>, Option<String>, Option<i64>);
    let row: Option<RowT> = tx
        .query_row(
            "SELECT browser_hash, license_id, reveal_key, revealed_at
             FROM checkouts WHERE id = ?1",
            [session_id],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    let Some((hash, license_id, key, revealed_at)) = row else {
        return Ok(Reveal::Unknown);
    };
    if hash.as_deref() != Some(browser) {
        return Ok(Reveal::Unknown);
    }
    let Some(license_id) = license_id else {
        return Ok(Reveal::Pending);
    };
    let license = licenses::get(&tx, &license_id)
        .map_err(|e| StorageError::Failed(e.to_string()))?
        .ok_or_else(|| StorageError::Failed("checkout names a missing license".into()))?;
    let result = match (key, revealed_at) {
        (Some(key), None) => {
            tx.execute(
                "UPDATE checkouts SET reveal_key = NULL, revealed_at = ?2 WHERE id = ?1",
                params![session_id, now],
            )?;
            Reveal::Key {
                key,
                plan: crate::domain::plans::find(&license.tier)
                    .map_or(license.tier.clone(), |p| p.name.to_owned()),
                email: license.email.clone(),
                expires_at: license.expires_at,
            }
        }
        _ => Reveal::AlreadyShown {
            email: license.email.clone(),
            key_hint: license.key_hint.clone(),
        },
    };
    tx.commit()?;
    if matches!(result, Reveal::Key { .. }) {
        scrub(conn);
    }
    Ok(result)
}

/// Wipes the keys that waited longer than [`REVEAL_WINDOW`] to be shown.
pub(super) fn wipe_stale_reveals(conn: &Connection, now: i64) -> rusqlite::Result<usize> {
    let wiped = conn.execute(
        "UPDATE checkouts SET reveal_key = NULL
         WHERE reveal_key IS NOT NULL AND completed_at < ?1",
        [now.saturating_sub(REVEAL_WINDOW)],
    )?;
    if wiped > 0 {
        scrub(conn);
    }
    Ok(wiped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Db;

    use crate::domain::billing::Graces;
    use crate::domain::mail::Mail;
    use std::sync::Arc;

    /// The test prices (`price_sm` … `price_pa`), graces of 100 s (paid
    /// period) and 1,000 s (past due), and a mail that names the key.
    fn rules_with(graces: Graces) -> BillingRules {
        BillingRules {
            plan_of_price: Arc::new(|price: &str| match price {
                "price_sm" | "price_sa" => crate::domain::plans::find("pilot-starter"),
                "price_pm" | "price_pa" => crate::domain::plans::find("pilot-professional"),
                _ => None,
            }),
            graces,
            license_mail: Arc::new(|f: LicenseMailFacts<'_>| Mail {
                kind: "license_key",
                to: f.to.to_owned(),
                subject: format!("Your key ({})", f.plan_name),
                body: format!("key {}", f.key),
            }),
        }
    }

    fn rules() -> BillingRules {
        rules_with(Graces {
            billing: 100,
            past_due: 1_000,
        })
    }

    fn snap(status: &str, price: &str, quantity: u32, end: i64) -> SubscriptionSnapshot {
        SubscriptionSnapshot {
            id: "sub_1".into(),
            customer_id: "cus_1".into(),
            status: status.into(),
            price_id: Some(price.into()),
            quantity,
            current_period_end: Some(end),
            cancel_at_period_end: false,
        }
    }

    fn setup() -> (
        tempfile::TempDir,
        r2d2::PooledConnection<r2d2_sqlite::SqliteConnectionManager>,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("state.sqlite3")).unwrap();
        let conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO organizations (id, name, stripe_customer_id, created_at)
                 VALUES ('org1', 'Acme', 'cus_1', 1);
             INSERT INTO licenses (id, key_hash, key_hint, organization_id, email, tier, status,
                 expires_at, max_activations, max_projects, ai_requests, stripe_subscription_id,
                 created_at, updated_at)
             VALUES ('lic1', printf('%064d', 1), 'AAAA', 'org1', 'a@example.com', 'pilot-starter',
                 'active', 0, 1, 3, 100, 'sub_1', 1, 1);",
        )
        .unwrap();
        (dir, conn)
    }

    fn license(conn: &Connection) -> (String, String, i64, i64) {
        conn.query_row(
            "SELECT tier, status, max_activations, expires_at FROM licenses",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .unwrap()
    }

    fn apply(conn: &Connection, s: &SubscriptionSnapshot, at: i64) -> Applied {
        let a = apply_snapshot(conn, "org1", s, at, at).unwrap();
        sync_license(conn, &s.id, &rules(), at).unwrap();
        a
    }

    #[test]
    fn newer_states_win_whatever_the_order() {
        let (_dir, conn) = setup();
        assert_eq!(
            apply(&conn, &snap("active", "price_pm", 2, 5_000), 20),
            Applied::Yes
        );
        assert_eq!(
            apply(&conn, &snap("active", "price_sm", 1, 4_000), 10),
            Applied::Stale
        );
        assert_eq!(
            license(&conn),
            ("pilot-professional".into(), "active".into(), 6, 5_100)
        );
        // The same second is applied in delivery order.
        assert_eq!(
            apply(&conn, &snap("active", "price_pm", 1, 5_000), 20),
            Applied::Yes
        );
        assert_eq!(license(&conn).2, 3);
    }

    #[test]
    fn payments_move_the_period_forward_only_and_clear_past_due() {
        let (_dir, conn) = setup();
        apply(&conn, &snap("active", "price_sm", 1, 5_000), 10);
        record_failed_payment(&conn, "org1", "sub_1", "cus_1", 30, 30).unwrap();
        sync_license(&conn, "sub_1", &rules(), 30).unwrap();
        assert_eq!(
            license(&conn).3,
            30 + 1_000,
            "past due: the grace from the failure"
        );
        record_payment(&conn, "org1", "sub_1", "cus_1", Some(9_000), 40, 40).unwrap();
        sync_license(&conn, "sub_1", &rules(), 40).unwrap();
        assert_eq!(license(&conn).3, 9_100);
        // An older invoice.paid does not move it back.
        record_payment(&conn, "org1", "sub_1", "cus_1", Some(5_000), 35, 41).unwrap();
        sync_license(&conn, "sub_1", &rules(), 41).unwrap();
        assert_eq!(license(&conn).3, 9_100);
        let status: String = conn
            .query_row("SELECT status FROM subscriptions", [], |r| r.get(0))
            .unwrap();
        assert_eq!(status, "active");
    }

    #[test]
    fn paused_suspends_deleted_ends_for_good_and_revoked_stays_revoked() {
        let (_dir, conn) = setup();
        apply(&conn, &snap("paused", "price_sm", 1, 5_000), 10);
        assert_eq!(license(&conn).1, "suspended");
        apply(&conn, &snap("active", "price_sm", 1, 5_000), 11);
        assert_eq!(license(&conn).1, "active");
        record_deletion(&conn, "org1", "sub_1", "cus_1", 12, 12).unwrap();
        sync_license(&conn, "sub_1", &rules(), 12).unwrap();
        assert_eq!(license(&conn).1, "canceled");
        assert_eq!(
            apply(&conn, &snap("active", "price_sm", 1, 9_000), 99),
            Applied::Stale,
            "a deleted subscription never comes back"
        );
        assert_eq!(license(&conn).1, "canceled");
        conn.execute("UPDATE licenses SET status = 'revoked'", [])
            .unwrap();
        conn.execute("DELETE FROM subscriptions", []).unwrap();
        apply(&conn, &snap("active", "price_pm", 1, 9_000), 100);
        assert_eq!(license(&conn).1, "revoked");
    }

    fn count(conn: &Connection, table: &str) -> i64 {
        conn.query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn a_failure_half_way_leaves_nothing_and_the_retry_applies_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("unit.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO organizations (id, name, stripe_customer_id, created_at)
                 VALUES ('org1', 'Acme', 'cus_1', 1);
             INSERT INTO users (id, email, password_hash, organization_id, created_at)
                 VALUES ('u1', 'owner@example.com', 'x', 'org1', 1);",
        )
        .unwrap();
        let event = StripeEvent {
            id: "evt_1".into(),
            kind: "checkout.session.completed".into(),
            created: 1_000,
            change: BillingChange::CheckoutCompleted {
                customer: "cus_1".into(),
                session_id: "cs_1".into(),
                subscription: SubscriptionSnapshot {
                    id: "sub_1".into(),
                    customer_id: "cus_1".into(),
                    status: "active".into(),
                    price_id: Some("price_pm".into()),
                    quantity: 1,
                    current_period_end: Some(50_000),
                    cancel_at_period_end: false,
                },
            },
        };
        let rules = rules_with(Graces {
            billing: 2 * 86_400,
            past_due: 7 * 86_400,
        });
        // The last step (queueing the mail) fails, as a full disk would.
        conn.execute_batch(
            "CREATE TRIGGER fail_mail BEFORE INSERT ON email_outbox
             BEGIN SELECT RAISE(ABORT, 'disk full'); END;",
        )
        .unwrap();
        assert!(apply_event(&mut conn, &event, &rules, 2_000).is_err());
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
        let (outcome, mailed) = apply_event(&mut conn, &event, &rules, 3_000).unwrap();
        assert_eq!((outcome, mailed), (Outcome::Applied, true));
        let (outcome, mailed) = apply_event(&mut conn, &event, &rules, 4_000).unwrap();
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
    fn keys_never_shown_are_wiped_after_the_reveal_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("reveal.sqlite3")).unwrap();
        let conn = db.conn().unwrap();
        conn.execute_batch(
            "INSERT INTO organizations (id, name, created_at) VALUES ('org1', 'Acme', 1);
             INSERT INTO users (id, email, password_hash, organization_id, created_at)
                 VALUES ('u1', 'a@example.com', 'x', 'org1', 1);
             INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
                 browser_hash, reveal_key, created_at, completed_at)
             VALUES ('cs_1', 'org1', 'u1', 'pilot-starter', 'month', 'h',
                 'CODITECT-PILOT-AAAA-BBBB-CCCC', 900, 1000);",
        )
        .unwrap();
        let key = |c: &Connection| -> Option<String> {
            c.query_row("SELECT reveal_key FROM checkouts", [], |r| r.get(0))
                .unwrap()
        };
        assert_eq!(
            wipe_stale_reveals(&conn, 1000 + REVEAL_WINDOW - 1).unwrap(),
            0
        );
        assert!(key(&conn).is_some(), "still within the window");
        assert_eq!(
            wipe_stale_reveals(&conn, 1000 + REVEAL_WINDOW + 1).unwrap(),
            1
        );
        assert_eq!(key(&conn), None);
    }
}
