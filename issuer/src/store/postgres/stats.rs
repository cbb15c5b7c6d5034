//! The pilot's figures on PostgreSQL: what a Stripe event adds to them (in
//! the event's transaction), and the counts `domain::stats` turns into
//! figures; as on SQLite (`store/sqlite/stats.rs`).

use std::collections::BTreeMap;

use deadpool_postgres::GenericClient;

use super::{PgStore, column, to_u32};
use crate::domain::StorageError;
use crate::domain::billing::{Outcome, StripeEvent};
use crate::domain::stats::{ACTIVE_MACHINE_WINDOW, PilotFacts, SubscriptionState};

/// Records what an event applied (or found stale) means for the figures:
/// the invoice attempt it reports, and the subscription's state after it.
pub(super) async fn record_event<C: GenericClient>(
    client: &C,
    event: &StripeEvent,
    outcome: &Outcome,
    now: i64,
) -> Result<(), StorageError> {
    if !matches!(outcome, Outcome::Applied | Outcome::Stale) {
        return Ok(());
    }
    if let Some((subscription_id, invoice, paid)) = event.change.invoice() {
        let sql = if paid {
            "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, amount_minor,
                 currency, first_attempt_at, paid_at)
             VALUES ($1, $2, $3, $4, $5, $5)
             ON CONFLICT (stripe_invoice_id) DO UPDATE SET
                 paid_at = coalesce(invoices.paid_at, excluded.paid_at),
                 amount_minor = coalesce(excluded.amount_minor, invoices.amount_minor),
                 currency = coalesce(excluded.currency, invoices.currency)"
        } else {
            "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, amount_minor,
                 currency, first_attempt_at, failed_attempts)
             VALUES ($1, $2, $3, $4, $5, 1)
             ON CONFLICT (stripe_invoice_id) DO UPDATE SET
                 failed_attempts = invoices.failed_attempts + 1,
                 amount_minor = coalesce(excluded.amount_minor, invoices.amount_minor),
                 currency = coalesce(excluded.currency, invoices.currency)"
        };
        let stmt = client.prepare_cached(sql).await?;
        client
            .execute(
                &stmt,
                &[
                    &invoice.id,
                    &subscription_id,
                    &invoice.amount_minor,
                    &invoice.currency,
                    &now,
                ],
            )
            .await?;
    }
    if matches!(outcome, Outcome::Applied)
        && let Some(subscription_id) = event.change.subscription_id()
    {
        let stmt = client
            .prepare_cached(
                "INSERT INTO subscription_history (stripe_subscription_id, at, status, price_id, quantity)
                 SELECT stripe_subscription_id, $2, status, price_id, quantity
                 FROM subscriptions WHERE stripe_subscription_id = $1",
            )
            .await?;
        client.execute(&stmt, &[&subscription_id, &now]).await?;
    }
    Ok(())
}

/// The counts of the period from `since` to `now`, read from one snapshot.
pub(super) async fn facts(
    store: &PgStore,
    since: i64,
    now: i64,
) -> Result<PilotFacts, StorageError> {
    let mut conn = store.db.conn().await?;
    let tx = conn
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await?;
    let mut signups_by_plan = BTreeMap::new();
    let stmt = tx
        .prepare_cached(
            "SELECT c.plan, count(*) FROM checkouts c
             WHERE c.completed_at BETWEEN $1 AND $2
               AND NOT EXISTS (SELECT 1 FROM checkouts e
                   WHERE e.organization_id = c.organization_id AND e.completed_at IS NOT NULL
                     AND (e.completed_at < c.completed_at
                          OR (e.completed_at = c.completed_at AND e.id < c.id)))
             GROUP BY c.plan",
        )
        .await?;
    for row in tx.query(&stmt, &[&since, &now]).await? {
        signups_by_plan.insert(column::<String>(&row, 0)?, to_u32(column(&row, 1)?)?);
    }
    let stmt = tx
        .prepare_cached(
            "SELECT count(*),
                    count(*) FILTER (WHERE EXISTS (SELECT 1 FROM activations a WHERE a.license_id = l.id))
             FROM licenses l
             WHERE l.stripe_subscription_id IS NOT NULL AND l.created_at BETWEEN $1 AND $2",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&since, &now]).await?;
    let (paid_licenses, activated_licenses) =
        (to_u32(column(&row, 0)?)?, to_u32(column(&row, 1)?)?);
    let stmt = tx
        .prepare_cached(
            "SELECT count(*), count(paid_at) FROM invoices WHERE first_attempt_at BETWEEN $1 AND $2",
        )
        .await?;
    let row = tx.query_one(&stmt, &[&since, &now]).await?;
    let (invoices_attempted, invoices_paid) =
        (to_u32(column(&row, 0)?)?, to_u32(column(&row, 1)?)?);
    let stmt = tx
        .prepare_cached(
            "SELECT count(*) FROM activations WHERE status = 'active' AND last_validated_at >= $1",
        )
        .await?;
    let row = tx
        .query_one(&stmt, &[&(now - ACTIVE_MACHINE_WINDOW)])
        .await?;
    let active_machines = to_u32(column(&row, 0)?)?;
    let stmt = tx
        .prepare_cached(
            "SELECT stripe_subscription_id, at, status, price_id, quantity
             FROM subscription_history WHERE at <= $1 ORDER BY at, seq",
        )
        .await?;
    let mut history = Vec::new();
    for row in tx.query(&stmt, &[&now]).await? {
        history.push(SubscriptionState {
            subscription_id: column(&row, 0)?,
            at: column(&row, 1)?,
            status: column(&row, 2)?,
            price_id: column(&row, 3)?,
            quantity: to_u32(column(&row, 4)?)?,
        });
    }
    tx.commit().await?;
    Ok(PilotFacts {
        signups_by_plan,
        paid_licenses,
        activated_licenses,
        invoices_attempted,
        invoices_paid,
        active_machines,
        history,
    })
}
