//! Rate-limit counters on PostgreSQL: one GCRA state per bucket (table
//! `rate_limits`), so that every issuer process counts against the same
//! limits. A check is one statement, atomic across processes: the upsert
//! locks the bucket's row, and checks of one bucket take turns on it.
//!
//! The statement (`CHECK`): `hit` inserts a fresh bucket or, on conflict,
//! moves the TAT on only when the request is allowed (`WHERE`: a refusal
//! locks the row but writes nothing). A refused request gets no row from
//! `hit`; `held` then reads the bucket's current TAT (`FOR SHARE` reads
//! the newest version, the one the `WHERE` saw, even when it was
//! committed after this statement's snapshot). Only a bucket created by
//! another process during the statement can be invisible to `held`, and
//! only with a limit of 1; the check is then run again.

use async_trait::async_trait;

use super::{PgStore, column};
use crate::domain::StorageError;
use crate::domain::rate_limit::{Gcra, GcraOutcome};
use crate::store::RateCounters;

/// One check: `$1` bucket, `$2` now, `$3` interval, `$4` tolerance (ms).
const CHECK: &str = "
    WITH hit AS (
        INSERT INTO rate_limits AS r (bucket, tat_ms)
        VALUES ($1, $2::bigint + $3::bigint)
        ON CONFLICT (bucket) DO UPDATE
            SET tat_ms = greatest(r.tat_ms, $2::bigint) + $3::bigint
            WHERE r.tat_ms - $4::bigint <= $2::bigint
        RETURNING r.tat_ms
    ),
    held AS (
        SELECT tat_ms FROM rate_limits
        WHERE bucket = $1 AND NOT EXISTS (SELECT 1 FROM hit)
        FOR SHARE
    )
    SELECT true, tat_ms FROM hit
    UNION ALL
    SELECT false, tat_ms FROM held";

/// Up to `$2` buckets whose TAT is not after `$1`; rows another statement
/// holds are skipped (they are in use, or being pruned by another
/// process), and the lock re-checks the TAT of a row changed meanwhile.
const PRUNE: &str = "
    DELETE FROM rate_limits
    WHERE bucket IN (
        SELECT bucket FROM rate_limits
        WHERE tat_ms <= $1
        LIMIT $2
        FOR UPDATE SKIP LOCKED
    )";

/// How often a check whose bucket appeared during it is run again.
const ATTEMPTS: usize = 3;

#[async_trait]
impl RateCounters for PgStore {
    async fn gcra(
        &self,
        bucket: &str,
        gcra: &Gcra,
        now_ms: i64,
    ) -> Result<GcraOutcome, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(CHECK).await?;
        let tolerance = gcra.tolerance_ms();
        for _ in 0..ATTEMPTS {
            let row = conn
                .query_opt(&stmt, &[&bucket, &now_ms, &gcra.interval_ms, &tolerance])
                .await?;
            if let Some(row) = row {
                return Ok(GcraOutcome {
                    allowed: column(&row, 0)?,
                    tat_ms: column(&row, 1)?,
                });
            }
        }
        Err(StorageError::Failed(format!(
            "the rate-limit bucket {bucket} was neither counted nor found"
        )))
    }

    async fn prune_rate_counters(&self, now_ms: i64, limit: u32) -> Result<u64, StorageError> {
        let conn = self.db.conn().await?;
        let stmt = conn.prepare_cached(PRUNE).await?;
        Ok(conn.execute(&stmt, &[&now_ms, &i64::from(limit)]).await?)
    }
}
