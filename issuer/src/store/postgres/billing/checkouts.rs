//! Customers and checkouts on PostgreSQL: an organization's Stripe
//! customer, the checkouts it opened, a checkout's completion (the
//! license and its key mail, applied inside the event's transaction, see
//! `billing/mod.rs`), and the shown-once key of a completed one.
//!
//! The shown-once key is read under a row lock and wiped in the same
//! transaction, so of two simultaneous requests one shows it and the other
//! finds it shown. A wiped key's old row version stays in the table until
//! a vacuum removes it: each wipe is followed by a best-effort
//! `VACUUM checkouts` (as SQLite follows it with a checkpoint). Unlike
//! SQLite's `secure_delete`, a vacuum does not zero the bytes: they stay
//! in the page's free space, unreadable by any query, until reused.

use deadpool_postgres::{GenericClient, Object};

use super::super::column;
use super::super::licenses;
use super::{apply_snapshot, license_error, sync_license};
use crate::domain::StorageError;
use crate::domain::audit::Event;
use crate::domain::billing::{
    ApplyError, BillingRules, CheckoutRecord, LicenseMailFacts, Outcome, REVEAL_WINDOW, Reveal,
    StripeEvent, SubscriptionSnapshot, paid_license,
};
use crate::domain::license_key::KeyPepper;

pub(super) async fn customer_of<C: GenericClient>(
    client: &C,
    org: &str,
) -> Result<Option<String>, StorageError> {
    let stmt = client
        .prepare_cached("SELECT stripe_customer_id FROM organizations WHERE id = $1")
        .await?;
    match client.query_opt(&stmt, &[&org]).await? {
        Some(r) => column(&r, 0),
        None => Ok(None),
    }
}

pub(super) async fn has_live_subscription<C: GenericClient>(
    client: &C,
    org: &str,
) -> Result<bool, StorageError> {
    let stmt = client
        .prepare_cached(
            "SELECT EXISTS (SELECT 1 FROM subscriptions WHERE organization_id = $1
                 AND status IN ('active', 'trialing', 'past_due'))",
        )
        .await?;
    column(&client.query_one(&stmt, &[&org]).await?, 0)
}

/// Stores the customer unless the organization has one, and returns the
/// stored one, in one statement: a simultaneous second call waits for the
/// first's row lock and then keeps the first's customer.
pub(super) async fn set_customer<C: GenericClient>(
    client: &C,
    org: &str,
    customer: &str,
) -> Result<String, StorageError> {
    let stmt = client
        .prepare_cached(
            "UPDATE organizations SET stripe_customer_id = coalesce(stripe_customer_id, $2)
             WHERE id = $1 RETURNING stripe_customer_id",
        )
        .await?;
    let stored: Option<String> = match client.query_opt(&stmt, &[&org, &customer]).await? {
        Some(r) => column(&r, 0)?,
        None => None,
    };
    stored.ok_or_else(|| StorageError::Failed(format!("organization {org} does not exist")))
}

pub(super) async fn open_checkouts<C: GenericClient>(
    client: &C,
    org: &str,
    since: i64,
) -> Result<Vec<String>, StorageError> {
    let stmt = client
        .prepare_cached(
            "SELECT id FROM checkouts WHERE organization_id = $1
                 AND completed_at IS NULL AND expired_at IS NULL AND created_at > $2
             ORDER BY created_at, id",
        )
        .await?;
    client
        .query(&stmt, &[&org, &since])
        .await?
        .iter()
        .map(|r| column(r, 0))
        .collect()
}

pub(super) async fn checkout_expired<C: GenericClient>(
    client: &C,
    id: &str,
    now: i64,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "UPDATE checkouts SET expired_at = $2 WHERE id = $1 AND completed_at IS NULL",
        )
        .await?;
    client.execute(&stmt, &[&id, &now]).await?;
    Ok(())
}

pub(super) async fn record_checkout<C: GenericClient>(
    client: &C,
    c: &CheckoutRecord,
    now: i64,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
                 browser_hash, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (id) DO NOTHING",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &c.session_id,
                &c.organization_id,
                &c.user_id,
                &c.plan,
                &c.interval,
                &c.browser_hash,
                &now,
            ],
        )
        .await?;
    Ok(())
}

/// `checkout.session.completed`: the subscription (as Stripe has it now),
/// the organization's license, and the mail with its key.
#[allow(clippy::too_many_arguments)]
pub(super) async fn completed<C: GenericClient>(
    client: &C,
    event: &StripeEvent,
    rules: &BillingRules,
    pepper: &KeyPepper,
    org: &str,
    session_id: &str,
    snap: &SubscriptionSnapshot,
    now: i64,
) -> Result<(Outcome, bool), ApplyError> {
    // Locks the subscription: another event of it (another delivery of a
    // completion too) waits until this one has its license.
    apply_snapshot(client, org, snap, event.created, now).await?;
    let stmt = client
        .prepare_cached(
            "SELECT user_id, plan FROM checkouts WHERE id = $1 AND organization_id = $2",
        )
        .await?;
    let checkout: Option<(String, String)> =
        match client.query_opt(&stmt, &[&session_id, &org]).await? {
            Some(r) => Some((column(&r, 0)?, column(&r, 1)?)),
            None => None,
        };
    let stmt = client
        .prepare_cached("SELECT id FROM licenses WHERE stripe_subscription_id = $1")
        .await?;
    if client.query_opt(&stmt, &[&snap.id]).await?.is_some() {
        sync_license(client, &snap.id, rules, now).await?;
        return Ok((Outcome::Applied, false));
    }
    // Who gets the key: the person who started the checkout, else the
    // organization's owner.
    let user_id: Option<String> = match &checkout {
        Some((user, _)) => Some(user.clone()),
        None => {
            let stmt = client
                .prepare_cached(
                    "SELECT id FROM users WHERE organization_id = $1
                     ORDER BY created_at, id LIMIT 1",
                )
                .await?;
            match client.query_opt(&stmt, &[&org]).await? {
                Some(r) => Some(column(&r, 0)?),
                None => None,
            }
        }
    };
    let Some(user_id) = user_id else {
        return Ok((
            Outcome::Ignored("the organization has no user".into()),
            false,
        ));
    };
    let stmt = client
        .prepare_cached(
            "SELECT u.email, o.name FROM users u JOIN organizations o ON o.id = u.organization_id
             WHERE u.id = $1",
        )
        .await?;
    let (email, org_name): (String, String) = match client.query_opt(&stmt, &[&user_id]).await? {
        Some(r) => (column(&r, 0)?, column(&r, 1)?),
        None => {
            return Err(StorageError::Failed(format!(
                "checkout {session_id} names user {user_id}, who does not exist"
            ))
            .into());
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
    let (license, key) = licenses::insert_license(client, &new, pepper, now)
        .await
        .map_err(license_error)?;
    sync_license(client, &snap.id, rules, now).await?;
    let stmt = client
        .prepare_cached(
            "UPDATE checkouts SET license_id = $2, completed_at = $3,
                 reveal_key = CASE WHEN browser_hash IS NOT NULL THEN $4 END
             WHERE id = $1",
        )
        .await?;
    client
        .execute(&stmt, &[&session_id, &license.id, &now, &key.expose()])
        .await?;
    let mail = (rules.license_mail)(LicenseMailFacts {
        to: &email,
        key: key.expose(),
        plan_name: plan.name,
        organization_name: &org_name,
        period_end,
    });
    super::super::outbox::insert_mail(client, &mail, now).await?;
    super::super::audit::insert_event(
        client,
        &Event::new(now, "license_created", "ok")
            .actor(format!("stripe:{}", event.id))
            .subject("license", license.id.clone())
            .detail(format!("{} via checkout {session_id}", plan.id)),
    )
    .await?;
    Ok((Outcome::Applied, true))
}

/// The key of a completed checkout for the browser that started it, once.
pub(super) async fn reveal(
    conn: &mut Object,
    session_id: &str,
    browser: &str,
    now: i64,
) -> Result<Reveal, StorageError> {
    let tx = conn.transaction().await?;
    // A simultaneous request for the same checkout waits here until this
    // one has shown (and wiped) the key.
    let stmt = tx
        .prepare_cached(
            "SELECT browser_hash, license_id, reveal_key, revealed_at
             FROM checkouts WHERE id = $1 FOR UPDATE",
        )
        .await?;
    let Some(row) = tx.query_opt(&stmt, &[&session_id]).await? else {
        return Ok(Reveal::Unknown);
    };
    let hash: Option<String> = column(&row, 0)?;
    let license_id: Option<String> = column(&row, 1)?;
    let key: Option<String> = column(&row, 2)?;
    let revealed_at: Option<i64> = column(&row, 3)?;
    if hash.as_deref() != Some(browser) {
        return Ok(Reveal::Unknown);
    }
    let Some(license_id) = license_id else {
        return Ok(Reveal::Pending);
    };
    let license = licenses::license_by_id(&tx, &license_id)
        .await?
        .ok_or_else(|| StorageError::Failed("checkout names a missing license".into()))?;
    let result = match (key, revealed_at) {
        (Some(key), None) => {
            let stmt = tx
                .prepare_cached(
                    "UPDATE checkouts SET reveal_key = NULL, revealed_at = $2 WHERE id = $1",
                )
                .await?;
            tx.execute(&stmt, &[&session_id, &now]).await?;
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
    tx.commit().await?;
    if matches!(result, Reveal::Key { .. }) {
        scrub(conn).await;
    }
    Ok(result)
}

/// Wipes the keys that waited longer than [`REVEAL_WINDOW`] to be shown.
pub(super) async fn wipe_stale_reveals(conn: &Object, now: i64) -> Result<usize, StorageError> {
    let stmt = conn
        .prepare_cached(
            "UPDATE checkouts SET reveal_key = NULL
             WHERE reveal_key IS NOT NULL AND completed_at < $1",
        )
        .await?;
    let wiped = conn
        .execute(&stmt, &[&now.saturating_sub(REVEAL_WINDOW)])
        .await?;
    if wiped > 0 {
        scrub(conn).await;
    }
    usize::try_from(wiped).map_err(|_| StorageError::Failed(format!("{wiped} rows wiped")))
}

/// After a key was wiped from a row: removes the row's old versions (which
/// still hold the key) from the table. Outside any transaction (VACUUM
/// cannot run in one). Best effort: a version another transaction may
/// still see is kept, and autovacuum or the next scrub removes it later.
async fn scrub(conn: &Object) {
    if let Err(e) = conn.batch_execute("VACUUM checkouts").await {
        tracing::debug!(error = %e, "VACUUM after wiping a secret was skipped");
    }
}
