//! The API's audit writer: events go to a background task that appends
//! them to the store in batches, one transaction each, so that renewals
//! stay reads.
//!
//! **Repeats.** What strangers can cause over and over (a refused webhook
//! delivery) is logged with [`AuditLog::log_repeated`]: the first such
//! event from an address is written as it comes; the next ones of the same
//! kind from that address are only counted, and at the end of the minute
//! (or when the log is flushed, as at a stop) they become one row, outcome
//! `repeated`, whose detail starts with their number and gives it by
//! outcome (`299 more since …: bad_signature 9, rate_limited 290`). So an
//! address costs at most two rows a minute, whatever it sends. At most
//! [`MAX_REPEAT_SOURCES`] addresses are counted one by one in a minute;
//! further ones share one count without an address.
//!
//! **Retention.** [`start_pruning`]: rows older than
//! `AUDIT_RETENTION_DAYS` (400 by default) are deleted every ten minutes,
//! in batches (`Store::prune_audit`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::domain::audit::Event;
use crate::domain::rfc3339;
use crate::store::{SharedStore, Store};

/// The API's audit writer: events go to a background task that writes them
/// in batches, one transaction each.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
}

enum Message {
    Event(Box<Event>),
    /// Counted with the others of its kind from its address (see the
    /// module documentation).
    Repeated(Box<Event>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

const BATCH: usize = 256;

/// How long repeats are counted before their row is written.
pub const REPEAT_WINDOW: Duration = Duration::from_secs(60);

/// Addresses counted one by one within a window; more share one count.
pub const MAX_REPEAT_SOURCES: usize = 10_000;

/// Repeated events counted since the last window ended.
#[derive(Debug, Default)]
pub struct Repeats {
    /// By event kind and address (`None`: unknown, or past the limit).
    sources: HashMap<(String, Option<String>), Tally>,
}

#[derive(Debug)]
struct Tally {
    /// The first event: written at once, and the template of the summary.
    first: Event,
    /// The repeats after it, by outcome.
    by_outcome: BTreeMap<String, u64>,
    last_at: i64,
}

impl Repeats {
    /// Notes an event: returns it when it is the first of its kind from its
    /// address in this window (to be written now); counts it otherwise.
    pub fn note(&mut self, event: Event) -> Option<Event> {
        let mut key = (event.event.clone(), event.ip.clone());
        if !self.sources.contains_key(&key) && self.sources.len() >= MAX_REPEAT_SOURCES {
            key.1 = None;
        }
        match self.sources.get_mut(&key) {
            Some(tally) => {
                *tally.by_outcome.entry(event.outcome).or_insert(0) += 1;
                tally.last_at = tally.last_at.max(event.at);
                None
            }
            None => {
                let merged = key.1.is_none() && event.ip.is_some();
                let mut first = event.clone();
                if merged {
                    first.ip = None;
                    first.user_agent = None;
                }
                let last_at = first.at;
                self.sources.insert(
                    key,
                    Tally {
                        first,
                        by_outcome: BTreeMap::new(),
                        last_at,
                    },
                );
                Some(event)
            }
        }
    }

    /// Ends the window: one `repeated` row for every kind and address
    /// that had repeats.
    pub fn drain(&mut self) -> Vec<Event> {
        let mut rows: Vec<Event> = self
            .sources
            .drain()
            .filter(|(_, t)| !t.by_outcome.is_empty())
            .map(|(_, t)| {
                let total: u64 = t.by_outcome.values().sum();
                let outcomes: Vec<String> = t
                    .by_outcome
                    .iter()
                    .map(|(outcome, n)| format!("{outcome} {n}"))
                    .collect();
                let mut row = t.first.clone();
                row.at = t.last_at;
                row.outcome = "repeated".to_owned();
                row.detail = Some(format!(
                    "{total} more since {}: {}",
                    rfc3339(t.first.at),
                    outcomes.join(", ")
                ));
                row
            })
            .collect();
        rows.sort_by_key(|e| e.at);
        rows
    }

    /// Kinds and addresses counted in this window.
    pub fn len(&self) -> usize {
        self.sources.len()
    }

    /// Whether nothing is counted.
    pub fn is_empty(&self) -> bool {
        self.sources.is_empty()
    }
}

impl AuditLog {
    /// Starts the writer on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(8192);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            let mut repeats = Repeats::default();
            let mut window = tokio::time::interval(REPEAT_WINDOW);
            window.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            window.tick().await;
            loop {
                let mut events = Vec::new();
                let mut flushes = Vec::new();
                tokio::select! {
                    received = rx.recv_many(&mut batch, BATCH) => {
                        if received == 0 {
                            break;
                        }
                        for m in batch.drain(..) {
                            match m {
                                Message::Event(e) => events.push(*e),
                                Message::Repeated(e) => events.extend(repeats.note(*e)),
                                Message::Flush(done) => flushes.push(done),
                            }
                        }
                        if !flushes.is_empty() {
                            events.extend(repeats.drain());
                        }
                    }
                    _ = window.tick() => events.extend(repeats.drain()),
                }
                write(&store, &events).await;
                for done in flushes {
                    let _ = done.send(());
                }
            }
            write(&store, &repeats.drain()).await;
        });
        AuditLog { tx }
    }

    /// Queues an event that strangers can cause over and over: written if
    /// it is the first of its kind from its address in this minute,
    /// otherwise counted into one row (see the module documentation).
    pub async fn log_repeated(&self, event: Event) {
        if self
            .tx
            .send(Message::Repeated(Box::new(event)))
            .await
            .is_err()
        {
            tracing::error!("the audit writer has stopped");
        }
    }

    /// Queues an event; waits only if thousands are already queued.
    pub async fn log(&self, event: Event) {
        if self.tx.send(Message::Event(Box::new(event))).await.is_err() {
            tracing::error!("the audit writer has stopped");
        }
    }

    /// Waits until every event queued so far is written (repeats counted
    /// so far included).
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
}

async fn write(store: &Arc<dyn Store>, events: &[Event]) {
    if events.is_empty() {
        return;
    }
    if let Err(e) = store.append_audit(events).await {
        tracing::error!(error = %e, lost = events.len(), "cannot write audit events");
    }
}

/// How often old audit rows are pruned (the first time at start).
const PRUNE_EVERY: Duration = Duration::from_secs(600);
/// Rows deleted per statement…
const PRUNE_BATCH: u32 = 5_000;
/// …and statements per round at most (the rest waits for the next one).
const PRUNE_BATCHES: u32 = 20;

/// Deletes audit rows older than `retention_days` now and every ten
/// minutes, in batches, for as long as the process runs (must be called
/// inside the tokio runtime). Every instance on a shared database does it;
/// they skip each other's rows.
pub fn start_pruning(store: SharedStore, retention_days: u32) {
    let retention = i64::from(retention_days).saturating_mul(86_400);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(PRUNE_EVERY);
        loop {
            tick.tick().await;
            let before = super::now().saturating_sub(retention);
            let mut pruned = 0u64;
            for _ in 0..PRUNE_BATCHES {
                match store.prune_audit(before, PRUNE_BATCH).await {
                    Ok(n) => {
                        pruned += n;
                        if n < u64::from(PRUNE_BATCH) {
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pruning the audit log failed");
                        break;
                    }
                }
            }
            if pruned > 0 {
                tracing::info!(
                    rows = pruned,
                    retention_days,
                    "deleted audit rows past their retention"
                );
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_background_writer_writes_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::open_sqlite(&dir.path().join("a.db"), crate::store::test_pepper())
                .unwrap();
        let log = AuditLog::start(Arc::clone(&store));
        for i in 0..500 {
            log.log(Event::new(i, "validate", "ok")).await;
        }
        log.flush().await;
        let n = store.audit_events(None, None, 1000).await.unwrap().len();
        assert_eq!(n, 500);
    }

    fn refusal(at: i64, ip: &str, outcome: &str) -> Event {
        Event::new(at, "stripe_webhook", outcome)
            .actor("stripe")
            .client(&crate::domain::audit::Client::new(
                Some(ip.into()),
                Some("curl"),
            ))
    }

    #[test]
    fn repeats_from_one_address_become_one_row_with_their_counts() {
        let mut r = Repeats::default();
        assert!(r.note(refusal(100, "192.0.2.1", "bad_signature")).is_some());
        for i in 0..9 {
            assert!(
                r.note(refusal(101 + i, "192.0.2.1", "bad_signature"))
                    .is_none()
            );
        }
        for i in 0..290 {
            assert!(
                r.note(refusal(110 + i, "192.0.2.1", "rate_limited"))
                    .is_none()
            );
        }
        // Another address and another kind are their own.
        assert!(
            r.note(refusal(120, "192.0.2.2", "missing_signature"))
                .is_some()
        );
        assert!(
            r.note(
                Event::new(130, "other", "bad").client(&crate::domain::audit::Client::new(
                    Some("192.0.2.1".into()),
                    None
                ))
            )
            .is_some()
        );
        let rows = r.drain();
        assert!(r.is_empty());
        assert_eq!(rows.len(), 1, "{rows:?}");
        let row = &rows[0];
        assert_eq!(row.outcome, "repeated");
        assert_eq!(row.ip.as_deref(), Some("192.0.2.1"));
        assert_eq!(row.at, 399);
        assert_eq!(
            row.detail.as_deref(),
            Some("299 more since 1970-01-01T00:01:40Z: bad_signature 9, rate_limited 290")
        );
        // A new window starts afresh.
        assert!(r.note(refusal(500, "192.0.2.1", "bad_signature")).is_some());
        assert!(r.drain().is_empty());
    }

    #[test]
    fn past_the_limit_of_addresses_the_rest_share_one_count() {
        let mut r = Repeats::default();
        for i in 0..MAX_REPEAT_SOURCES {
            let ip = format!("10.{}.{}.{}", i >> 16, (i >> 8) & 255, i & 255);
            assert!(r.note(refusal(1, &ip, "bad_signature")).is_some());
        }
        let first_extra = r.note(refusal(2, "192.0.2.1", "bad_signature"));
        assert!(first_extra.is_some());
        for i in 0..100 {
            let ip = format!("192.0.2.{i}");
            assert!(r.note(refusal(3, &ip, "bad_signature")).is_none());
        }
        assert_eq!(r.len(), MAX_REPEAT_SOURCES + 1);
        let rows = r.drain();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].ip, None);
        assert!(rows[0].detail.as_deref().unwrap().starts_with("100 more"));
    }

    #[tokio::test]
    async fn a_flush_writes_the_counted_repeats() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            crate::store::open_sqlite(&dir.path().join("a.db"), crate::store::test_pepper())
                .unwrap();
        let log = AuditLog::start(Arc::clone(&store));
        for i in 0..300 {
            log.log_repeated(refusal(1_000 + i, "192.0.2.1", "bad_signature"))
                .await;
        }
        log.flush().await;
        let rows = store.audit_events(None, None, 1000).await.unwrap();
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!(rows[0].outcome, "bad_signature");
        assert_eq!(rows[1].outcome, "repeated");
        assert!(rows[1].detail.as_deref().unwrap().starts_with("299 more"));
    }
}
