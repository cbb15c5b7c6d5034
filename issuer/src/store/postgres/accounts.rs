//! Accounts on PostgreSQL: organizations and users, failed sign-ins (the
//! lockout), and login sessions, with the behaviour of
//! `store/sqlite/accounts.rs`.
//!
//! Emails compare without case: `users` is unique on `lower(email)` and
//! `login_throttle` keeps the lowered email. Across processes, signups
//! take turns on an advisory lock (the users limit counts, then inserts),
//! and a failed sign-in is counted by one `INSERT … ON CONFLICT`
//! statement, so simultaneous failures all count.

use async_trait::async_trait;
use tokio_postgres::Row;

use super::{PgStore, column, is_unique_violation, to_u32};
use crate::domain::StorageError;
use crate::domain::account::{AccountError, LOCKOUT_SECONDS, LOCKOUT_THRESHOLD, User};
use crate::store::Accounts;

/// The key of the advisory lock signups take turns on ("signup").
const SIGNUP_LOCK: i64 = 0x7369_676e_7570;

/// The user columns, 5 of them, read by [`user_from_row`].
const USER_COLUMNS: &str = "u.id, u.email, u.organization_id, o.name, u.role";

/// The user in the row's columns from `at`.
fn user_from_row(r: &Row, at: usize) -> Result<User, StorageError> {
    Ok(User {
        id: column(r, at)?,
        email: column(r, at + 1)?,
        organization_id: column(r, at + 2)?,
        organization_name: column(r, at + 3)?,
        role: column(r, at + 4)?,
    })
}

#[async_trait]
impl Accounts for PgStore {
    async fn signup(
        &self,
        email: &str,
        password_hash: &str,
        company_name: &str,
        users_limit: Option<u32>,
        now: i64,
    ) -> Result<User, AccountError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        // Signups from every process take turns until commit: the count
        // below stays true until this one's user is in.
        let lock = tx
            .prepare_cached("SELECT pg_advisory_xact_lock($1)")
            .await?;
        tx.execute(&lock, &[&SIGNUP_LOCK]).await?;
        if let Some(limit) = users_limit {
            let stmt = tx.prepare_cached("SELECT count(*) FROM users").await?;
            let users = to_u32(column(&tx.query_one(&stmt, &[]).await?, 0)?)?;
            if users >= limit {
                return Err(AccountError::SignupFull);
            }
        }
        let stmt = tx
            .prepare_cached("SELECT EXISTS (SELECT 1 FROM users WHERE lower(email) = lower($1))")
            .await?;
        let taken: bool = column(&tx.query_one(&stmt, &[&email]).await?, 0)?;
        if taken {
            return Err(AccountError::EmailTaken);
        }
        let org_id = uuid::Uuid::new_v4().to_string();
        let user_id = uuid::Uuid::new_v4().to_string();
        let stmt = tx
            .prepare_cached("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .await?;
        tx.execute(&stmt, &[&org_id, &company_name, &now]).await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO users (id, email, password_hash, organization_id, role, created_at)
                 VALUES ($1, $2, $3, $4, 'owner', $5)",
            )
            .await?;
        tx.execute(&stmt, &[&user_id, &email, &password_hash, &org_id, &now])
            .await
            .map_err(|e| {
                // A writer that does not take the lock got there first.
                if is_unique_violation(&e) {
                    AccountError::EmailTaken
                } else {
                    e.into()
                }
            })?;
        tx.commit().await?;
        Ok(User {
            id: user_id,
            email: email.to_owned(),
            organization_id: org_id,
            organization_name: company_name.to_owned(),
            role: "owner".into(),
        })
    }

    async fn create_organization(&self, name: &str, now: i64) -> Result<String, StorageError> {
        let conn = self.db.conn().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let stmt = conn
            .prepare_cached("INSERT INTO organizations (id, name, created_at) VALUES ($1, $2, $3)")
            .await?;
        conn.execute(&stmt, &[&id, &name, &now]).await?;
        Ok(id)
    }

    async fn user_count(&self) -> Result<u32, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached("SELECT count(*) FROM users").await?;
        to_u32(column(&conn.query_one(&stmt, &[]).await?, 0)?)
    }

    async fn sign_in_lookup(
        &self,
        email: &str,
        now: i64,
    ) -> Result<(Option<i64>, Option<(User, String)>), StorageError> {
        let conn = self.db.conn().await?;
        // The lock and the user in one round trip: one row, with NULL user
        // columns when the email has no account.
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT (SELECT locked_until FROM login_throttle WHERE email = lower($1)),
                        {USER_COLUMNS}, u.password_hash
                 FROM (SELECT 1) one
                 LEFT JOIN (users u JOIN organizations o ON o.id = u.organization_id)
                     ON lower(u.email) = lower($1)"
            ))
            .await?;
        let row = conn.query_one(&stmt, &[&email]).await?;
        let locked = column::<Option<i64>>(&row, 0)?.filter(|until| *until > now);
        let found = match column::<Option<String>>(&row, 1)? {
            Some(_) => Some((user_from_row(&row, 1)?, column(&row, 6)?)),
            None => None,
        };
        Ok((locked, found))
    }

    async fn record_failed_sign_in(
        &self,
        email: &str,
        now: i64,
    ) -> Result<Option<i64>, StorageError> {
        let conn = self.db.conn().await?;
        // SQLite's `record_failure` in one statement, atomic across
        // processes: failures older than the window are forgotten; the
        // failure that reaches the threshold sets the lock and starts the
        // count again at 0. Only that failure leaves a count of 0, so the
        // row it returns says whether this failure locked the email.
        let previous = format!(
            "(CASE WHEN excluded.updated_at - t.updated_at < {LOCKOUT_SECONDS}
                   THEN t.failures ELSE 0 END)"
        );
        let stmt = conn
            .prepare_cached(&format!(
                "INSERT INTO login_throttle AS t (email, failures, locked_until, updated_at)
                 VALUES (lower($1),
                         CASE WHEN 1 >= {LOCKOUT_THRESHOLD} THEN 0 ELSE 1 END,
                         CASE WHEN 1 >= {LOCKOUT_THRESHOLD}
                              THEN $2::bigint + {LOCKOUT_SECONDS} END,
                         $2::bigint)
                 ON CONFLICT (email) DO UPDATE SET
                     failures = CASE WHEN {previous} + 1 >= {LOCKOUT_THRESHOLD}
                                     THEN 0 ELSE {previous} + 1 END,
                     locked_until = CASE WHEN {previous} + 1 >= {LOCKOUT_THRESHOLD}
                                         THEN excluded.updated_at + {LOCKOUT_SECONDS}
                                         ELSE t.locked_until END,
                     updated_at = excluded.updated_at
                 RETURNING CASE WHEN t.failures = 0 THEN t.locked_until END"
            ))
            .await?;
        column(&conn.query_one(&stmt, &[&email, &now]).await?, 0)
    }

    async fn clear_failed_sign_ins(&self, email: &str) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached("DELETE FROM login_throttle WHERE email = lower($1)")
            .await?;
        conn.execute(&stmt, &[&email]).await?;
        Ok(())
    }

    async fn create_session(
        &self,
        user_id: &str,
        now: i64,
        expires_at: i64,
    ) -> Result<String, StorageError> {
        let conn = self.db.conn().await?;
        let id = uuid::Uuid::new_v4().to_string();
        let stmt = conn
            .prepare_cached(
                "INSERT INTO sessions (id, user_id, created_at, expires_at) VALUES ($1, $2, $3, $4)",
            )
            .await?;
        conn.execute(&stmt, &[&id, &user_id, &now, &expires_at])
            .await?;
        Ok(id)
    }

    async fn session_user(&self, session_id: &str, now: i64) -> Result<Option<User>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM sessions s
                 JOIN users u ON u.id = s.user_id
                 JOIN organizations o ON o.id = u.organization_id
                 WHERE s.id = $1 AND s.revoked_at IS NULL AND s.expires_at > $2"
            ))
            .await?;
        match conn.query_opt(&stmt, &[&session_id, &now]).await? {
            Some(row) => Ok(Some(user_from_row(&row, 0)?)),
            None => Ok(None),
        }
    }

    async fn end_session(&self, session_id: &str, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE sessions SET revoked_at = $2 WHERE id = $1 AND revoked_at IS NULL",
            )
            .await?;
        conn.execute(&stmt, &[&session_id, &now]).await?;
        Ok(())
    }
}

/// What the conformance suite cannot see: several processes (each store
/// here has a pool of its own) signing up and failing sign-ins at once.
#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::store::SharedStore;
    use crate::store::postgres::testing::TestDatabase;

    const NOW: i64 = 1_796_256_000;

    /// Two stores on one new database, as two issuer processes.
    async fn two_processes() -> Option<(TestDatabase, [SharedStore; 2])> {
        let db = TestDatabase::create().await?;
        let stores = [db.open().await, db.open().await];
        Some((db, stores))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_signups_keep_the_limit_and_one_account_per_email() {
        let Some((_db, stores)) = two_processes().await else {
            return;
        };
        let tasks: Vec<_> = (0..10)
            .map(|n| {
                let store = Arc::clone(&stores[n % 2]);
                tokio::spawn(async move {
                    store
                        .signup(&format!("u{n}@x.io"), "h", "Acme", Some(3), NOW)
                        .await
                })
            })
            .collect();
        let (mut signed_up, mut full) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => signed_up += 1,
                Err(AccountError::SignupFull) => full += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!((signed_up, full), (3, 7));
        assert_eq!(stores[0].user_count().await.unwrap(), 3);

        // One email, in any case, from both processes at once.
        let tasks: Vec<_> = ["same@x.io", "SAME@x.io", "same@X.IO", "Same@x.io"]
            .into_iter()
            .enumerate()
            .map(|(n, email)| {
                let store = Arc::clone(&stores[n % 2]);
                tokio::spawn(async move { store.signup(email, "h", "Acme", None, NOW).await })
            })
            .collect();
        let (mut signed_up, mut taken) = (0, 0);
        for t in tasks {
            match t.await.unwrap() {
                Ok(_) => signed_up += 1,
                Err(AccountError::EmailTaken) => taken += 1,
                Err(other) => panic!("{other:?}"),
            }
        }
        assert_eq!((signed_up, taken), (1, 3));
        assert_eq!(stores[1].user_count().await.unwrap(), 4);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_failed_sign_ins_all_count_whatever_the_case() {
        let Some((_db, stores)) = two_processes().await else {
            return;
        };
        let failures = usize::try_from(LOCKOUT_THRESHOLD).unwrap();
        let tasks: Vec<_> = (0..failures)
            .map(|n| {
                let store = Arc::clone(&stores[n % 2]);
                let email = if n % 2 == 0 { "a@x.io" } else { "A@X.io" };
                tokio::spawn(async move { store.record_failed_sign_in(email, NOW).await })
            })
            .collect();
        let mut locks = Vec::new();
        for t in tasks {
            locks.extend(t.await.unwrap().unwrap());
        }
        assert_eq!(locks, [NOW + LOCKOUT_SECONDS], "exactly one failure locks");
        let (locked, _) = stores[1].sign_in_lookup("a@X.IO", NOW + 1).await.unwrap();
        assert_eq!(locked, Some(NOW + LOCKOUT_SECONDS));
        stores[0].clear_failed_sign_ins("A@x.IO").await.unwrap();
        let (locked, _) = stores[1].sign_in_lookup("a@x.io", NOW + 1).await.unwrap();
        assert_eq!(locked, None, "cleared whatever the case");
    }
}
