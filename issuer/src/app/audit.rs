//! The API's audit writer: events go to a background task that appends
//! them to the store in batches, one transaction each, so that renewals
//! stay reads.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::domain::audit::Event;
use crate::store::Store;

/// The API's audit writer: events go to a background task that writes them
/// in batches, one transaction each.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Message>,
}

enum Message {
    Event(Box<Event>),
    /// Answered once everything queued before it is written.
    Flush(oneshot::Sender<()>),
}

const BATCH: usize = 256;

impl AuditLog {
    /// Starts the writer on the current tokio runtime.
    pub fn start(store: Arc<dyn Store>) -> Self {
        let (tx, mut rx) = mpsc::channel::<Message>(8192);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(BATCH);
            while rx.recv_many(&mut batch, BATCH).await > 0 {
                let mut events = Vec::with_capacity(batch.len());
                let mut flushes = Vec::new();
                for m in batch.drain(..) {
                    match m {
                        Message::Event(e) => events.push(*e),
                        Message::Flush(done) => flushes.push(done),
                    }
                }
                let count = events.len();
                let written = store.append_audit(&events).await;
                if let Err(e) = written {
                    tracing::error!(error = %e, lost = count, "cannot write audit events");
                }
                for done in flushes {
                    let _ = done.send(());
                }
            }
        });
        AuditLog { tx }
    }

    /// Queues an event; waits only if thousands are already queued.
    pub async fn log(&self, event: Event) {
        if self.tx.send(Message::Event(Box::new(event))).await.is_err() {
            tracing::error!("the audit writer has stopped");
        }
    }

    /// Waits until every event queued so far is written.
    pub async fn flush(&self) {
        let (done, wait) = oneshot::channel();
        if self.tx.send(Message::Flush(done)).await.is_ok() {
            let _ = wait.await;
        }
    }
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
}
