//! Starting a paid subscription (Checkout), the billing portal, and handing
//! the new license key to the browser that paid for it.

use rusqlite::{OptionalExtension, params};
use sha2::{Digest, Sha256};

use crate::accounts::User;
use crate::api::AppState;
use crate::db::DbError;

use super::BillingError;
use super::stripe_api::NewCheckout;

/// A started checkout: where to send the buyer.
#[derive(Debug, Clone)]
pub struct CheckoutStart {
    pub session_id: String,
    pub url: String,
}

/// How long a Checkout Session stays open at Stripe (its default).
const CHECKOUT_LIFETIME: i64 = 24 * 3600;

/// SHA-256 (hex) of a browser's checkout cookie.
pub fn browser_hash(cookie: &str) -> String {
    hex::encode(Sha256::digest(cookie.as_bytes()))
}

/// Starts a Stripe Checkout for `plan` billed every `interval` (`month` or
/// `year`) for the user's organization. The organization's Stripe customer
/// is created on its first checkout and reused after that. `browser` is the
/// hash of the cookie of the browser that will see the key on the success
/// page (web signup), if any.
pub async fn start(
    state: &AppState,
    user: &User,
    plan: &str,
    interval: &str,
    browser: Option<String>,
    now: i64,
) -> Result<CheckoutStart, BillingError> {
    let (stripe, cfg) = state.stripe()?;
    let price = cfg
        .prices
        .price_for(plan, interval)
        .ok_or_else(|| BillingError::UnknownPlan {
            plan: plan.to_owned(),
            interval: interval.to_owned(),
        })?
        .to_owned();
    let org = user.organization_id.clone();
    let (customer, live) = state
        .db
        .run(move |c| {
            let customer = customer_of(c, &org)?;
            let live: bool = c
                .query_row(
                    "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE organization_id = ?1
                         AND status IN ('active', 'trialing', 'past_due'))",
                    [&org],
                    |r| r.get(0),
                )
                .map_err(DbError::from)?;
            Ok::<_, BillingError>((customer, live))
        })
        .await?;
    if live {
        return Err(BillingError::AlreadySubscribed);
    }
    let customer = match customer {
        Some(c) => c,
        None => {
            let created = stripe
                .create_customer(&user.organization_id, &user.organization_name, &user.email)
                .await?;
            let org = user.organization_id.clone();
            state
                .db
                .run_write(move |c| {
                    c.execute(
                        "UPDATE organizations SET stripe_customer_id = ?2
                         WHERE id = ?1 AND stripe_customer_id IS NULL",
                        params![org, created],
                    )
                    .map_err(DbError::from)?;
                    // Ours, or the one a simultaneous first checkout stored.
                    customer_of(c, &org)?.ok_or_else(|| {
                        BillingError::Internal("the organization has no customer".into())
                    })
                })
                .await?
        }
    };
    // One checkout open per organization: the earlier ones are expired at
    // Stripe first, so that nobody pays for the same pilot twice (two tabs,
    // a back button). One that was paid meanwhile means there is nothing to
    // buy.
    let org = user.organization_id.clone();
    let open: Vec<String> = state
        .db
        .run(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT id FROM checkouts WHERE organization_id = ?1
                     AND completed_at IS NULL AND expired_at IS NULL AND created_at > ?2",
                )
                .map_err(DbError::from)?;
            let ids = stmt
                .query_map(params![org, now.saturating_sub(CHECKOUT_LIFETIME)], |r| {
                    r.get(0)
                })
                .map_err(DbError::from)?
                .collect::<rusqlite::Result<Vec<String>>>()
                .map_err(DbError::from)?;
            Ok::<_, BillingError>(ids)
        })
        .await?;
    for id in open {
        let status = stripe.expire_checkout(&id).await?;
        if status == "complete" {
            return Err(BillingError::AlreadySubscribed);
        }
        state
            .db
            .run_write(move |c| {
                c.execute(
                    "UPDATE checkouts SET expired_at = ?2 WHERE id = ?1 AND completed_at IS NULL",
                    params![id, now],
                )
                .map_err(DbError::from)?;
                Ok::<_, BillingError>(())
            })
            .await?;
    }
    let base = &state.config.public_base_url;
    let session = stripe
        .create_checkout(&NewCheckout {
            customer_id: &customer,
            price_id: &price,
            organization_id: &user.organization_id,
            user_id: &user.id,
            plan,
            interval,
            success_url: format!("{base}/signup/success?session_id={{CHECKOUT_SESSION_ID}}"),
            cancel_url: format!("{base}/signup/cancel"),
            trial_days: cfg.trial_days,
        })
        .await?;
    let row = (
        session.id.clone(),
        user.organization_id.clone(),
        user.id.clone(),
        plan.to_owned(),
        interval.to_owned(),
    );
    state
        .db
        .run_write(move |c| {
            c.execute(
                "INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
                     browser_hash, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
                 ON CONFLICT (id) DO NOTHING",
                params![row.0, row.1, row.2, row.3, row.4, browser, now],
            )
            .map_err(DbError::from)?;
            Ok::<_, BillingError>(())
        })
        .await?;
    Ok(CheckoutStart {
        session_id: session.id,
        url: session.url,
    })
}

/// The Stripe customer of an organization, once it has one.
fn customer_of(conn: &rusqlite::Connection, org: &str) -> rusqlite::Result<Option<String>> {
    conn.query_row(
        "SELECT stripe_customer_id FROM organizations WHERE id = ?1",
        [org],
        |r| r.get(0),
    )
    .optional()
    .map(Option::flatten)
}

/// A billing portal session for the user's organization; returns its URL.
pub async fn portal(state: &AppState, user: &User) -> Result<String, BillingError> {
    let (stripe, _) = state.stripe()?;
    let org = user.organization_id.clone();
    let customer = state
        .db
        .run(move |c| customer_of(c, &org).map_err(BillingError::from))
        .await?;
    let customer = customer.ok_or(BillingError::NoCustomer)?;
    let return_url = format!("{}/", state.config.public_base_url);
    Ok(stripe.create_portal(&customer, &return_url).await?)
}

/// What the success page can show for a checkout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reveal {
    /// No such checkout, or it was started by another browser.
    Unknown,
    /// Paid, but Stripe's confirmation has not arrived yet.
    Pending,
    /// The key, shown now and never again.
    Key {
        key: String,
        plan: String,
        email: String,
        expires_at: i64,
    },
    /// The key was shown already (it is also in the mail).
    AlreadyShown { email: String, key_hint: String },
}

/// How long a key waits to be shown on the success page before it is
/// wiped (it is in the mail too).
pub const REVEAL_WINDOW: i64 = 24 * 3600;

/// The license key of a checkout, for the browser that started it, once.
pub async fn reveal(
    state: &AppState,
    session_id: &str,
    browser: &str,
    now: i64,
) -> Result<Reveal, BillingError> {
    let session_id = session_id.to_owned();
    let browser = browser.to_owned();
    state
        .db
        .run_write(move |c| {
            let tx = c
                .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
                .map_err(DbError::from)?;
            type RowT = (
                Option<String>,
                Option<String>,
                Option<String>,
                Option<i64>,
                i64,
            );
            let row: Option<RowT> = tx
                .query_row(
                    "SELECT browser_hash, license_id, reveal_key, revealed_at, created_at
                     FROM checkouts WHERE id = ?1",
                    [&session_id],
                    |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
                )
                .optional()
                .map_err(DbError::from)?;
            let Some((hash, license_id, key, revealed_at, _created)) = row else {
                return Ok(Reveal::Unknown);
            };
            if hash.as_deref() != Some(browser.as_str()) {
                return Ok(Reveal::Unknown);
            }
            let Some(license_id) = license_id else {
                return Ok(Reveal::Pending);
            };
            let license = crate::licensing::get(&tx, &license_id)
                .map_err(|e| BillingError::Internal(e.to_string()))?
                .ok_or_else(|| BillingError::Internal("checkout names a missing license".into()))?;
            let result = match (key, revealed_at) {
                (Some(key), None) => {
                    tx.execute(
                        "UPDATE checkouts SET reveal_key = NULL, revealed_at = ?2 WHERE id = ?1",
                        params![session_id, now],
                    )
                    .map_err(DbError::from)?;
                    Reveal::Key {
                        key,
                        plan: crate::plans::find(&license.tier)
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
            tx.commit().map_err(DbError::from)?;
            if matches!(result, Reveal::Key { .. }) {
                crate::db::scrub(c);
            }
            Ok(result)
        })
        .await
}

/// Wipes keys that waited longer than [`REVEAL_WINDOW`] to be shown.
pub fn wipe_stale_reveals(conn: &rusqlite::Connection, now: i64) -> rusqlite::Result<usize> {
    let wiped = conn.execute(
        "UPDATE checkouts SET reveal_key = NULL
         WHERE reveal_key IS NOT NULL AND completed_at < ?1",
        [now.saturating_sub(REVEAL_WINDOW)],
    )?;
    if wiped > 0 {
        crate::db::scrub(conn);
    }
    Ok(wiped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_never_shown_are_wiped_after_the_reveal_window() {
        let dir = tempfile::tempdir().unwrap();
        let db = crate::db::Db::open(&dir.path().join("reveal.sqlite3")).unwrap();
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
        let key = |c: &rusqlite::Connection| -> Option<String> {
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
