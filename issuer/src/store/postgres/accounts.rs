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
use crate::domain::account::{
    AccountError, FAILURE_MEMORY_SECONDS, FailureCount, LinkPurpose, SignInRecord, User,
};
use crate::domain::mail::Mail;
use crate::store::Accounts;

/// The key of the advisory lock signups take turns on ("signup").
const SIGNUP_LOCK: i64 = 0x7369_676e_7570;

/// The user columns, 5 of them, read by [`user_from_row`].
pub(super) const USER_COLUMNS: &str = "u.id, u.email, u.organization_id, o.name, u.role";

/// Organizations with a completed checkout: the pilot's places taken.
/// `$1`: an organization not to count ('' for none).
const PAID_ORGANIZATIONS: &str = "SELECT count(DISTINCT organization_id) FROM checkouts
     WHERE completed_at IS NOT NULL AND organization_id <> $1";

/// The sign-in counts of email $1 from client $2 and from all, 5 columns,
/// read by [`record_from_row`].
const RECORD_COLUMNS: &str = "
    (SELECT failures FROM sign_in_failures WHERE email = lower($1) AND client = $2),
    (SELECT last_failure_at FROM sign_in_failures WHERE email = lower($1) AND client = $2),
    (SELECT succeeded_at FROM sign_in_failures WHERE email = lower($1) AND client = $2),
    (SELECT failures FROM sign_in_failures WHERE email = lower($1) AND client = ''),
    (SELECT last_failure_at FROM sign_in_failures WHERE email = lower($1) AND client = '')";

fn record_from_row(r: &Row) -> Result<SignInRecord, StorageError> {
    let count = |f: usize| -> Result<FailureCount, StorageError> {
        Ok(FailureCount {
            failures: to_u32(column::<Option<i64>>(r, f)?.unwrap_or(0))?,
            last_failure_at: column::<Option<i64>>(r, f + 1)?.unwrap_or(0),
        })
    };
    Ok(SignInRecord {
        client: count(0)?,
        client_succeeded_at: column(r, 2)?,
        email: count(3)?,
    })
}

/// Uses a link of `purpose` once: its user id, or `None`. The `UPDATE`
/// locks the row, so a simultaneous second use finds it used.
async fn use_link(
    tx: &deadpool_postgres::Transaction<'_>,
    token_hash: &str,
    purpose: LinkPurpose,
    now: i64,
) -> Result<Option<String>, StorageError> {
    let stmt = tx
        .prepare_cached(
            "UPDATE account_tokens SET used_at = $3
             WHERE token_hash = $1 AND purpose = $2 AND used_at IS NULL AND expires_at > $3
             RETURNING user_id",
        )
        .await?;
    match tx
        .query_opt(&stmt, &[&token_hash, &purpose.as_str(), &now])
        .await?
    {
        Some(row) => Ok(Some(column(&row, 0)?)),
        None => Ok(None),
    }
}

async fn user_by_id(
    tx: &deadpool_postgres::Transaction<'_>,
    id: &str,
) -> Result<Option<User>, StorageError> {
    let stmt = tx
        .prepare_cached(&format!(
            "SELECT {USER_COLUMNS} FROM users u
             JOIN organizations o ON o.id = u.organization_id WHERE u.id = $1"
        ))
        .await?;
    match tx.query_opt(&stmt, &[&id]).await? {
        Some(row) => Ok(Some(user_from_row(&row, 0)?)),
        None => Ok(None),
    }
}

/// The user in the row's columns from `at`.
pub(super) fn user_from_row(r: &Row, at: usize) -> Result<User, StorageError> {
    Ok(User {
        id: column(r, at)?,
        email: column(r, at + 1)?,
        organization_id: column(r, at + 2)?,
        organization_name: column(r, at + 3)?,
        role: column(r, at + 4)?,
    })
}

/// `signup` inside the caller's transaction (which takes the signup lock).
pub(super) async fn signup_in(
    tx: &deadpool_postgres::Transaction<'_>,
    email: &str,
    password_hash: &str,
    company_name: &str,
    pilot_limit: Option<u32>,
    now: i64,
) -> Result<User, AccountError> {
    // Signups from every process take turns until commit: the count
    // below stays true until this one's user is in.
    let lock = tx
        .prepare_cached("SELECT pg_advisory_xact_lock($1)")
        .await?;
    tx.execute(&lock, &[&SIGNUP_LOCK]).await?;
    if let Some(limit) = pilot_limit {
        let stmt = tx.prepare_cached(PAID_ORGANIZATIONS).await?;
        let paid = to_u32(column(&tx.query_one(&stmt, &[&""]).await?, 0)?)?;
        if paid >= limit {
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
    Ok(User {
        id: user_id,
        email: email.to_owned(),
        organization_id: org_id,
        organization_name: company_name.to_owned(),
        role: "owner".into(),
    })
}

#[async_trait]
impl Accounts for PgStore {
    async fn signup(
        &self,
        email: &str,
        password_hash: &str,
        company_name: &str,
        pilot_limit: Option<u32>,
        now: i64,
    ) -> Result<User, AccountError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let user = signup_in(&tx, email, password_hash, company_name, pilot_limit, now).await?;
        tx.commit().await?;
        Ok(user)
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

    async fn paid_organization_count(&self, except: Option<&str>) -> Result<u32, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(PAID_ORGANIZATIONS).await?;
        let except = except.unwrap_or_default();
        to_u32(column(&conn.query_one(&stmt, &[&except]).await?, 0)?)
    }

    async fn sign_in_lookup(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(SignInRecord, Option<(User, String)>), StorageError> {
        let _ = now;
        let conn = self.db.conn().await?;
        // The counts and the user in one round trip: one row, with NULL
        // user columns when the email has no account.
        let stmt = conn
            .prepare_cached(&format!(
                "SELECT {RECORD_COLUMNS}, {USER_COLUMNS}, u.password_hash
                 FROM (SELECT 1) one
                 LEFT JOIN (users u JOIN organizations o ON o.id = u.organization_id)
                     ON lower(u.email) = lower($1)"
            ))
            .await?;
        let row = conn.query_one(&stmt, &[&email, &client]).await?;
        let record = record_from_row(&row)?;
        let found = match column::<Option<String>>(&row, 5)? {
            Some(_) => Some((user_from_row(&row, 5)?, column(&row, 10)?)),
            None => None,
        };
        Ok((record, found))
    }

    async fn record_failed_sign_in(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<SignInRecord, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        // Both rows in one statement; each row's update is atomic, so
        // simultaneous failures all count. Failures older than the memory
        // are forgotten first.
        let stmt = tx
            .prepare_cached(&format!(
                "INSERT INTO sign_in_failures AS t (email, client, failures, last_failure_at)
                 VALUES (lower($1), $2, 1, $3::bigint), (lower($1), '', 1, $3::bigint)
                 ON CONFLICT (email, client) DO UPDATE SET
                     failures = CASE WHEN excluded.last_failure_at - t.last_failure_at
                                          < {FAILURE_MEMORY_SECONDS}
                                     THEN t.failures + 1 ELSE 1 END,
                     last_failure_at = excluded.last_failure_at"
            ))
            .await?;
        tx.execute(&stmt, &[&email, &client, &now]).await?;
        let stmt = tx
            .prepare_cached(&format!("SELECT {RECORD_COLUMNS}"))
            .await?;
        let record = record_from_row(&tx.query_one(&stmt, &[&email, &client]).await?)?;
        tx.commit().await?;
        Ok(record)
    }

    async fn clear_failed_sign_ins(
        &self,
        email: &str,
        client: &str,
        now: i64,
    ) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO sign_in_failures (email, client, failures, last_failure_at, succeeded_at)
                 VALUES (lower($1), $2, 0, 0, $3)
                 ON CONFLICT (email, client) DO UPDATE SET failures = 0, succeeded_at = $3",
            )
            .await?;
        conn.execute(&stmt, &[&email, &client, &now]).await?;
        Ok(())
    }

    async fn issue_account_link(
        &self,
        email: &str,
        purpose: LinkPurpose,
        token_hash: &str,
        expires_at: i64,
        mail: &Mail,
        now: i64,
    ) -> Result<bool, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let stmt = tx
            .prepare_cached(
                "INSERT INTO account_tokens (token_hash, user_id, purpose, created_at, expires_at)
                 SELECT $1, id, $2, $3, $4 FROM users WHERE lower(email) = lower($5)",
            )
            .await?;
        let inserted = tx
            .execute(
                &stmt,
                &[&token_hash, &purpose.as_str(), &now, &expires_at, &email],
            )
            .await?;
        if inserted == 0 {
            return Ok(false);
        }
        super::outbox::insert_mail(&tx, mail, now).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn verify_email(&self, token_hash: &str, now: i64) -> Result<Option<User>, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let Some(user_id) = use_link(&tx, token_hash, LinkPurpose::VerifyEmail, now).await? else {
            return Ok(None);
        };
        let stmt = tx
            .prepare_cached(
                "UPDATE users SET email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1",
            )
            .await?;
        tx.execute(&stmt, &[&user_id, &now]).await?;
        let user = user_by_id(&tx, &user_id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn reset_password(
        &self,
        token_hash: &str,
        password_hash: &str,
        now: i64,
    ) -> Result<Option<User>, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        let Some(user_id) = use_link(&tx, token_hash, LinkPurpose::ResetPassword, now).await?
        else {
            return Ok(None);
        };
        let steps: [(&str, &[&(dyn tokio_postgres::types::ToSql + Sync)]); 5] = [
            (
                "UPDATE users SET password_hash = $3,
                     email_verified_at = coalesce(email_verified_at, $2) WHERE id = $1",
                &[&user_id, &now, &password_hash],
            ),
            (
                "UPDATE sessions SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
                &[&user_id, &now],
            ),
            (
                "UPDATE account_tokens SET used_at = $2 WHERE user_id = $1 AND used_at IS NULL",
                &[&user_id, &now],
            ),
            (
                "DELETE FROM sign_in_failures WHERE succeeded_at IS NULL
                   AND email = (SELECT lower(email) FROM users WHERE id = $1)",
                &[&user_id],
            ),
            (
                "UPDATE sign_in_failures SET failures = 0
                 WHERE email = (SELECT lower(email) FROM users WHERE id = $1)",
                &[&user_id],
            ),
        ];
        for (sql, params) in steps {
            let stmt = tx.prepare_cached(sql).await?;
            tx.execute(&stmt, params).await?;
        }
        let user = user_by_id(&tx, &user_id).await?;
        tx.commit().await?;
        Ok(user)
    }

    async fn delete_unverified_accounts(
        &self,
        created_before: i64,
        email: Option<&str>,
    ) -> Result<u64, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        // The users' rows stay locked until commit, so a second process
        // deleting the same accounts waits and then finds them gone.
        let stmt = tx
            .prepare_cached(
                "SELECT u.id, u.organization_id FROM users u
                 WHERE u.email_verified_at IS NULL AND u.created_at < $1
                   AND ($2::text IS NULL OR lower(u.email) = lower($2::text))
                   AND NOT EXISTS (SELECT 1 FROM checkouts c
                                   WHERE c.organization_id = u.organization_id
                                     AND c.completed_at IS NOT NULL)
                   AND NOT EXISTS (SELECT 1 FROM licenses l
                                   WHERE l.organization_id = u.organization_id)
                   AND NOT EXISTS (SELECT 1 FROM subscriptions s
                                   WHERE s.organization_id = u.organization_id)
                 LIMIT 500
                 FOR UPDATE OF u SKIP LOCKED",
            )
            .await?;
        let rows = tx.query(&stmt, &[&created_before, &email]).await?;
        let mut deleted = 0;
        for row in &rows {
            let user: String = column(row, 0)?;
            let org: String = column(row, 1)?;
            for (sql, id) in [
                ("DELETE FROM checkouts WHERE organization_id = $1", &org),
                ("DELETE FROM users WHERE id = $1", &user),
                (
                    "DELETE FROM organizations WHERE id = $1
                       AND NOT EXISTS (SELECT 1 FROM users WHERE organization_id = $1)",
                    &org,
                ),
            ] {
                let stmt = tx.prepare_cached(sql).await?;
                tx.execute(&stmt, &[id]).await?;
            }
            deleted += 1;
        }
        tx.commit().await?;
        Ok(deleted)
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
    async fn simultaneous_signups_keep_one_account_per_email() {
        let Some((_db, stores)) = two_processes().await else {
            return;
        };
        // A full pilot (no place at all) refuses every signup.
        for store in &stores {
            assert!(matches!(
                store.signup("u@x.io", "h", "Acme", Some(0), NOW).await,
                Err(AccountError::SignupFull)
            ));
        }
        // One email, in any case, from both processes at once.
        let tasks: Vec<_> = ["same@x.io", "SAME@x.io", "same@X.IO", "Same@x.io"]
            .into_iter()
            .enumerate()
            .map(|(n, email)| {
                let store = Arc::clone(&stores[n % 2]);
                tokio::spawn(async move { store.signup(email, "h", "Acme", Some(1), NOW).await })
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
        assert_eq!(stores[1].user_count().await.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn simultaneous_failed_sign_ins_all_count_whatever_the_case() {
        let Some((_db, stores)) = two_processes().await else {
            return;
        };
        let tasks: Vec<_> = (0..10)
            .map(|n| {
                let store = Arc::clone(&stores[n % 2]);
                let email = if n % 2 == 0 { "a@x.io" } else { "A@X.io" };
                let client = if n < 6 { "c1" } else { "c2" };
                tokio::spawn(async move { store.record_failed_sign_in(email, client, NOW).await })
            })
            .collect();
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        let (record, _) = stores[1]
            .sign_in_lookup("a@X.IO", "c1", NOW + 1)
            .await
            .unwrap();
        assert_eq!((record.client.failures, record.email.failures), (6, 10));
        stores[0]
            .clear_failed_sign_ins("A@x.IO", "c1", NOW + 2)
            .await
            .unwrap();
        let (record, _) = stores[1]
            .sign_in_lookup("a@x.io", "c1", NOW + 3)
            .await
            .unwrap();
        assert_eq!(record.client.failures, 0, "cleared whatever the case");
        assert_eq!(record.client_succeeded_at, Some(NOW + 2));
        assert_eq!(record.email.failures, 10, "the others' count stays");
    }
}
