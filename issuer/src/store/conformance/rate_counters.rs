//! Conformance checks of [`RateCounters`](crate::store::RateCounters): the
//! GCRA rule of `domain::rate_limit` kept by the database (a burst, then a
//! refusal with the right wait that changes nothing, replenishment over
//! time, independent buckets), pruning of expired buckets in bounded
//! batches, and concurrent checks of one bucket never allowing more than
//! its burst. Time is a parameter: `NOW_MS` and steps from it.

use std::sync::Arc;

use super::NOW;
use crate::domain::rate_limit::{Gcra, GcraOutcome};
use crate::store::SharedStore;

const NOW_MS: i64 = NOW * 1000;

/// 5 a minute: one every 12 s.
const FIVE_A_MINUTE: Gcra = Gcra {
    interval_ms: 12_000,
    burst: 5,
};

async fn hit(store: &SharedStore, bucket: &str, gcra: &Gcra, now_ms: i64) -> GcraOutcome {
    store.gcra(bucket, gcra, now_ms).await.unwrap()
}

pub async fn rate_counters_allow_the_burst_then_refuse_with_the_wait(store: SharedStore) {
    let g = FIVE_A_MINUTE;
    for n in 1..=5 {
        let o = hit(&store, "login:aa", &g, NOW_MS).await;
        assert!(o.allowed, "request {n}");
        assert_eq!(o.tat_ms, NOW_MS + n * 12_000);
        assert_eq!(o.remaining(&g, NOW_MS), u32::try_from(5 - n).unwrap());
    }
    // The sixth is refused, and waits one interval; refusals change
    // nothing, however many there are.
    for _ in 0..3 {
        let o = hit(&store, "login:aa", &g, NOW_MS + 1_000).await;
        assert_eq!(
            o,
            GcraOutcome {
                allowed: false,
                tat_ms: NOW_MS + 60_000
            }
        );
        assert_eq!(o.wait_ms(&g, NOW_MS + 1_000), 11_000);
    }
}

pub async fn rate_counters_replenish_over_time(store: SharedStore) {
    let g = FIVE_A_MINUTE;
    for _ in 0..5 {
        assert!(hit(&store, "login:bb", &g, NOW_MS).await.allowed);
    }
    // One request back every 12 s, to the millisecond.
    let early = hit(&store, "login:bb", &g, NOW_MS + 11_999).await;
    assert!(!early.allowed);
    assert_eq!(early.wait_ms(&g, NOW_MS + 11_999), 1);
    let on_time = hit(&store, "login:bb", &g, NOW_MS + 12_000).await;
    assert!(on_time.allowed);
    assert_eq!(on_time.remaining(&g, NOW_MS + 12_000), 0);
    assert!(!hit(&store, "login:bb", &g, NOW_MS + 12_000).await.allowed);
    // Half a period later, half the burst (rounded down) is back.
    let later = NOW_MS + 12_000 + 30_000;
    let o = hit(&store, "login:bb", &g, later).await;
    assert!(o.allowed);
    assert_eq!(o.remaining(&g, later), 1);
    // A whole period after the last one: the whole burst.
    let much_later = later + 60_000;
    let o = hit(&store, "login:bb", &g, much_later).await;
    assert_eq!(o.tat_ms, much_later + 12_000, "as a fresh bucket");
    assert_eq!(o.remaining(&g, much_later), 4);
}

pub async fn rate_counter_buckets_are_independent(store: SharedStore) {
    let one = Gcra {
        interval_ms: 3_600_000,
        burst: 1,
    };
    assert!(hit(&store, "activate:aa", &one, NOW_MS).await.allowed);
    assert!(!hit(&store, "activate:aa", &one, NOW_MS).await.allowed);
    // Another key, and the same key under another limit, count apart.
    assert!(hit(&store, "activate:ab", &one, NOW_MS).await.allowed);
    assert!(hit(&store, "validate:aa", &one, NOW_MS).await.allowed);
    let refused = hit(&store, "activate:aa", &one, NOW_MS + 1).await;
    assert_eq!(refused.wait_ms(&one, NOW_MS + 1), 3_599_999);
}

pub async fn expired_rate_counters_are_pruned_in_bounded_batches(store: SharedStore) {
    let g = FIVE_A_MINUTE;
    // Ten buckets used once at NOW (TAT NOW + 12 s), three used to the
    // full at NOW (TAT NOW + 60 s).
    for i in 0..10 {
        hit(&store, &format!("login:once{i}"), &g, NOW_MS).await;
    }
    for i in 0..3 {
        for _ in 0..5 {
            hit(&store, &format!("login:full{i}"), &g, NOW_MS).await;
        }
    }
    // Nothing has expired yet.
    assert_eq!(store.prune_rate_counters(NOW_MS, 100).await.unwrap(), 0);
    assert_eq!(
        store
            .prune_rate_counters(NOW_MS + 11_999, 100)
            .await
            .unwrap(),
        0
    );
    // At NOW + 12 s the ten are as good as new: gone, at most 4 at a time.
    let at = NOW_MS + 12_000;
    assert_eq!(store.prune_rate_counters(at, 4).await.unwrap(), 4);
    assert_eq!(store.prune_rate_counters(at, 4).await.unwrap(), 4);
    assert_eq!(store.prune_rate_counters(at, 4).await.unwrap(), 2);
    assert_eq!(store.prune_rate_counters(at, 4).await.unwrap(), 0);
    // The full ones are kept: one request back, not a fresh burst.
    let kept = hit(&store, "login:full0", &g, at).await;
    assert!(kept.allowed);
    assert_eq!(kept.remaining(&g, at), 0);
    // A pruned bucket starts afresh.
    let o = hit(&store, "login:once0", &g, at).await;
    assert_eq!(o.tat_ms, at + 12_000);
    assert_eq!(o.remaining(&g, at), 4);
    // Later: once0 (TAT NOW + 24 s) and full1, full2 (NOW + 60 s) go;
    // full0 (NOW + 72 s) stays until its time.
    let later = NOW_MS + 60_000;
    assert_eq!(store.prune_rate_counters(later, 100).await.unwrap(), 3);
    assert_eq!(
        store
            .prune_rate_counters(NOW_MS + 72_000, 100)
            .await
            .unwrap(),
        1
    );
}

pub async fn concurrent_checks_of_one_bucket_never_allow_more_than_the_burst(store: SharedStore) {
    // 40 checks at once, at one moment: exactly the burst passes, and each
    // refusal reads the bucket's state after the last one allowed.
    for (bucket, burst) in [("validate:many", 10u32), ("signup:one", 1)] {
        let g = Gcra {
            interval_ms: 6_000,
            burst,
        };
        let checks: Vec<_> = (0..40)
            .map(|_| {
                let store = Arc::clone(&store);
                tokio::spawn(async move { store.gcra(bucket, &g, NOW_MS).await.unwrap() })
            })
            .collect();
        let mut allowed = 0;
        for c in checks {
            let o = c.await.unwrap();
            if o.allowed {
                allowed += 1;
            } else {
                assert_eq!(o.tat_ms, NOW_MS + i64::from(burst) * 6_000, "{bucket}");
                assert_eq!(o.wait_ms(&g, NOW_MS), 6_000, "{bucket}");
            }
        }
        assert_eq!(allowed, burst, "{bucket}");
    }
}
