//! Billing on SQLite: Stripe events applied exactly once, and the
//! subscription state and the licenses it decides. Customers, checkouts
//! and the shown-once key of a checkout are in `checkouts.rs`; the tests
//! are in `billing/tests.rs`.
//!
//! The order-safety rules are the domain's (`domain::billing`); here they
//! are applied inside the transaction that records the event.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::licenses;
use crate::domain::StorageError;
use crate::domain::audit::Event;
use crate::domain::billing::{
    Applied, ApplyError, BillingChange, BillingRules, LicenseMailFacts, Outcome, StripeEvent,
    SubscriptionSnapshot, license_end, license_status_for, may_replace, paid_license, seats,
};
use crate::domain::license::{LicenseError, project_limit_column};
use crate::domain::license_key::KeyPepper;

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
            "SELECT id, tier, status, expires_at, max_activations FROM licenses
             WHERE stripe_subscription_id = ?1",
            [subscription_id],
            |r| {
                Ok((
                    r.get::<_, String>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, String>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, u32>(4)?,
                ))
            },
        )
        .optional()?;
    let Some((license_id, tier, license_status, expires_at, old_seats)) = license else {
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
    let new_seats = seats(plan, quantity);
    if new_seats < old_seats {
        // The machines that lose their seat (domain::license::
        // seat_rank_allowed: the latest activated), recorded with the
        // change that took it.
        conn.execute(
            "INSERT INTO audit_log (at, event, outcome, actor, subject_type, subject_id, detail)
             SELECT ?2, 'seat_lost', 'downgrade', 'stripe', 'activation', a.id,
                    'license ' || a.license_id || ' now allows ' || ?3 || ' machines'
             FROM activations a WHERE a.license_id = ?1 AND a.status = 'active'
             ORDER BY a.activated_at, a.id LIMIT -1 OFFSET ?3",
            params![license_id, now, new_seats],
        )?;
    }
    Ok(())
}

/// The event and its effect, in one transaction. Returns the outcome and
/// whether a mail was queued.
pub(super) fn apply_event(
    conn: &mut Connection,
    event: &StripeEvent,
    rules: &BillingRules,
    pepper: &KeyPepper,
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
    let (outcome, mailed) = apply_change(&tx, event, rules, pepper, now)?;
    super::stats::record_event(&tx, event, &outcome, now)?;
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
    pepper: &KeyPepper,
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
        } => checkout_completed(
            conn,
            event,
            rules,
            pepper,
            &org,
            session_id,
            subscription,
            now,
        ),
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
#[allow(clippy::too_many_arguments)]
fn checkout_completed(
    conn: &Connection,
    event: &StripeEvent,
    rules: &BillingRules,
    pepper: &KeyPepper,
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
    let new = paid_license(
        snap,
        checkout.as_ref().map(|(_, plan)| plan.as_str()),
        &email,
        org,
        rules,
        now,
    )?;
    let (plan, period_end) = (new.plan, snap.current_period_end.unwrap_or(now));
    let (license, key) = licenses::create(conn, &new, pepper, now).map_err(license_error)?;
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

#[cfg(test)]
mod tests;
