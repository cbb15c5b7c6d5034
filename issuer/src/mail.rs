//! Outgoing mail: an outbox table written in the same transaction as the
//! change that needs the mail (so a mail is never lost, nor sent for a
//! change that rolled back), and a sender task that delivers it.

use std::sync::Arc;

use rusqlite::{Connection, params};
use tokio::sync::Notify;

use crate::config::Config;
use crate::db::Db;

/// One mail to send.
#[derive(Clone, PartialEq, Eq)]
pub struct Mail {
    /// What the mail is (`license_key`), for the log and the audit trail.
    pub kind: &'static str,
    pub to: String,
    pub subject: String,
    /// Plain-text body.
    pub body: String,
}

impl std::fmt::Debug for Mail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The body may hold a license key.
        f.debug_struct("Mail")
            .field("kind", &self.kind)
            .field("to", &self.to)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

/// Queues a mail inside the caller's transaction; returns its id.
pub fn enqueue(conn: &Connection, mail: &Mail, now: i64) -> rusqlite::Result<String> {
    let id = uuid::Uuid::new_v4().to_string();
    conn.execute(
        "INSERT INTO email_outbox (id, kind, recipient, subject, body, created_at, next_attempt_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?6)",
        params![id, mail.kind, mail.to, mail.subject, mail.body, now],
    )?;
    Ok(id)
}

/// What the license-key mail says.
pub struct LicenseMail<'a> {
    pub to: &'a str,
    pub key: &'a str,
    pub plan_name: &'a str,
    pub organization_name: &'a str,
    /// RFC 3339 end of the paid period.
    pub renews_or_ends: &'a str,
}

/// The confirmation mail of the launch plan (Part 4, step 5): the license
/// key, how to install and activate, and whom to ask for help.
pub fn license_key_mail(config: &Config, m: &LicenseMail<'_>) -> Mail {
    let base = &config.public_base_url;
    let support = &config.mail.support_email;
    let body = format!(
        "Welcome to CODITECT!\n\
         \n\
         Thank you for joining the pilot. Your {plan} license for {org} is ready.\n\
         \n\
         License key: {key}\n\
         \n\
         Keep this key private: anyone who has it can activate a machine on your license.\n\
         \n\
         Install and activate\n\
         \n\
         1. Install the CLI:        npm install -g @coditect-ai/coditect-core\n\
         2. Activate this machine:  coditect activate {key}\n\
         3. Check the license:      coditect license status\n\
         \n\
         The license renews with your subscription (current period: until {until}).\n\
         Manage billing and devices at {base}/.\n\
         \n\
         Installation guide: {base}/#install\n\
         Support: {support}, or reply to this mail.\n\
         \n\
         -- The CODITECT team\n",
        plan = m.plan_name,
        org = m.organization_name,
        key = m.key,
        until = m.renews_or_ends,
    );
    Mail {
        kind: "license_key",
        to: m.to.to_owned(),
        subject: format!("Your CODITECT license key ({})", m.plan_name),
        body,
    }
}

/// Handle of the sender task: wake it when a mail was queued.
#[derive(Clone)]
pub struct Mailer {
    wake: Arc<Notify>,
}

impl Mailer {
    /// Starts the sender task (inside the tokio runtime).
    pub fn start(db: Db, config: Arc<Config>) -> Mailer {
        let wake = Arc::new(Notify::new());
        tokio::spawn(sender::run(db, config, Arc::clone(&wake)));
        Mailer { wake }
    }

    /// Tells the sender that mail is waiting.
    pub fn wake(&self) {
        self.wake.notify_one();
    }
}

mod sender {
    use super::*;

    /// Delivers due mail until the process ends.
    pub async fn run(db: Db, config: Arc<Config>, wake: Arc<Notify>) {
        let _ = (&db, &config);
        loop {
            wake.notified().await;
        }
    }
}
