//! Subscription state and the licenses it decides, in the database.
//!
//! Every function runs inside the caller's transaction and takes the time
//! of the Stripe event it applies (`at`, Stripe's `created`) and `now`.
//! Order safety: the status fields of a subscription change only for an
//! event at least as new as the last one applied (`state_at`); a paid
//! period only ever moves the period end forward; and a canceled
//! subscription stays canceled.

use rusqlite::{Connection, OptionalExtension, params};

use crate::config::Prices;
use crate::licensing::LicenseError;
use crate::plans;

use super::stripe_api::SubscriptionSnapshot;

/// How a subscription decides its license's lifetime.
#[derive(Debug, Clone, Copy)]
pub struct Graces {
    /// Added to the end of a paid period (`BILLING_GRACE`).
    pub billing: i64,
    /// How long a past-due subscription keeps renewing (`PAST_DUE_GRACE`).
    pub past_due: i64,
}

/// Stripe statuses after which a subscription never comes back.
fn is_terminal(status: &str) -> bool {
    matches!(status, "canceled" | "incomplete_expired")
}

/// Stripe statuses whose license is usable.
fn is_live(status: &str) -> bool {
    matches!(status, "active" | "trialing" | "past_due" | "incomplete")
}

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

/// Whether an event changed anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    Yes,
    /// An older event than the state already applied.
    Stale,
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
    let ended_at = is_terminal(&s.status).then_some(at);
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
        Some(old) if is_terminal(&old.status) || at < old.state_at => Ok(Applied::Stale),
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
        Some(old) if is_terminal(&old.status) || at < old.state_at => Ok(Applied::Stale),
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
    prices: &Prices,
    graces: Graces,
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
        .and_then(|p| prices.plan_of(p))
        .and_then(|(plan, _)| plans::find(plan))
        .or_else(|| plans::find(&tier));
    let Some(plan) = plan else {
        return Ok(());
    };
    let ent = plan.entitlements;
    let max_projects = match ent.max_projects {
        verifier::ProjectLimit::Limited(n) => Some(n),
        verifier::ProjectLimit::Unlimited => None,
    };
    let new_status = if is_live(&status) {
        "active"
    } else if matches!(status.as_str(), "paused" | "unpaid") {
        // Not over, but not paid for: refused until it is
        // (`license_suspended` tells the holder to fix the payment).
        "suspended"
    } else {
        "canceled"
    };
    let new_expiry = match (status.as_str(), past_due_since, period_end) {
        ("past_due" | "unpaid", Some(since), _) => since.saturating_add(graces.past_due),
        (_, _, Some(end)) => end.saturating_add(graces.billing),
        _ => expires_at,
    };
    conn.execute(
        "UPDATE licenses SET tier = ?2, max_activations = ?3, max_projects = ?4, ai_requests = ?5,
             status = ?6, expires_at = ?7, updated_at = ?8
         WHERE id = ?1",
        params![
            license_id,
            plan.id,
            ent.max_devices.saturating_mul(quantity.max(1)),
            max_projects,
            ent.ai_requests,
            new_status,
            new_expiry,
            now,
        ],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;

    const PRICES: fn() -> Prices = || Prices {
        starter_monthly: "price_sm".into(),
        starter_annual: "price_sa".into(),
        pro_monthly: "price_pm".into(),
        pro_annual: "price_pa".into(),
    };
    const GRACES: Graces = Graces {
        billing: 100,
        past_due: 1_000,
    };

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
        sync_license(conn, &s.id, &PRICES(), GRACES, at).unwrap();
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
        sync_license(&conn, "sub_1", &PRICES(), GRACES, 30).unwrap();
        assert_eq!(
            license(&conn).3,
            30 + 1_000,
            "past due: the grace from the failure"
        );
        record_payment(&conn, "org1", "sub_1", "cus_1", Some(9_000), 40, 40).unwrap();
        sync_license(&conn, "sub_1", &PRICES(), GRACES, 40).unwrap();
        assert_eq!(license(&conn).3, 9_100);
        // An older invoice.paid does not move it back.
        record_payment(&conn, "org1", "sub_1", "cus_1", Some(5_000), 35, 41).unwrap();
        sync_license(&conn, "sub_1", &PRICES(), GRACES, 41).unwrap();
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
        sync_license(&conn, "sub_1", &PRICES(), GRACES, 12).unwrap();
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
}
