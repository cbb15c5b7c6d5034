//! Accounts on SQLite: organizations and users, failed sign-ins (the
//! lockout), and login sessions. A login creates a session row; the JWT
//! carries its id, and logout ends the session server-side.

use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use crate::domain::account::{AccountError, LOCKOUT_SECONDS, LOCKOUT_THRESHOLD, User};

/// Until when sign-ins for `email` are locked at `now`, if they are.
pub fn locked_until(conn: &Connection, email: &str, now: i64) -> Result<Option<i64>, AccountError> {
    let until: Option<Option<i64>> = conn
        .prepare_cached("SELECT locked_until FROM login_throttle WHERE email = ?1")?
        .query_row([email], |r| r.get(0))
        .optional()?;
    Ok(until.flatten().filter(|u| *u > now))
}

/// Counts a failed sign-in for `email` (whether or not it has an account);
/// returns the end of the lock when this failure locks it.
pub fn record_failure(
    conn: &Connection,
    email: &str,
    now: i64,
) -> Result<Option<i64>, AccountError> {
    let row: Option<(u32, i64)> = conn
        .prepare_cached("SELECT failures, updated_at FROM login_throttle WHERE email = ?1")?
        .query_row([email], |r| Ok((r.get(0)?, r.get(1)?)))
        .optional()?;
    // Failures older than the window are forgotten.
    let previous = row
        .filter(|(_, at)| now - at < LOCKOUT_SECONDS)
        .map_or(0, |(f, _)| f);
    let failures = previous + 1;
    let (failures, lock) = if failures >= LOCKOUT_THRESHOLD {
        (0, Some(now + LOCKOUT_SECONDS))
    } else {
        (failures, None)
    };
    conn.prepare_cached(
        "INSERT INTO login_throttle (email, failures, locked_until, updated_at)
         VALUES (?1, ?2, ?3, ?4)
         ON CONFLICT (email) DO UPDATE SET failures = ?2,
             locked_until = coalesce(?3, locked_until), updated_at = ?4",
    )?
    .execute(params![email, failures, lock, now])?;
    Ok(lock)
}

/// Forgets failed sign-ins after a successful one.
pub fn clear_failures(conn: &Connection, email: &str) -> Result<(), AccountError> {
    conn.prepare_cached("DELETE FROM login_throttle WHERE email = ?1")?
        .execute([email])?;
    Ok(())
}

/// Creates an organization and its first user (role `owner`). `users_limit`
/// caps the number of users (the pilot's size).
pub fn signup(
    conn: &mut Connection,
    email: &str,
    password_hash: &str,
    company_name: &str,
    users_limit: Option<u32>,
    now: i64,
) -> Result<User, AccountError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if let Some(limit) = users_limit {
        let users: u32 = tx.query_row("SELECT count(*) FROM users", [], |r| r.get(0))?;
        if users >= limit {
            return Err(AccountError::SignupFull);
        }
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
    tx.commit()?;
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

const USER_COLUMNS: &str = "u.id, u.email, u.organization_id, o.name, u.role";

fn user_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<User> {
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
    fn signup_respects_the_limit_and_unique_emails() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let mut conn = db.conn().unwrap();
        let u = signup(&mut conn, "a@x.io", "h", "Acme", Some(2), NOW).unwrap();
        assert_eq!(u.organization_name, "Acme");
        assert!(matches!(
            signup(&mut conn, "A@X.IO", "h", "Acme", Some(2), NOW),
            Err(AccountError::EmailTaken)
        ));
        signup(&mut conn, "b@x.io", "h", "B", Some(2), NOW).unwrap();
        assert!(matches!(
            signup(&mut conn, "c@x.io", "h", "C", Some(2), NOW),
            Err(AccountError::SignupFull)
        ));
        assert_eq!(find_by_email(&conn, "a@X.io").unwrap().unwrap().0.id, u.id);
    }

    #[test]
    fn five_failures_lock_for_fifteen_minutes_and_then_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
        let conn = db.conn().unwrap();
        for i in 0..4 {
            assert_eq!(record_failure(&conn, "a@x.io", NOW + i).unwrap(), None);
            assert_eq!(locked_until(&conn, "a@x.io", NOW + i).unwrap(), None);
        }
        let until = record_failure(&conn, "A@x.io", NOW + 4).unwrap();
        assert_eq!(until, Some(NOW + 4 + LOCKOUT_SECONDS));
        assert_eq!(locked_until(&conn, "a@x.io", NOW + 5).unwrap(), until);
        // The lock lives in the database: a new connection (a restarted
        // server) sees it too.
        drop(conn);
        let conn = Db::open(&dir.path().join("t.db")).unwrap().conn().unwrap();
        assert_eq!(locked_until(&conn, "a@x.io", NOW + 600).unwrap(), until);
        assert_eq!(
            locked_until(&conn, "a@x.io", NOW + 4 + LOCKOUT_SECONDS).unwrap(),
            None
        );
        // Old failures are forgotten; a success clears the count.
        record_failure(&conn, "b@x.io", NOW).unwrap();
        for i in 0..4 {
            record_failure(&conn, "b@x.io", NOW + LOCKOUT_SECONDS + i).unwrap();
        }
        assert_eq!(
            locked_until(&conn, "b@x.io", NOW + LOCKOUT_SECONDS + 5).unwrap(),
            None
        );
        clear_failures(&conn, "b@x.io").unwrap();
        for i in 0..4 {
            assert_eq!(
                record_failure(&conn, "b@x.io", NOW + LOCKOUT_SECONDS + 10 + i).unwrap(),
                None
            );
        }
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
