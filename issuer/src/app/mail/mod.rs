//! Outgoing mail: the templates, and the sender task that delivers the
//! outbox. Mail is queued by the store in the same transaction as the
//! change that needs it (so it is never lost, nor sent for a change that
//! rolled back); see `domain::mail` for the retry rules.

pub mod sender;
pub mod templates;

use std::sync::Arc;

use tokio::sync::Notify;

use crate::config::Config;
use crate::store::SharedStore;

/// Handle of the sender task: wake it when a mail was queued.
#[derive(Clone)]
pub struct Mailer {
    wake: Arc<Notify>,
}

impl Mailer {
    /// Starts the sender task (inside the tokio runtime).
    pub fn start(store: SharedStore, config: Arc<Config>) -> Mailer {
        let wake = Arc::new(Notify::new());
        tokio::spawn(sender::run(store, config, Arc::clone(&wake)));
        Mailer { wake }
    }

    /// Tells the sender that mail is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}
