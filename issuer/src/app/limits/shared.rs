//! The limits counted in the database (`store::RateCounters`), for servers
//! on PostgreSQL: every process counts against the same buckets, and a
//! restart forgets nothing. One statement per limit checked; the
//! database's expired buckets are pruned by every process once a minute,
//! a bounded number at a time.

use std::sync::Arc;
use std::time::Duration;

use super::{Digest, Limit, Refusal, Report, ceil_secs};
use crate::config::Rate;
use crate::domain::StorageError;
use crate::domain::rate_limit::Gcra;
use crate::store::SharedStore;

/// How often expired buckets are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(60);
/// Buckets deleted per statement…
const PRUNE_BATCH: u32 = 5_000;
/// …and statements per round at most (the rest waits for the next one).
const PRUNE_BATCHES: u32 = 20;

/// The time in Unix milliseconds (the wall clock; tests pass their own).
pub type MillisClock = Arc<dyn Fn() -> i64 + Send + Sync>;

pub(super) struct Shared {
    store: SharedStore,
    now_ms: MillisClock,
}

/// A rate in the rule's terms: a burst of N, one more every period / N.
pub(super) fn gcra_of(rate: Rate) -> Gcra {
    let period_ms = i64::try_from(rate.per.duration().as_millis()).unwrap_or(i64::MAX);
    Gcra::per_period(rate.count.get(), period_ms)
}

fn ceil_ms(ms: i64) -> u64 {
    ceil_secs(Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

impl Shared {
    pub(super) fn new(store: SharedStore, now_ms: MillisClock) -> Self {
        Shared { store, now_ms }
    }

    /// Counts one request against `limit` (at `rate`) for `key`, in the
    /// bucket `limit:hex(key)`.
    pub(super) async fn count(
        &self,
        limit: Limit,
        rate: Rate,
        key: &Digest,
    ) -> Result<Result<Report, Refusal>, StorageError> {
        let bucket = format!("{}:{}", limit.name(), hex::encode(key));
        let gcra = gcra_of(rate);
        let now = (self.now_ms)();
        let outcome = self.store.gcra(&bucket, &gcra, now).await?;
        let count = rate.count.get();
        Ok(if outcome.allowed {
            let remaining = outcome.remaining(&gcra, now).min(count);
            Ok(Report {
                limit,
                rate,
                remaining,
                reset: ceil_ms(
                    gcra.interval_ms
                        .saturating_mul(i64::from(count - remaining)),
                ),
            })
        } else {
            let wait = outcome.wait_ms(&gcra, now);
            let full = wait.saturating_add(gcra.tolerance_ms());
            Err(Refusal {
                report: Report {
                    limit,
                    rate,
                    remaining: 0,
                    reset: ceil_ms(full).max(1),
                },
                retry_after: ceil_ms(wait).max(1),
            })
        })
    }
}

/// Prunes expired buckets once a minute, for as long as the process runs
/// (must be called inside the tokio runtime).
pub(super) fn start_pruning(store: SharedStore, now_ms: MillisClock) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            let mut pruned = 0u64;
            for _ in 0..PRUNE_BATCHES {
                match store.prune_rate_counters(now_ms(), PRUNE_BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(PRUNE_BATCH) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning the rate-limit counters failed");
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::debug!(buckets = pruned, "pruned expired rate-limit counters");
            }
        }
    });
}
