//! Customers and checkouts on SQLite: an organization's Stripe customer,
//! the checkouts it opened, and the shown-once key of a completed one.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::{licenses, scrub};
use crate::domain::StorageError;
use crate::domain::billing::{CheckoutRecord, REVEAL_WINDOW, Reveal};

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
