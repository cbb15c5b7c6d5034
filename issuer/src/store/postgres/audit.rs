//! The audit log on PostgreSQL, with the behaviour of
//! `store/sqlite/audit.rs`: appending events and reading them back, in
//! the order they were appended (the identity column `id`).

use async_trait::async_trait;
use deadpool_postgres::GenericClient;

use super::{PgStore, column};
use crate::domain::StorageError;
use crate::domain::audit::Event;
use crate::store::AuditTrail;

/// Appends one event inside the caller's transaction.
pub(super) async fn insert_event<C: GenericClient>(
    client: &C,
    e: &Event,
) -> Result<(), StorageError> {
    let stmt = client
        .prepare_cached(
            "INSERT INTO audit_log (at, event, outcome, actor, ip, user_agent, subject_type,
                 subject_id, detail)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .await?;
    client
        .execute(
            &stmt,
            &[
                &e.at,
                &e.event,
                &e.outcome,
                &e.actor,
                &e.ip,
                &e.user_agent,
                &e.subject_type,
                &e.subject_id,
                &e.detail,
            ],
        )
        .await?;
    Ok(())
}

#[async_trait]
impl AuditTrail for PgStore {
    async fn append_audit(&self, events: &[Event]) -> Result<(), StorageError> {
        if events.is_empty() {
            return Ok(());
        }
        // One statement for the whole batch (one round trip, atomic on
        // its own): the columns as arrays, unnested into rows in order.
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "INSERT INTO audit_log (at, event, outcome, actor, ip, user_agent, subject_type,
                     subject_id, detail)
                 SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[],
                     $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])",
            )
            .await?;
        let at: Vec<i64> = events.iter().map(|e| e.at).collect();
        let event: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        let outcome: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
        let text = |f: fn(&Event) -> &Option<String>| -> Vec<Option<&str>> {
            events.iter().map(|e| f(e).as_deref()).collect()
        };
        conn.execute(
            &stmt,
            &[
                &at,
                &event,
                &outcome,
                &text(|e| &e.actor),
                &text(|e| &e.ip),
                &text(|e| &e.user_agent),
                &text(|e| &e.subject_type),
                &text(|e| &e.subject_id),
                &text(|e| &e.detail),
            ],
        )
        .await?;
        Ok(())
    }

    async fn audit_events(
        &self,
        since: Option<i64>,
        event: Option<&str>,
        limit: u32,
    ) -> Result<Vec<Event>, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn
            .prepare_cached(
                "SELECT at, event, outcome, actor, ip, user_agent, subject_type, subject_id, detail
                 FROM (SELECT * FROM audit_log
                       WHERE at >= coalesce($1::bigint, 0) AND ($2::text IS NULL OR event = $2)
                       ORDER BY id DESC LIMIT $3) newest
                 ORDER BY id",
            )
            .await?;
        let rows = conn
            .query(&stmt, &[&since, &event, &i64::from(limit)])
            .await?;
        rows.iter()
            .map(|r| {
                Ok(Event {
                    at: column(r, 0)?,
                    event: column(r, 1)?,
                    outcome: column(r, 2)?,
                    actor: column(r, 3)?,
                    ip: column(r, 4)?,
                    user_agent: column(r, 5)?,
                    subject_type: column(r, 6)?,
                    subject_id: column(r, 7)?,
                    detail: column(r, 8)?,
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before: i64, limit: u32) -> Result<u64, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(PRUNE).await?;
        Ok(conn.execute(&stmt, &[&before, &i64::from(limit)]).await?)
    }
}

/// Up to `$2` events from before `$1`, oldest first; rows another
/// process is deleting are skipped.
const PRUNE: &str = "
    DELETE FROM audit_log
    WHERE id IN (
        SELECT id FROM audit_log
        WHERE at < $1
        ORDER BY at
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )";

/// What the conformance suite cannot see: a batch that PostgreSQL refuses
/// in part is refused whole.
#[cfg(test)]
mod tests {
    use crate::store::postgres::testing::TestDatabase;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_batch_is_appended_whole_or_not_at_all() {
        let Some(db) = TestDatabase::create().await else {
            return;
        };
        let store = db.open().await;
        // PostgreSQL's text has no NUL character: the second event fails.
        let batch = [
            Event::new(10, "login", "ok"),
            Event::new(20, "login", "ok").detail("a\0b"),
        ];
        assert!(store.append_audit(&batch).await.is_err());
        assert!(
            store
                .audit_events(None, None, 100)
                .await
                .unwrap()
                .is_empty()
        );
        store.append_audit(&batch[..1]).await.unwrap();
        store.append_audit(&[]).await.unwrap();
        assert_eq!(
            store.audit_events(None, None, 100).await.unwrap(),
            batch[..1]
        );
    }
}
