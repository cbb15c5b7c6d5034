//! The pilot's figures on SQLite: what a Stripe event adds to them (in the
//! event's transaction), and the counts `domain::stats` turns into figures.

use std::collections::BTreeMap;

use rusqlite::{Connection, params};

use crate::domain::billing::{Outcome, StripeEvent};
use crate::domain::stats::{ACTIVE_MACHINE_WINDOW, PilotFacts, SubscriptionState};

/// Records what an event applied (or found stale) means for the figures:
/// the invoice attempt it reports, and the subscription's state after it.
pub(super) fn record_event(
    conn: &Connection,
    event: &StripeEvent,
    outcome: &Outcome,
    now: i64,
) -> rusqlite::Result<()> {
    if !matches!(outcome, Outcome::Applied | Outcome::Stale) {
        return Ok(());
    }
    if let Some((subscription_id, invoice, paid)) = event.change.invoice() {
        if paid {
            conn.execute(
                "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, amount_minor,
                     currency, first_attempt_at, paid_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?5)
                 ON CONFLICT (stripe_invoice_id) DO UPDATE SET
                     paid_at = coalesce(invoices.paid_at, excluded.paid_at),
                     amount_minor = coalesce(excluded.amount_minor, invoices.amount_minor),
                     currency = coalesce(excluded.currency, invoices.currency)",
                params![
                    invoice.id,
                    subscription_id,
                    invoice.amount_minor,
                    invoice.currency,
                    now
                ],
            )?;
        } else {
            conn.execute(
                "INSERT INTO invoices (stripe_invoice_id, stripe_subscription_id, amount_minor,
                     currency, first_attempt_at, failed_attempts)
                 VALUES (?1, ?2, ?3, ?4, ?5, 1)
                 ON CONFLICT (stripe_invoice_id) DO UPDATE SET
                     failed_attempts = invoices.failed_attempts + 1,
                     amount_minor = coalesce(excluded.amount_minor, invoices.amount_minor),
                     currency = coalesce(excluded.currency, invoices.currency)",
                params![
                    invoice.id,
                    subscription_id,
                    invoice.amount_minor,
                    invoice.currency,
                    now
                ],
            )?;
        }
    }
    if matches!(outcome, Outcome::Applied)
        && let Some(subscription_id) = event.change.subscription_id()
    {
        conn.execute(
            "INSERT INTO subscription_history (stripe_subscription_id, at, status, price_id, quantity)
             SELECT stripe_subscription_id, ?2, status, price_id, quantity
             FROM subscriptions WHERE stripe_subscription_id = ?1",
            params![subscription_id, now],
        )?;
    }
    Ok(())
}

/// The counts of the period from `since` to `now`, read in one transaction.
pub(super) fn facts(conn: &mut Connection, since: i64, now: i64) -> rusqlite::Result<PilotFacts> {
    let tx = conn.transaction()?;
    let mut signups_by_plan = BTreeMap::new();
    {
        // Each organization once, by its first completed checkout.
        let mut stmt = tx.prepare(
            "SELECT c.plan, count(*) FROM checkouts c
             WHERE c.completed_at BETWEEN ?1 AND ?2
               AND NOT EXISTS (SELECT 1 FROM checkouts e
                   WHERE e.organization_id = c.organization_id AND e.completed_at IS NOT NULL
                     AND (e.completed_at < c.completed_at
                          OR (e.completed_at = c.completed_at AND e.id < c.id)))
             GROUP BY c.plan",
        )?;
        let rows = stmt.query_map(params![since, now], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, u32>(1)?))
        })?;
        for row in rows {
            let (plan, n) = row?;
            signups_by_plan.insert(plan, n);
        }
    }
    let (paid_licenses, activated_licenses) = tx.query_row(
        "SELECT count(*),
                coalesce(sum(EXISTS (SELECT 1 FROM activations a WHERE a.license_id = l.id)), 0)
         FROM licenses l
         WHERE l.stripe_subscription_id IS NOT NULL AND l.created_at BETWEEN ?1 AND ?2",
        params![since, now],
        |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?)),
    )?;
    let (invoices_attempted, invoices_paid) = tx.query_row(
        "SELECT count(*), count(paid_at) FROM invoices WHERE first_attempt_at BETWEEN ?1 AND ?2",
        params![since, now],
        |r| Ok((r.get::<_, u32>(0)?, r.get::<_, u32>(1)?)),
    )?;
    let active_machines = tx.query_row(
        "SELECT count(*) FROM activations WHERE status = 'active' AND last_validated_at >= ?1",
        params![now - ACTIVE_MACHINE_WINDOW],
        |r| r.get::<_, u32>(0),
    )?;
    let history = {
        let mut stmt = tx.prepare(
            "SELECT stripe_subscription_id, at, status, price_id, quantity
             FROM subscription_history WHERE at <= ?1 ORDER BY at, seq",
        )?;
        stmt.query_map(params![now], |r| {
            Ok(SubscriptionState {
                subscription_id: r.get(0)?,
                at: r.get(1)?,
                status: r.get(2)?,
                price_id: r.get(3)?,
                quantity: r.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()?
    };
    tx.commit()?;
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
