//! Accounts on SQLite: organizations and users, failed sign-ins (the
//! lockout), and login sessions. A login creates a session row; the JWT
//! carries its id, and logout ends the session server-side.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::account::{
    AccountError, FAILURE_MEMORY_SECONDS, FailureCount, LinkPurpose, SignInRecord, User,
};
use crate::domain::mail::Mail;

/// The failed sign-ins of `email` from `client` and from all clients.
pub fn sign_in_record(
    conn: &Connection,
    email: &str,
    client: &str,
) -> Result<SignInRecord, AccountError> {
    let mut record = SignInRecord::default();
    let mut stmt = conn.prepare_cached(
        "SELECT client, failures, last_failure_at, succeeded_at FROM sign_in_failures
         WHERE email = ?1 AND client IN (?2, '')",
    )?;
    let rows = stmt.query_map(params![email, client], |r| {
        Ok((
            r.get::<_, String>(0)?,
            FailureCount {
                failures: r.get(1)?,
                last_failure_at: r.get(2)?,
            },
            r.get::<_, Option<i64>>(3)?,
        ))
    })?;
    for row in rows {
        let (who, count, succeeded_at) = row?;
        if who.is_empty() {
            record.email = count;
        } else {
            record.client = count;
            record.client_succeeded_at = succeeded_at;
        }
    }
    Ok(record)
}

/// Counts a failed sign-in for `email` (whether or not it has an account)
/// from `client` and from all clients; returns the counts after it.
pub fn record_failure(
    conn: &mut Connection,
    email: &str,
    client: &str,
    now: i64,
) -> Result<SignInRecord, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    // Failures older than the memory are forgotten: the count starts again.
    tx.prepare_cached(&format!(
        "INSERT INTO sign_in_failures AS t (email, client, failures, last_failure_at)
         VALUES (?1, ?2, 1, ?3), (?1, '', 1, ?3)
         ON CONFLICT (email, client) DO UPDATE SET
             failures = CASE WHEN excluded.last_failure_at - t.last_failure_at
                                  < {FAILURE_MEMORY_SECONDS}
                             THEN t.failures + 1 ELSE 1 END,
             last_failure_at = excluded.last_failure_at"
    ))?
    .execute(params![email, client, now])?;
    let record = sign_in_record(&tx, email, client)?;
    tx.commit()?;
    Ok(record)
}

/// After a successful sign-in from `client`: its failures are forgotten
/// and it is known to this email from now.
pub fn clear_failures(
    conn: &Connection,
    email: &str,
    client: &str,
    now: i64,
) -> Result<(), AccountError> {
    conn.prepare_cached(
        "INSERT INTO sign_in_failures (email, client, failures, last_failure_at, succeeded_at)
         VALUES (?1, ?2, 0, 0, ?3)
         ON CONFLICT (email, client) DO UPDATE SET failures = 0, succeeded_at = ?3",
    )?
    .execute(params![email, client, now])?;
    Ok(())
}

/// Organizations with a completed checkout, other than `except`.
pub fn paid_organizations(conn: &Connection, except: &str) -> rusqlite::Result<u32> {
    conn.prepare_cached(
        "SELECT count(DISTINCT organization_id) FROM checkouts
         WHERE completed_at IS NOT NULL AND organization_id <> ?1",
    )?
    .query_row([except], |r| r.get(0))
}

/// Stores a link for the account of `email`, if any, with its mail.
pub fn issue_link(
    conn: &mut Connection,
    email: &str,
    purpose: LinkPurpose,
    token_hash: &str,
    expires_at: i64,
    mail: &Mail,
    now: i64,
) -> Result<bool, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let user: Option<String> = tx
        .prepare_cached("SELECT id FROM users WHERE email = ?1")?
        .query_row([email], |r| r.get(0))
        .optional()?;
    let Some(user) = user else {
        return Ok(false);
    };
    tx.prepare_cached(
        "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5)",
    )?
    .execute(params![token_hash, user, purpose.as_str(), now, expires_at])?;
    super::outbox::enqueue(&tx, mail, now)?;
    tx.commit()?;
    Ok(true)
}

/// Uses a link of `purpose` once: its user id, or `None`.
fn use_link(
    tx: &rusqlite::Transaction<'_>,
    token_hash: &str,
    purpose: LinkPurpose,
    now: i64,
) -> rusqlite::Result<Option<String>> {
    tx.prepare_cached(
        "UPDATE account_tokens SET used_at = ?3
         WHERE token_hash = ?1 AND purpose = ?2 AND used_at IS NULL AND expires_at > ?3
         RETURNING user_id",
    )?
    .query_row(params![token_hash, purpose.as_str(), now], |r| r.get(0))
    .optional()
}

/// Uses a verification link: the account's email is verified.
pub fn verify_email(
    conn: &mut Connection,
    token_hash: &str,
    now: i64,
) -> Result<Option<User>, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(user_id) = use_link(&tx, token_hash, LinkPurpose::VerifyEmail, now)? else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE users SET email_verified_at = coalesce(email_verified_at, ?2) WHERE id = ?1",
        params![user_id, now],
    )?;
    let user = user_by_id(&tx, &user_id)?;
    tx.commit()?;
    Ok(user)
}

/// Uses a reset link: new password, verified email, sessions revoked.
pub fn reset_password(
    conn: &mut Connection,
    token_hash: &str,
    password_hash: &str,
    now: i64,
) -> Result<Option<User>, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let Some(user_id) = use_link(&tx, token_hash, LinkPurpose::ResetPassword, now)? else {
        return Ok(None);
    };
    tx.execute(
        "UPDATE users SET password_hash = ?2,
             email_verified_at = coalesce(email_verified_at, ?3) WHERE id = ?1",
        params![user_id, password_hash, now],
    )?;
    tx.execute(
        "UPDATE sessions SET revoked_at = ?2 WHERE user_id = ?1 AND revoked_at IS NULL",
        params![user_id, now],
    )?;
    tx.execute(
        "UPDATE account_tokens SET used_at = ?2 WHERE user_id = ?1 AND used_at IS NULL",
        params![user_id, now],
    )?;
    tx.execute(
        "DELETE FROM sign_in_failures
         WHERE email = (SELECT email FROM users WHERE id = ?1) AND succeeded_at IS NULL",
        [&user_id],
    )?;
    tx.execute(
        "UPDATE sign_in_failures SET failures = 0
         WHERE email = (SELECT email FROM users WHERE id = ?1)",
        [&user_id],
    )?;
    let user = user_by_id(&tx, &user_id)?;
    tx.commit()?;
    Ok(user)
}

/// Deletes unverified accounts created before `created_before` whose
/// organization never paid (only `email`'s when given).
pub fn delete_unverified(
    conn: &mut Connection,
    created_before: i64,
    email: Option<&str>,
) -> Result<u64, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let doomed: Vec<(String, String)> = tx
        .prepare_cached(
            "SELECT u.id, u.organization_id FROM users u
             WHERE u.email_verified_at IS NULL AND u.created_at < ?1
               AND (?2 IS NULL OR u.email = ?2)
               AND NOT EXISTS (SELECT 1 FROM checkouts c
                               WHERE c.organization_id = u.organization_id
                                 AND c.completed_at IS NOT NULL)
               AND NOT EXISTS (SELECT 1 FROM licenses l
                               WHERE l.organization_id = u.organization_id)
               AND NOT EXISTS (SELECT 1 FROM subscriptions s
                               WHERE s.organization_id = u.organization_id)
             LIMIT 500",
        )?
        .query_map(params![created_before, email], |r| {
            Ok((r.get(0)?, r.get(1)?))
        })?
        .collect::<rusqlite::Result<_>>()?;
    for (user, org) in &doomed {
        tx.execute("DELETE FROM checkouts WHERE organization_id = ?1", [org])?;
        tx.execute("DELETE FROM users WHERE id = ?1", [user])?;
        tx.execute(
            "DELETE FROM organizations WHERE id = ?1
               AND NOT EXISTS (SELECT 1 FROM users WHERE organization_id = ?1)",
            [org],
        )?;
    }
    tx.commit()?;
    Ok(doomed.len() as u64)
}

/// Creates an organization and its first user (role `owner`), unverified.
/// `pilot_limit` caps the organizations with a completed checkout.
pub fn signup(
    conn: &mut Connection,
    email: &str,
    password_hash: &str,
    company_name: &str,
    pilot_limit: Option<u32>,
    now: i64,
) -> Result<User, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let user = signup_in(&tx, email, password_hash, company_name, pilot_limit, now)?;
    tx.commit()?;
    Ok(user)
}

/// [`signup`] inside the caller's (immediate) transaction.
pub fn signup_in(
    tx: &rusqlite::Transaction<'_>,
    email: &str,
    password_hash: &str,
    company_name: &str,
    pilot_limit: Option<u32>,
    now: i64,
) -> Result<User, AccountError> {
    if let Some(limit) = pilot_limit
        && paid_organizations(tx, "")? >= limit
    {
        return Err(AccountError::SignupFull);
    }
    let taken: bool = tx.query_row(
        "SELECT EXISTS (SELECT 1 FROM users WHERE email = ?1)",
        [email],
        |r| r.get(0),
    )?;
    if taken {
        return Err(AccountError::EmailTaken);
    }
    let org_id = uuid::Uuid::new_v4().to_string();
    let user_id = uuid::Uuid::new_v4().to_string();
    tx.execute(
        "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)",
        params![org_id, company_name, now],
    )?;
    tx.execute(
        "INSERT INTO users (id, email, password_hash, organization_id, role, created_at)
         VALUES (?1, ?2, ?3, ?4, 'owner', ?5)",
        params![user_id, email, password_hash, org_id, now],
    )?;
    Ok(User {
        id: user_id,
        email: email.to_owned(),
        organization_id: org_id,
        organization_name: company_name.to_owned(),
        role: "owner".into(),
    })
}

/// An organization with no users yet.
pub fn create_organization(conn: &Connection, name: &str, now: i64) -> rusqlite::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO organizations (id, name, created_at) VALUES (?1, ?2, ?3)",
        params![id, name, now],
    )?;
    Ok(id)
}

pub(super) const USER_COLUMNS: &str = "u.id, u.email, u.organization_id, o.name, u.role";

pub(super) fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
    Ok(User {
        id: r.get(0)?,
        email: r.get(1)?,
        organization_id: r.get(2)?,
        organization_name: r.get(3)?,
        role: r.get(4)?,
    })
}

/// The user with this email (any case) and their password hash.
pub fn find_by_email(
    conn: &Connection,
    email: &str,
) -> Result<Option<(User, String)>, AccountError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {USER_COLUMNS}, u.password_hash FROM users u
                 JOIN organizations o ON o.id = u.organization_id WHERE u.email = ?1"
            ),
            [email],
            |r| Ok((user_from_row(r)?, r.get(5)?)),
        )
        .optional()?)
}

/// The user with this id.
fn user_by_id(conn: &Connection, id: &str) -> rusqlite::Result<Option<User>> {
    conn.query_row(
        &format!(
            "SELECT {USER_COLUMNS} FROM users u
             JOIN organizations o ON o.id = u.organization_id WHERE u.id = ?1"
        ),
        [id],
        user_from_row,
    )
    .optional()
}

/// Starts a session for the user; returns its id.
pub fn create_session(
    conn: &Connection,
    user_id: &str,
    now: i64,
    expires_at: i64,
) -> Result<String, AccountError> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES (?1, ?2, ?3, ?4)",
        params![id, user_id, now, expires_at],
    )?;
    Ok(id)
}

/// The user of a live session (not revoked, not expired at `now`).
pub fn session_user(
    conn: &Connection,
    session_id: &str,
    now: i64,
) -> Result<Option<User>, AccountError> {
    Ok(conn
        .query_row(
            &format!(
                "SELECT {USER_COLUMNS} FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 JOIN organizations o ON o.id = u.organization_id
                 WHERE s.id = ?1 AND s.revoked_at IS NULL AND s.expires_at > ?2"
            ),
            params![session_id, now],
            user_from_row,
        )
        .optional()?)
}

/// Ends a session.
pub fn end_session(conn: &Connection, session_id: &str, now: i64) -> Result<(), AccountError> {
    conn.execute(
        "UPDATE sessions SET revoked_at = ?2 WHERE id = ?1 AND revoked_at IS NULL",
        params![session_id, now],
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::sqlite::Db;

    const NOW: i64 = 1_796_256_000;

    #[test]
    fn signup_counts_only_paid_organizations_and_keeps_emails_unique() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let u = signup(&mut conn, "a@x.io", "h", "Acme", Some(1), NOW).unwrap();
        assert_eq!(u.organization_name, "Acme");
        assert!(matches!(
            signup(&mut conn, "A@X.IO", "h", "Acme", Some(1), NOW),
            Err(AccountError::EmailTaken)
        ));
        // Unpaid signups take no place.
        signup(&mut conn, "b@x.io", "h", "B", Some(1), NOW).unwrap();
        conn.execute(
            "INSERT INTO checkouts (id, organization_id, user_id, plan, billing_interval,
                 created_at, completed_at) VALUES ('cs_1', ?1, ?2, 'p', 'month', 1, 2)",
            params![u.organization_id, u.id],
        )
        .unwrap();
        assert!(matches!(
            signup(&mut conn, "c@x.io", "h", "C", Some(1), NOW),
            Err(AccountError::SignupFull)
        ));
        assert_eq!(find_by_email(&conn, "a@X.io").unwrap().unwrap().0.id, u.id);
    }

    #[test]
    fn sessions_end_at_logout_and_at_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let u = signup(&mut conn, "a@x.io", "h", "Acme", None, NOW).unwrap();
        let sid = create_session(&conn, &u.id, NOW, NOW + 60).unwrap();
        assert_eq!(session_user(&conn, &sid, NOW).unwrap(), Some(u.clone()));
        assert_eq!(session_user(&conn, &sid, NOW + 60).unwrap(), None);
        end_session(&conn, &sid, NOW).unwrap();
        assert_eq!(session_user(&conn, &sid, NOW).unwrap(), None);
    }
}
