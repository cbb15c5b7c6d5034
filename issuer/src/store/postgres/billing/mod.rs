//! Billing on PostgreSQL: Stripe events applied exactly once, and the
//! subscription state and the licenses it decides. Customers, checkouts
//! and the shown-once key of a checkout, and the completion of a checkout
//! (its license and key mail), are in `checkouts.rs`; the tests
//! are in `billing/tests.rs`.
//!
//! The order-safety rules are the domain's (`domain::billing`); here they
//! are applied inside the transaction that records the event, as on
//! SQLite. Several issuer processes may apply events at once, so:
//!
//! - the event's row is inserted first, with `ON CONFLICT DO NOTHING`: a
//!   simultaneous delivery of the same event waits on the primary key
//!   until the first commits, then finds it there (a `Duplicate`), or, if
//!   the first rolled back, applies it itself;
//! - every event of a subscription takes a row lock on the subscription
//!   (`SELECT … FOR UPDATE`, or the insert that creates the row) before it
//!   reads its state, so events of one subscription take turns and the
//!   order rule (`state_at`) holds whichever commits first;
//! - the license is locked before it is brought in line, so a revocation
//!   in between is never overwritten.

mod checkouts;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{PgStore, column, to_u32};
use crate::domain::StorageError;
use crate::domain::billing::{
    Applied, ApplyError, BillingChange, BillingRules, CheckoutRecord, Outcome, Reveal, StripeEvent,
    SubscriptionSnapshot, is_terminal, license_end, license_status_for, may_replace, seats,
};
use crate::domain::license::{LicenseError, project_limit_column};
use crate::domain::license_key::KeyPepper;
use crate::domain::stats::PilotFacts;
use crate::store::Billing;

/// The status fields of a stored subscription.
#[derive(Debug)]
struct SubscriptionRow {
    status: String,
    state_at: i64,
    past_due_since: Option<i64>,
}

/// The stored subscription, locked until the transaction ends.
async fn lock_subscription<C: GenericClient>(
    client: &C,
    subscription_id: &str,
) -> Result<Option<SubscriptionRow>, StorageError> {
    let stmt = client
        .prepare_cached(
            "SELECT status, state_at, past_due_since FROM subscriptions
             WHERE stripe_subscription_id = $1 FOR UPDATE",
        )
        .await?;
    match client.query_opt(&stmt, &[&subscription_id]).await? {
        Some(r) => Ok(Some(SubscriptionRow {
            status: column(&r, 0)?,
            state_at: column(&r, 1)?,
            past_due_since: column(&r, 2)?,
        })),
        None => Ok(None),
    }
}

/// Applies a whole subscription (from `customer.subscription.*` or read
/// back from Stripe) as of `at`.
async fn apply_snapshot<C: GenericClient>(
    client: &C,
    organization_id: &str,
    s: &SubscriptionSnapshot,
    at: i64,
    now: i64,
) -> Result<Applied, StorageError> {
    let past_due_since = |old: Option<i64>| (s.status == "past_due").then(|| old.unwrap_or(at));
    let ended_at = is_terminal(&s.status).then_some(at);
    let old = match lock_subscription(client, &s.id).await? {
        Some(old) => old,
        None => {
            let stmt = client
                .prepare_cached(
                    "INSERT INTO subscriptions (id, organization_id, stripe_subscription_id,
                         stripe_customer_id, status, price_id, current_period_end,
                         cancel_at_period_end, updated_at, state_at, quantity, past_due_since,
                         ended_at)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
                     ON CONFLICT (stripe_subscription_id) DO NOTHING
                     RETURNING id",
                )
                .await?;
            let inserted = client
                .query_opt(
                    &stmt,
                    &[
                        &uuid::Uuid::new_v4().to_string(),
                        &organization_id,
                        &s.id,
                        &s.customer_id,
                        &s.status,
                        &s.price_id,
                        &s.current_period_end,
                        &s.cancel_at_period_end,
                        &now,
                        &at,
                        &i64::from(s.quantity),
                        &past_due_since(None),
                        &ended_at,
                    ],
                )
                .await?;
            if inserted.is_some() {
                return Ok(Applied::Yes);
            }
            // Another event of this subscription created the row (and
            // committed) meanwhile: its state is the stored one now.
            lock_subscription(client, &s.id).await?.ok_or_else(|| {
                StorageError::Failed(format!("subscription {} vanished while applied", s.id))
            })?
        }
    };
    if !may_replace(&old.status, old.state_at, at) {
        return Ok(Applied::Stale);
    }
    let stmt = client
        .prepare_cached(
            "UPDATE subscriptions SET status = $2, price_id = coalesce($3, price_id),
                 current_period_end = coalesce($4, current_period_end),
                 cancel_at_period_end = $5, quantity = $6, state_at = $7,
                 past_due_since = $8, ended_at = $9, updated_at = $10
             WHERE stripe_subscription_id = $1",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &s.id,
                &s.status,
                &s.price_id,
                &s.current_period_end,
                &s.cancel_at_period_end,
                &i64::from(s.quantity),
                &at,
                &past_due_since(old.past_due_since),
                &ended_at,
                &now,
            ],
        )
        .await?;
    Ok(Applied::Yes)
}

/// A row for a subscription first heard of through an invoice: status
/// `incomplete` and `state_at` 0, so the first real snapshot overrides it.
/// A simultaneous creator of the same row is waited for.
async fn ensure_row<C: GenericClient>(
    client: &C,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    now: i64,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO subscriptions (id, organization_id, stripe_subscription_id,
                 stripe_customer_id, status, updated_at, state_at)
             VALUES ($1, $2, $3, $4, 'incomplete', $5, 0)
             ON CONFLICT (stripe_subscription_id) DO NOTHING",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &uuid::Uuid::new_v4().to_string(),
                &organization_id,
                &subscription_id,
                &customer_id,
                &now,
            ],
        )
        .await?;
    Ok(())
}

/// A paid invoice (`invoice.paid`): the paid period ends at `period_end`
/// (never moved backwards), and a past-due subscription is active again.
async fn record_payment<C: GenericClient>(
    client: &C,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    period_end: Option<i64>,
    at: i64,
    now: i64,
) -> Result<Applied, StorageError> {
    ensure_row(client, organization_id, subscription_id, customer_id, now).await?;
    // Each statement locks the row; the conditions are checked under it.
    let stmt = client
        .prepare_cached(
            "UPDATE subscriptions SET
                 current_period_end = greatest(coalesce(current_period_end, 0),
                                               coalesce($2::BIGINT, 0)),
                 updated_at = $3
             WHERE stripe_subscription_id = $1",
        )
        .await?;
    client
        .execute(&stmt, &[&subscription_id, &period_end, &now])
        .await?;
    let stmt = client
        .prepare_cached(
            "UPDATE subscriptions SET status = 'active', past_due_since = NULL, state_at = $2
             WHERE stripe_subscription_id = $1 AND status IN ('past_due', 'unpaid')
                 AND state_at <= $2",
        )
        .await?;
    client.execute(&stmt, &[&subscription_id, &at]).await?;
    Ok(Applied::Yes)
}

/// A failed payment (`invoice.payment_failed`): the subscription is past
/// due from the first failure on.
async fn record_failed_payment<C: GenericClient>(
    client: &C,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    at: i64,
    now: i64,
) -> Result<Applied, StorageError> {
    ensure_row(client, organization_id, subscription_id, customer_id, now).await?;
    match lock_subscription(client, subscription_id).await? {
        Some(old) if !may_replace(&old.status, old.state_at, at) => Ok(Applied::Stale),
        _ => {
            let stmt = client
                .prepare_cached(
                    "UPDATE subscriptions SET status = 'past_due',
                         past_due_since = coalesce(past_due_since, $2), state_at = $2,
                         updated_at = $3
                     WHERE stripe_subscription_id = $1",
                )
                .await?;
            client
                .execute(&stmt, &[&subscription_id, &at, &now])
                .await?;
            Ok(Applied::Yes)
        }
    }
}

/// `customer.subscription.deleted`: the subscription has ended for good,
/// whatever order the events come in.
async fn record_deletion<C: GenericClient>(
    client: &C,
    organization_id: &str,
    subscription_id: &str,
    customer_id: &str,
    at: i64,
    now: i64,
) -> Result<Applied, StorageError> {
    ensure_row(client, organization_id, subscription_id, customer_id, now).await?;
    let stmt = client
        .prepare_cached(
            "UPDATE subscriptions SET status = 'canceled', ended_at = coalesce(ended_at, $2),
                 state_at = greatest(state_at, $2), cancel_at_period_end = FALSE,
                 updated_at = $3
             WHERE stripe_subscription_id = $1",
        )
        .await?;
    client
        .execute(&stmt, &[&subscription_id, &at, &now])
        .await?;
    Ok(Applied::Yes)
}

/// Brings the license of a subscription (if it has one yet) in line with
/// it: plan and seats from the price and quantity, status, and expiry at
/// the end of the paid period plus the grace, or, past due, at the end of
/// the past-due grace. A revoked license stays revoked (the license is
/// locked, so a revocation cannot slip in between).
async fn sync_license<C: GenericClient>(
    client: &C,
    subscription_id: &str,
    rules: &BillingRules,
    now: i64,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "SELECT status, price_id, quantity, current_period_end, past_due_since
             FROM subscriptions WHERE stripe_subscription_id = $1",
        )
        .await?;
    let Some(sub) = client.query_opt(&stmt, &[&subscription_id]).await? else {
        return Ok(());
    };
    let status: String = column(&sub, 0)?;
    let price_id: Option<String> = column(&sub, 1)?;
    let quantity = to_u32(column(&sub, 2)?)?;
    let period_end: Option<i64> = column(&sub, 3)?;
    let past_due_since: Option<i64> = column(&sub, 4)?;
    let stmt = client
        .prepare_cached(
            "SELECT id, tier, status, expires_at, max_activations FROM licenses
             WHERE stripe_subscription_id = $1 FOR UPDATE",
        )
        .await?;
    let Some(license) = client.query_opt(&stmt, &[&subscription_id]).await? else {
        return Ok(());
    };
    let license_id: String = column(&license, 0)?;
    let tier: String = column(&license, 1)?;
    let license_status: String = column(&license, 2)?;
    let expires_at: i64 = column(&license, 3)?;
    let old_seats: i64 = column(&license, 4)?;
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
    let max_projects = project_limit_column(ent.max_projects).map(i64::from);
    let new_status = license_status_for(&status);
    let new_expiry = license_end(
        &status,
        past_due_since,
        period_end,
        rules.graces,
        expires_at,
    );
    let stmt = client
        .prepare_cached(
            "UPDATE licenses SET tier = $2, max_activations = $3, max_projects = $4,
                 ai_requests = $5, status = $6, expires_at = $7, updated_at = $8
             WHERE id = $1",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &license_id,
                &plan.id,
                &i64::from(seats(plan, quantity)),
                &max_projects,
                &i64::from(ent.ai_requests),
                &new_status,
                &new_expiry,
                &now,
            ],
        )
        .await?;
    let new_seats = i64::from(seats(plan, quantity));
    if new_seats < old_seats {
        // The machines that lose their seat (domain::license::
        // seat_rank_allowed: the latest activated), recorded with the
        // change that took it.
        let stmt = client
            .prepare_cached(
                "INSERT INTO audit_log (at, event, outcome, actor, subject_type, subject_id,
                     detail)
                 SELECT $2, 'seat_lost', 'downgrade', 'stripe', 'activation', a.id,
                        'license ' || a.license_id || ' now allows ' || $3::bigint::text || ' machines'
                 FROM activations a WHERE a.license_id = $1 AND a.status = 'active'
                 ORDER BY a.activated_at, a.id COLLATE \"C\" OFFSET $3::bigint",
            )
            .await?;
        client
            .execute(&stmt, &[&license_id, &now, &new_seats])
            .await?;
    }
    Ok(())
}

/// A license error inside an event: only storage can fail there.
fn license_error(e: LicenseError) -> ApplyError {
    match e {
        LicenseError::Storage(s) => ApplyError::Storage(s),
        other => ApplyError::Storage(StorageError::Failed(other.to_string())),
    }
}

/// The event and its effect, in one transaction. Returns the outcome and
/// whether a mail was queued.
async fn apply_event(
    store: &PgStore,
    event: &StripeEvent,
    rules: &BillingRules,
    now: i64,
) -> Result<(Outcome, bool), ApplyError> {
    let mut conn = store.db.conn().await?;
    let tx = conn.transaction().await?;
    // First: a simultaneous delivery of this event waits here until this
    // transaction ends.
    let stmt = tx
        .prepare_cached(
            "INSERT INTO stripe_events (id, type, created, processed_at, outcome)
             VALUES ($1, $2, $3, $4, 'processing')
             ON CONFLICT (id) DO NOTHING
             RETURNING id",
        )
        .await?;
    let fresh = tx
        .query_opt(&stmt, &[&event.id, &event.kind, &event.created, &now])
        .await?;
    if fresh.is_none() {
        tx.rollback().await?;
        return Ok((Outcome::Duplicate, false));
    }
    let (outcome, mailed) = apply_change(&tx, event, rules, &store.pepper, now).await?;
    super::stats::record_event(&tx, event, &outcome, now).await?;
    let stmt = tx
        .prepare_cached("UPDATE stripe_events SET outcome = $2 WHERE id = $1")
        .await?;
    tx.execute(&stmt, &[&event.id, &outcome.recorded()]).await?;
    tx.commit().await?;
    Ok((outcome, mailed))
}

async fn organization_of_customer<C: GenericClient>(
    client: &C,
    customer: &str,
) -> Result<Option<String>, StorageError> {
    let stmt = client
        .prepare_cached("SELECT id FROM organizations WHERE stripe_customer_id = $1")
        .await?;
    match client.query_opt(&stmt, &[&customer]).await? {
        Some(r) => Ok(Some(column(&r, 0)?)),
        None => Ok(None),
    }
}

async fn apply_change<C: GenericClient>(
    client: &C,
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
    let Some(org) = organization_of_customer(client, customer).await? else {
        tracing::warn!(event = %event.id, kind = %event.kind, %customer, "Stripe event for a customer this issuer does not know; ignored");
        return Ok((Outcome::Ignored("unknown customer".into()), false));
    };
    let at = event.created;
    match &event.change {
        BillingChange::CheckoutCompleted {
            session_id,
            subscription,
            ..
        } => {
            checkouts::completed(
                client,
                event,
                rules,
                pepper,
                &org,
                session_id,
                subscription,
                now,
            )
            .await
        }
        BillingChange::SubscriptionChanged { snapshot } => {
            let a = apply_snapshot(client, &org, snapshot, at, now).await?;
            sync_license(client, &snapshot.id, rules, now).await?;
            Ok((a.into(), false))
        }
        BillingChange::SubscriptionDeleted {
            subscription_id, ..
        } => {
            let a = record_deletion(client, &org, subscription_id, customer, at, now).await?;
            sync_license(client, subscription_id, rules, now).await?;
            Ok((a.into(), false))
        }
        BillingChange::InvoicePaid {
            subscription_id,
            period_end,
            ..
        } => {
            let a = record_payment(
                client,
                &org,
                subscription_id,
                customer,
                *period_end,
                at,
                now,
            )
            .await?;
            sync_license(client, subscription_id, rules, now).await?;
            Ok((a.into(), false))
        }
        BillingChange::PaymentFailed {
            subscription_id, ..
        } => {
            let a = record_failed_payment(client, &org, subscription_id, customer, at, now).await?;
            sync_license(client, subscription_id, rules, now).await?;
            Ok((a.into(), false))
        }
        BillingChange::Malformed { reason, .. } => Err(ApplyError::BadPayload(reason.clone())),
        BillingChange::Ignore(why) => Ok((Outcome::Ignored(why.clone()), false)),
    }
}

#[async_trait]
impl Billing for PgStore {
    async fn pilot_facts(&self, since: i64, now: i64) -> Result<PilotFacts, StorageError> {
        super::stats::facts(self, since, now).await
    }

    async fn stripe_event_seen(&self, event_id: &str) -> Result<bool, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM stripe_events WHERE id = $1)")
            .await?;
        column(&conn.query_one(&stmt, &[&event_id]).await?, 0)
    }

    async fn apply_stripe_event(
        &self,
        event: &StripeEvent,
        rules: &BillingRules,
        now: i64,
    ) -> Result<(Outcome, bool), ApplyError> {
        apply_event(self, event, rules, now).await
    }

    async fn stripe_customer(&self, organization_id: &str) -> Result<Option<String>, StorageError> {
        let conn = self.db.conn().await?;
        checkouts::customer_of(&conn, organization_id).await
    }

    async fn has_live_subscription(&self, organization_id: &str) -> Result<bool, StorageError> {
        let conn = self.db.conn().await?;
        checkouts::has_live_subscription(&conn, organization_id).await
    }

    async fn set_stripe_customer(
        &self,
        organization_id: &str,
        customer_id: &str,
    ) -> Result<String, StorageError> {
        let conn = self.db.conn().await?;
        checkouts::set_customer(&conn, organization_id, customer_id).await
    }

    async fn open_checkouts(
        &self,
        organization_id: &str,
        since: i64,
    ) -> Result<Vec<String>, StorageError> {
        let conn = self.db.conn().await?;
        checkouts::open_checkouts(&conn, organization_id, since).await
    }

    async fn checkout_expired(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        checkouts::checkout_expired(&conn, session_id, now).await
    }

    async fn record_checkout(
        &self,
        checkout: &CheckoutRecord,
        now: i64,
    ) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        checkouts::record_checkout(&conn, checkout, now).await
    }

    async fn reveal_key(
        &self,
        session_id: &str,
        browser_hash: &str,
        now: i64,
    ) -> Result<Reveal, StorageError> {
        let mut conn = self.db.conn().await?;
        checkouts::reveal(&mut conn, session_id, browser_hash, now).await
    }

    async fn wipe_stale_reveals(&self, now: i64) -> Result<usize, StorageError> {
        let conn = self.db.conn().await?;
        checkouts::wipe_stale_reveals(&conn, now).await
    }
}

#[cfg(test)]
mod tests;
