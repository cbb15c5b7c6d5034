//! Rate-limit counters on SQLite: the GCRA rule of `domain::rate_limit`
//! applied to a row of `rate_limits`, read and written in one `IMMEDIATE`
//! transaction on the writer's turn. The SQLite server counts in memory
//! (`app::limits`, one process); this gives the backend the whole storage
//! interface, held to the same conformance checks as PostgreSQL.

use async_trait::async_trait;
use rusqlite::{Connection, OptionalExtension, TransactionBehavior, params};

use super::SqliteStore;
use crate::domain::StorageError;
use crate::domain::rate_limit::{Gcra, GcraOutcome};
use crate::store::RateCounters;

fn check(
    conn: &mut Connection,
    bucket: &str,
    gcra: &Gcra,
    now_ms: i64,
) -> rusqlite::Result<GcraOutcome> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let stored: Option<i64> = tx
        .query_row(
            "SELECT tat_ms FROM rate_limits WHERE bucket = ?1",
            [bucket],
            |r| r.get(0),
        )
        .optional()?;
    let outcome = gcra.step(stored, now_ms);
    if outcome.allowed {
        tx.execute(
            "INSERT INTO rate_limits (bucket, tat_ms) VALUES (?1, ?2)
             ON CONFLICT (bucket) DO UPDATE SET tat_ms = excluded.tat_ms",
            params![bucket, outcome.tat_ms],
        )?;
    }
    tx.commit()?;
    Ok(outcome)
}

fn prune(conn: &Connection, now_ms: i64, limit: u32) -> rusqlite::Result<usize> {
    conn.execute(
        "DELETE FROM rate_limits WHERE bucket IN
             (SELECT bucket FROM rate_limits WHERE tat_ms <= ?1 LIMIT ?2)",
        params![now_ms, limit],
    )
}

#[async_trait]
impl RateCounters for SqliteStore {
    async fn gcra(
        &self,
        bucket: &str,
        gcra: &Gcra,
        now_ms: i64,
    ) -> Result<GcraOutcome, StorageError> {
        let (bucket, gcra) = (bucket.to_owned(), *gcra);
        self.db
            .run_write(move |c| check(c, &bucket, &gcra, now_ms).map_err(StorageError::from))
            .await
    }

    async fn prune_rate_counters(&self, now_ms: i64, limit: u32) -> Result<u64, StorageError> {
        let deleted = self
            .db
            .run_write(move |c| prune(c, now_ms, limit).map_err(StorageError::from))
            .await?;
        Ok(u64::try_from(deleted).unwrap_or(u64::MAX))
    }
}
