//! Outgoing mail: the templates, and the sender task that delivers the
//! outbox. Mail is queued by the store in the same transaction as the
//! change that needs it (so it is never lost, nor sent for a change that
//! rolled back); see `domain::mail` for the retry rules.

pub mod sender;
pub mod templates;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::store::SharedStore;

/// Handle of the sender task: wake it when a mail was queued; stop it
/// when the process stops.
#[derive(Clone)]
pub struct Mailer {
    wake: Arc<Notify>,
    held: sender::Held,
    stop: Arc<watch::Sender<bool>>,
    task: Arc<Mutex<Option<JoinHandle<()>>>>,
    store: SharedStore,
}

impl Mailer {
    /// Starts the sender task (inside the tokio runtime).
    pub fn start(store: SharedStore, config: Arc<Config>) -> Mailer {
        let wake = Arc::new(Notify::new());
        let held = sender::Held::default();
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(sender::run(
            Arc::clone(&store),
            config,
            Arc::clone(&wake),
            Arc::clone(&held),
            stopped,
        ));
        Mailer {
            wake,
            held,
            stop: Arc::new(stop),
            task: Arc::new(Mutex::new(Some(task))),
            store,
        }
    }

    /// Tells the sender that mail is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Stops the sender: it finishes the mail it is sending if that takes
    /// less than `wait`, and the mails it claimed but did not try go back
    /// to the outbox, due now, for another instance (or the next start)
    /// to send without waiting for the claim to run out.
    pub async fn stop(&self, wait: Duration) {
        let _ = self.stop.send(true);
        let task = self.task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = task {
            let abort = task.abort_handle();
            if tokio::time::timeout(wait, task).await.is_err() {
                // Still talking to the mail server: that mail is given
                // back too (it may go out twice rather than never).
                abort.abort();
            }
        }
        let ids: Vec<String> = self
            .held
            .lock()
            .map(|mut h| std::mem::take(&mut *h))
            .unwrap_or_default();
        if ids.is_empty() {
            return;
        }
        match self.store.release_mail(&ids, crate::app::now()).await {
            Ok(n) => tracing::info!(released = n, "gave unsent mail back to the outbox"),
            Err(e) => {
                tracing::warn!(error = %e, "cannot give claimed mail back; it is sent after its claim runs out")
            }
        }
    }
}
