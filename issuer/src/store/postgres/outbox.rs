//! The mail outbox on PostgreSQL, with the behaviour of
//! `store/sqlite/outbox.rs`: queueing inside the caller's transaction,
//! claiming due mail, recording each attempt's outcome, and the operator's
//! listing and retry.
//!
//! Several processes may send: a claim is one statement that locks the
//! due rows with `FOR UPDATE SKIP LOCKED` and moves their next attempt
//! ahead, so a mail another sender is claiming is passed over, never
//! claimed twice. Ties in time order by id byte by byte (`COLLATE "C"`),
//! as SQLite does.

use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::GenericClient;
use zeroize::Zeroizing;

use super::{PgStore, column};
use crate::domain::StorageError;
use crate::domain::mail::{
    CLAIM_SECS, DueMail, Failure, GAVE_UP, Mail, Next, OutboxBacklog, OutboxEntry, OutboxStatus,
    after_failure,
};
use crate::store::Outbox;

/// Queues a mail inside the caller's transaction (the change that needs
/// it); returns its id.
pub(super) async fn insert_mail<C: GenericClient>(
    client: &C,
    mail: &Mail,
    now: i64,
) -> Result<String, StorageError> {
    let id = uuid::Uuid::new_v4().to_string();
    let stmt = client
        .prepare_cached(
            "INSERT INTO email_outbox (id, kind, recipient, subject, body, created_at, next_attempt_at)
             VALUES ($1, $2, $3, $4, $5, $6, $6)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[&id, &mail.kind, &mail.to, &mail.subject, &mail.body, &now],
        )
        .await?;
    Ok(id)
}

/// After a mail's body (it can hold a license key) was wiped: vacuums the
/// outbox so that the row's old version, body included, does not linger
/// in the table. Best effort, on a connection outside any transaction: a
/// transaction that still sees the old version keeps it until the next
/// vacuum (or autovacuum).
async fn scrub(conn: &deadpool_postgres::Object) {
    if let Err(e) = conn.batch_execute("VACUUM email_outbox").await {
        tracing::debug!(error = %e, "vacuum after wiping a mail body was skipped");
    }
}

#[async_trait]
impl Outbox for PgStore {
    async fn enqueue_mail(&self, mail: &Mail, now: i64) -> Result<String, StorageError> {
        let conn = self.db.conn().await?;
        insert_mail(&conn, mail, now).await
    }

    async fn claim_mail(&self, now: i64, limit: usize) -> Result<Vec<DueMail>, StorageError> {
        let conn = self.db.conn().await?;
        // One statement, so one transaction: the rows it picks are locked
        // (rows other claimers hold are skipped, not waited for) until
        // their next attempt has moved.
        let stmt = conn
            .prepare_cached(
                r#"WITH due AS (
                       SELECT id FROM email_outbox
                       WHERE sent_at IS NULL AND next_attempt_at <= $1
                       ORDER BY created_at, id COLLATE "C" LIMIT $2
                       FOR UPDATE SKIP LOCKED)
                   UPDATE email_outbox m SET next_attempt_at = $3
                   FROM due WHERE m.id = due.id
                   RETURNING m.created_at, m.id, m.kind, m.recipient, m.subject, m.body"#,
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = conn
            .query(&stmt, &[&now, &limit, &now.saturating_add(CLAIM_SECS)])
            .await?;
        // RETURNING has no order of its own: oldest first again.
        let mut due = Vec::with_capacity(rows.len());
        for r in &rows {
            let created_at: i64 = column(r, 0)?;
            let body: Option<String> = column(r, 5)?;
            due.push((
                created_at,
                DueMail {
                    id: column(r, 1)?,
                    kind: column(r, 2)?,
                    recipient: column(r, 3)?,
                    subject: column(r, 4)?,
                    body: body.map(Zeroizing::new),
                },
            ));
        }
        due.sort_by(|(a_at, a), (b_at, b)| a_at.cmp(b_at).then_with(|| a.id.cmp(&b.id)));
        Ok(due.into_iter().map(|(_, mail)| mail).collect())
    }

    async fn mail_sent(&self, id: &str, now: i64) -> Result<(), StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE email_outbox
                 SET sent_at = $2, body = NULL, last_error = NULL, attempts = attempts + 1
                 WHERE id = $1",
            )
            .await?;
        conn.execute(&stmt, &[&id, &now]).await?;
        scrub(&conn).await;
        Ok(())
    }

    async fn mail_failed(
        &self,
        id: &str,
        now: i64,
        failure: &Failure,
        retry_initial: Duration,
    ) -> Result<Option<Next>, StorageError> {
        let mut conn = self.db.conn().await?;
        let tx = conn.transaction().await?;
        // Locked until commit: simultaneous outcomes of one mail count in
        // turn.
        let stmt = tx
            .prepare_cached(
                "SELECT attempts FROM email_outbox WHERE id = $1 AND sent_at IS NULL FOR UPDATE",
            )
            .await?;
        let Some(row) = tx.query_opt(&stmt, &[&id]).await? else {
            return Ok(None);
        };
        let next = after_failure(column(&row, 0)?, failure, now, retry_initial);
        let stmt = tx
            .prepare_cached(
                "UPDATE email_outbox SET attempts = $2, next_attempt_at = $3, last_error = $4
                 WHERE id = $1",
            )
            .await?;
        tx.execute(
            &stmt,
            &[
                &id,
                &next.attempts(),
                &next.next_attempt_at(),
                &failure.error,
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(Some(next))
    }

    async fn outbox(
        &self,
        unsent_only: bool,
        limit: u32,
    ) -> Result<Vec<OutboxEntry>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                r#"SELECT id, kind, recipient, subject, created_at, attempts, sent_at,
                          next_attempt_at, last_error
                   FROM email_outbox
                   WHERE sent_at IS NULL OR NOT $1
                   ORDER BY created_at DESC, id COLLATE "C" DESC LIMIT $2"#,
            )
            .await?;
        let rows = conn
            .query(&stmt, &[&unsent_only, &i64::from(limit)])
            .await?;
        let mut entries = Vec::with_capacity(rows.len());
        for r in rows.iter().rev() {
            let sent_at: Option<i64> = column(r, 6)?;
            let next: i64 = column(r, 7)?;
            let status = OutboxStatus::of(sent_at, next);
            entries.push(OutboxEntry {
                id: column(r, 0)?,
                kind: column(r, 1)?,
                recipient: column(r, 2)?,
                subject: column(r, 3)?,
                created_at: column(r, 4)?,
                attempts: column(r, 5)?,
                status,
                sent_at,
                next_attempt_at: (status == OutboxStatus::Waiting).then_some(next),
                last_error: column(r, 8)?,
            });
        }
        Ok(entries)
    }

    async fn outbox_backlog(&self) -> Result<OutboxBacklog, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT count(*) FILTER (WHERE next_attempt_at <> $1),
                        count(*) FILTER (WHERE next_attempt_at = $1),
                        min(created_at)
                 FROM email_outbox WHERE sent_at IS NULL",
            )
            .await?;
        let row = conn.query_one(&stmt, &[&GAVE_UP]).await?;
        Ok(OutboxBacklog {
            waiting: column::<i64>(&row, 0)?.try_into().unwrap_or(0),
            given_up: column::<i64>(&row, 1)?.try_into().unwrap_or(0),
            oldest_unsent_at: column(&row, 2)?,
        })
    }

    async fn retry_mail(&self, id: &str, now: i64) -> Result<bool, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE email_outbox SET attempts = 0, next_attempt_at = $2
                 WHERE id = $1 AND sent_at IS NULL",
            )
            .await?;
        Ok(conn.execute(&stmt, &[&id, &now]).await? == 1)
    }

    async fn release_mail(&self, ids: &[String], now: i64) -> Result<usize, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "UPDATE email_outbox SET next_attempt_at = $2
                 WHERE id = ANY($1) AND sent_at IS NULL AND next_attempt_at > $2",
            )
            .await?;
        let released = conn.execute(&stmt, &[&ids, &now]).await?;
        Ok(usize::try_from(released).unwrap_or(usize::MAX))
    }
}

/// What the conformance suite cannot see: a claim in progress in another
/// process, and what is left of a sent mail's body in the table.
#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::postgres::testing::TestDatabase;

    const NOW: i64 = 1_796_256_000;

    fn mail(to: &str, body: &str) -> Mail {
        Mail {
            kind: "license_key",
            to: to.to_owned(),
            subject: "Your key".to_owned(),
            body: body.to_owned(),
        }
    }

    /// A store of its own (another process) with a connection at hand.
    async fn raw(db: &TestDatabase) -> deadpool_postgres::Object {
        PgStore::open(
            db.url(),
            crate::store::Migrations::Apply,
            crate::store::test_pepper(),
        )
        .await
        .unwrap()
        .db
        .conn()
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn mail_locked_by_another_claim_is_passed_over_without_waiting() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.open().await;
        let first = store.enqueue_mail(&mail("a@x.io", "A"), NOW).await.unwrap();
        let second = store
            .enqueue_mail(&mail("b@x.io", "B"), NOW + 1)
            .await
            .unwrap();
        let third = store
            .enqueue_mail(&mail("c@x.io", "C"), NOW + 2)
            .await
            .unwrap();

        // Another process is in the middle of claiming the oldest mail.
        let mut other = raw(&db).await;
        let claiming = other.transaction().await.unwrap();
        claiming
            .execute(
                "SELECT id FROM email_outbox WHERE id = $1 FOR UPDATE",
                &[&first],
            )
            .await
            .unwrap();
        let claim = store.claim_mail(NOW + 10, 10);
        let due = tokio::time::timeout(Duration::from_secs(5), claim)
            .await
            .expect("a claim waited for another one")
            .unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [second.as_str(), third.as_str()]);

        // That claim gave up: the mail is there for the next one.
        claiming.rollback().await.unwrap();
        let due = store.claim_mail(NOW + 10, 10).await.unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [first.as_str()]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_sent_mail_leaves_no_copy_of_its_body_in_the_table() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.open().await;
        let secret = "CODITECT-PILOT-SECRET-KEY-4242";
        let kept = store
            .enqueue_mail(&mail("a@x.io", "kept"), NOW)
            .await
            .unwrap();
        let id = store
            .enqueue_mail(&mail("b@x.io", secret), NOW)
            .await
            .unwrap();
        store.mail_sent(&id, NOW + 1).await.unwrap();

        let conn = raw(&db).await;
        let body: Option<String> = conn
            .query_one("SELECT body FROM email_outbox WHERE id = $1", &[&id])
            .await
            .unwrap()
            .get(0);
        assert_eq!(body, None);
        let vacuums: i64 = conn
            .query_one(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'email_outbox'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        assert!(vacuums >= 1, "the outbox was vacuumed");
        // The pages themselves, where the server can show them
        // (pageinspect ships with PostgreSQL's contrib modules).
        if conn
            .batch_execute("CREATE EXTENSION IF NOT EXISTS pageinspect")
            .await
            .is_ok()
        {
            let found: Vec<(String, bool)> = conn
                .query(
                    "SELECT w, EXISTS (
                         SELECT 1 FROM generate_series(
                             0, pg_relation_size('email_outbox') / current_setting('block_size')::int - 1) b
                         WHERE position(convert_to(w, 'UTF8')
                                        in get_raw_page('email_outbox', b::int)) > 0)
                     FROM unnest(ARRAY[$1, $2]) w",
                    &[&secret, &"kept"],
                )
                .await
                .unwrap()
                .iter()
                .map(|r| (r.get(0), r.get(1)))
                .collect();
            assert_eq!(
                found,
                [(secret.to_owned(), false), ("kept".to_owned(), true)],
                "the wiped body is gone from the pages, an unsent one is there"
            );
        } else {
            eprintln!("pageinspect is not available: the pages were not searched");
        }
        let due = store.claim_mail(NOW + 2, 10).await.unwrap();
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].id, kept);
    }
}
