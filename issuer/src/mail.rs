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

/// Where a mail in the outbox stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutboxStatus {
    Sent,
    /// Waiting for its (next) attempt.
    Waiting,
    /// Failed for good or too often; an operator decides (`mail retry`).
    GivenUp,
}

impl OutboxStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            OutboxStatus::Sent => "sent",
            OutboxStatus::Waiting => "waiting",
            OutboxStatus::GivenUp => "given_up",
        }
    }
}

/// One outbox row as an operator sees it: never the body, which can hold
/// a license key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboxEntry {
    pub id: String,
    pub kind: String,
    pub recipient: String,
    pub subject: String,
    pub created_at: i64,
    pub attempts: i64,
    pub status: OutboxStatus,
    pub sent_at: Option<i64>,
    /// When it is tried next (`Waiting` only).
    pub next_attempt_at: Option<i64>,
    pub last_error: Option<String>,
}

/// The newest `limit` mails (only unsent ones if `unsent_only`), oldest
/// first.
pub fn list_outbox(
    conn: &Connection,
    unsent_only: bool,
    limit: u32,
) -> rusqlite::Result<Vec<OutboxEntry>> {
    let mut stmt = conn.prepare(
        "SELECT id, kind, recipient, subject, created_at, attempts, sent_at,
                next_attempt_at, last_error
         FROM email_outbox
         WHERE sent_at IS NULL OR NOT ?1
         ORDER BY created_at DESC, id DESC LIMIT ?2",
    )?;
    let rows = stmt.query_map(params![unsent_only, limit], |r| {
        let sent_at: Option<i64> = r.get(6)?;
        let next: i64 = r.get(7)?;
        let status = match sent_at {
            Some(_) => OutboxStatus::Sent,
            None if next == sender::GAVE_UP => OutboxStatus::GivenUp,
            None => OutboxStatus::Waiting,
        };
        Ok(OutboxEntry {
            id: r.get(0)?,
            kind: r.get(1)?,
            recipient: r.get(2)?,
            subject: r.get(3)?,
            created_at: r.get(4)?,
            attempts: r.get(5)?,
            status,
            sent_at,
            next_attempt_at: (status == OutboxStatus::Waiting).then_some(next),
            last_error: r.get(8)?,
        })
    })?;
    let mut entries = rows.collect::<rusqlite::Result<Vec<_>>>()?;
    entries.reverse();
    Ok(entries)
}

/// Makes an unsent mail due at `now` with a fresh count of attempts (after
/// the operator fixed what made it fail). False if there is no such
/// unsent mail.
pub fn retry_now(conn: &Connection, id: &str, now: i64) -> rusqlite::Result<bool> {
    let changed = conn.execute(
        "UPDATE email_outbox SET attempts = 0, next_attempt_at = ?2
         WHERE id = ?1 AND sent_at IS NULL",
        params![id, now],
    )?;
    Ok(changed == 1)
}

/// Delivery of the outbox: claims due mail, sends it over SMTP (or, in
/// development without `SMTP_URL`, writes it to the log) and records the
/// outcome on the row. Delivery is at least once: a mail is marked sent only
/// after the server took it, so a crash in between sends it again.
mod sender {
    use std::time::Duration;

    use lettre::message::Mailbox;
    use lettre::message::header::ContentType;
    use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
    use rusqlite::{OptionalExtension, TransactionBehavior};
    use zeroize::Zeroizing;

    use super::*;
    use crate::config::Environment;
    use crate::db::DbError;

    /// Mails taken per pass; a full batch is followed at once by the next.
    pub(super) const BATCH: usize = 10;
    /// How often the outbox is looked at without a wake-up (for retries).
    const POLL: Duration = Duration::from_secs(5);
    /// A claimed mail is not taken again for this long (seconds): longer
    /// than a batch that times out mail by mail. After a crash mid-send the
    /// mail is tried again then.
    pub(super) const CLAIM_SECS: i64 = 15 * 60;
    /// The longest wait between two attempts (seconds).
    pub(super) const MAX_RETRY_DELAY_SECS: i64 = 3600;
    /// After this many failed attempts a mail is left for an operator.
    pub(super) const MAX_ATTEMPTS: i64 = 20;
    /// `next_attempt_at` of an unsent mail that will not be tried again.
    pub(super) const GAVE_UP: i64 = i64::MAX;
    /// How long one SMTP conversation may take.
    const SMTP_TIMEOUT: Duration = Duration::from_secs(30);
    /// The longest `last_error` kept.
    const MAX_ERROR_LEN: usize = 300;

    /// Delivers due mail until the process ends.
    pub async fn run(db: Db, config: Arc<Config>, wake: Arc<Notify>) {
        let sender = Sender::new(&config);
        loop {
            let full = match deliver_due(&db, &sender, crate::api::now).await {
                Ok(taken) => taken >= BATCH,
                Err(e) => {
                    tracing::error!("mail outbox: {e}; trying again shortly");
                    false
                }
            };
            if full {
                continue;
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(POLL) => {}
            }
        }
    }

    /// One pass: claims up to [`BATCH`] due mails and tries each once.
    /// Returns how many were taken.
    pub(super) async fn deliver_due(
        db: &Db,
        sender: &Sender,
        now: impl Fn() -> i64,
    ) -> Result<usize, DbError> {
        let at = now();
        let due = db
            .run_write(move |conn| claim_due(conn, at, BATCH).map_err(DbError::from))
            .await?;
        let taken = due.len();
        // One at a time, and without the writer's turn while talking to the
        // server; a failure is recorded on its own row and the next goes on.
        for mail in due {
            let outcome = sender.deliver(&mail).await;
            let at = now();
            let retry_initial = sender.retry_initial;
            let id = mail.id.clone();
            let recorded = match &outcome {
                Ok(()) => db
                    .run_write(move |conn| record_sent(conn, &id, at).map_err(DbError::from))
                    .await
                    .map(|()| None),
                Err(failure) => {
                    let failure = failure.clone();
                    db.run_write(move |conn| {
                        record_failure(conn, &id, at, &failure, retry_initial)
                            .map_err(DbError::from)
                    })
                    .await
                }
            };
            match (outcome, recorded) {
                (_, Err(e)) => tracing::error!(
                    mail_id = %mail.id,
                    kind = %mail.kind,
                    "cannot record the outcome of a mail ({e}); it is tried again after {CLAIM_SECS} s"
                ),
                (Ok(()), Ok(_)) => {
                    if sender.sends() {
                        tracing::info!(mail_id = %mail.id, kind = %mail.kind, to = %mail.recipient, "mail sent");
                    }
                }
                (Err(failure), Ok(next)) => log_failure(&mail, &failure, next),
            }
        }
        Ok(taken)
    }

    fn log_failure(mail: &Due, failure: &Failure, next: Option<Next>) {
        match next {
            Some(Next::RetryAt { attempts, at }) => tracing::warn!(
                mail_id = %mail.id,
                kind = %mail.kind,
                to = %mail.recipient,
                attempts,
                retry_at = at,
                "mail not sent ({}); it stays in the outbox and is tried again",
                failure.error
            ),
            Some(Next::GaveUp { attempts }) => tracing::error!(
                mail_id = %mail.id,
                kind = %mail.kind,
                to = %mail.recipient,
                attempts,
                "mail given up ({}); it stays unsent in email_outbox for an operator",
                failure.error
            ),
            // Sent or removed meanwhile (by an operator): nothing to do.
            None => {}
        }
    }

    /// A mail taken from the outbox.
    pub(super) struct Due {
        pub id: String,
        pub kind: String,
        pub recipient: String,
        pub subject: String,
        /// `None` only if the row was tampered with (bodies go with sending).
        pub body: Option<Zeroizing<String>>,
    }

    /// Why a send failed. `error` never holds the body or the SMTP password.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(super) struct Failure {
        pub error: String,
        /// Trying again cannot help (the recipient is not an address).
        pub permanent: bool,
    }

    impl Failure {
        fn transient(error: impl Into<String>) -> Self {
            Failure {
                error: shorten(error.into()),
                permanent: false,
            }
        }

        fn permanent(error: impl Into<String>) -> Self {
            Failure {
                error: shorten(error.into()),
                permanent: true,
            }
        }
    }

    fn shorten(mut text: String) -> String {
        if text.len() > MAX_ERROR_LEN {
            let mut end = MAX_ERROR_LEN;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            text.push('…');
        }
        text
    }

    /// What happens to a mail after a failed attempt.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub(super) enum Next {
        RetryAt { attempts: i64, at: i64 },
        GaveUp { attempts: i64 },
    }

    /// Takes the due unsent mails, oldest first, and moves their next
    /// attempt [`CLAIM_SECS`] ahead so that no other pass takes them too.
    pub(super) fn claim_due(
        conn: &mut Connection,
        now: i64,
        limit: usize,
    ) -> rusqlite::Result<Vec<Due>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let due = {
            let mut stmt = tx.prepare(
                "SELECT id, kind, recipient, subject, body FROM email_outbox
                 WHERE sent_at IS NULL AND next_attempt_at <= ?1
                 ORDER BY created_at, id LIMIT ?2",
            )?;
            let rows = stmt.query_map(
                params![now, i64::try_from(limit).unwrap_or(i64::MAX)],
                |r| {
                    Ok(Due {
                        id: r.get(0)?,
                        kind: r.get(1)?,
                        recipient: r.get(2)?,
                        subject: r.get(3)?,
                        body: r.get::<_, Option<String>>(4)?.map(Zeroizing::new),
                    })
                },
            )?;
            rows.collect::<rusqlite::Result<Vec<_>>>()?
        };
        for mail in &due {
            tx.execute(
                "UPDATE email_outbox SET next_attempt_at = ?2 WHERE id = ?1",
                params![mail.id, now.saturating_add(CLAIM_SECS)],
            )?;
        }
        tx.commit()?;
        Ok(due)
    }

    /// The mail went out: the body (it can hold a license key) goes.
    pub(super) fn record_sent(conn: &Connection, id: &str, now: i64) -> rusqlite::Result<()> {
        conn.execute(
            "UPDATE email_outbox
             SET sent_at = ?2, body = NULL, last_error = NULL, attempts = attempts + 1
             WHERE id = ?1",
            params![id, now],
        )?;
        crate::db::scrub(conn);
        Ok(())
    }

    /// Counts a failed attempt and schedules the next one, or gives up.
    /// `None` when the mail is no longer waiting.
    pub(super) fn record_failure(
        conn: &mut Connection,
        id: &str,
        now: i64,
        failure: &Failure,
        retry_initial: Duration,
    ) -> rusqlite::Result<Option<Next>> {
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let Some(before) = tx
            .query_row(
                "SELECT attempts FROM email_outbox WHERE id = ?1 AND sent_at IS NULL",
                [id],
                |r| r.get::<_, i64>(0),
            )
            .optional()?
        else {
            return Ok(None);
        };
        let attempts = before.saturating_add(1);
        let next = if failure.permanent || attempts >= MAX_ATTEMPTS {
            Next::GaveUp { attempts }
        } else {
            Next::RetryAt {
                attempts,
                at: now.saturating_add(retry_delay(retry_initial, attempts)),
            }
        };
        let next_attempt_at = match next {
            Next::RetryAt { at, .. } => at,
            Next::GaveUp { .. } => GAVE_UP,
        };
        tx.execute(
            "UPDATE email_outbox SET attempts = ?2, next_attempt_at = ?3, last_error = ?4
             WHERE id = ?1",
            params![id, attempts, next_attempt_at, failure.error],
        )?;
        tx.commit()?;
        Ok(Some(next))
    }

    /// Seconds to wait after the `attempts`-th failure: the initial delay
    /// (at least a second), doubled per further failure, at most an hour.
    pub(super) fn retry_delay(retry_initial: Duration, attempts: i64) -> i64 {
        let initial = i64::try_from(retry_initial.as_secs())
            .unwrap_or(i64::MAX)
            .max(1);
        let doublings = u32::try_from(attempts.saturating_sub(1).max(0)).unwrap_or(u32::MAX);
        initial
            .saturating_mul(2_i64.saturating_pow(doublings))
            .min(MAX_RETRY_DELAY_SECS)
    }

    /// How mail leaves this process.
    enum Delivery {
        Smtp {
            transport: AsyncSmtpTransport<Tokio1Executor>,
            /// The password as written in the URL and decoded, kept out of
            /// every error text.
            secrets: Vec<Zeroizing<String>>,
        },
        /// Development without `SMTP_URL`: the mail is written to the log.
        Log,
        /// Mail cannot go out until the configuration is fixed; it waits.
        Unusable(String),
    }

    /// The sender's settings, checked once at start.
    pub(super) struct Sender {
        delivery: Delivery,
        from: Result<Mailbox, String>,
        reply_to: Option<Mailbox>,
        pub retry_initial: Duration,
    }

    impl Sender {
        pub(super) fn new(config: &Config) -> Sender {
            let mail = &config.mail;
            let delivery = match (&mail.smtp_url, config.environment) {
                (Some(url), _) => match smtp_transport(url) {
                    Ok(delivery) => delivery,
                    Err(reason) => {
                        tracing::error!("{reason}; mail waits in the outbox until it is fixed");
                        Delivery::Unusable(reason)
                    }
                },
                (None, Environment::Development) => Delivery::Log,
                // Configuration refuses to start like this; never log keys.
                (None, Environment::Production) => {
                    Delivery::Unusable("SMTP_URL is not set".to_owned())
                }
            };
            let from = mail
                .from
                .parse::<Mailbox>()
                .map_err(|e| format!("MAIL_FROM ({}) is not a valid address: {e}", mail.from));
            if let (Err(reason), Delivery::Smtp { .. }) = (&from, &delivery) {
                tracing::error!("{reason}; mail waits in the outbox until it is fixed");
            }
            let reply_to = match mail.support_email.parse::<Mailbox>() {
                Ok(m) => Some(m),
                Err(e) => {
                    tracing::warn!(
                        "SUPPORT_EMAIL ({}) is not a valid address ({e}); mail goes out without Reply-To",
                        mail.support_email
                    );
                    None
                }
            };
            Sender {
                delivery,
                from,
                reply_to,
                retry_initial: mail.retry_initial,
            }
        }

        /// Whether mail really leaves (rather than going to the log).
        fn sends(&self) -> bool {
            matches!(self.delivery, Delivery::Smtp { .. })
        }

        /// One attempt at one mail.
        pub(super) async fn deliver(&self, mail: &Due) -> Result<(), Failure> {
            let Some(body) = &mail.body else {
                return Err(Failure::permanent("the outbox row has no body"));
            };
            match &self.delivery {
                Delivery::Log => {
                    tracing::info!(
                        mail_id = %mail.id,
                        kind = %mail.kind,
                        "MAIL NOT SENT (development, no SMTP_URL); it is written here instead\n\
                         To: {}\nSubject: {}\n\n{}",
                        mail.recipient,
                        mail.subject,
                        body.as_str()
                    );
                    Ok(())
                }
                Delivery::Unusable(reason) => Err(Failure::transient(reason.clone())),
                Delivery::Smtp { transport, secrets } => {
                    let from = self.from.as_ref().map_err(Failure::transient)?;
                    let message = build_message(from, self.reply_to.as_ref(), mail, body)?;
                    match transport.send(message).await {
                        Ok(_) => Ok(()),
                        Err(e) => Err(Failure::transient(redact(&format!("SMTP: {e}"), secrets))),
                    }
                }
            }
        }
    }

    /// The message as it goes out: plain UTF-8 text, replies to support, and
    /// a Message-ID from the outbox id so a retry is recognisably the same.
    pub(super) fn build_message(
        from: &Mailbox,
        reply_to: Option<&Mailbox>,
        mail: &Due,
        body: &str,
    ) -> Result<Message, Failure> {
        let to = mail.recipient.parse::<Mailbox>().map_err(|e| {
            Failure::permanent(format!("the recipient is not a valid address ({e})"))
        })?;
        let mut builder = Message::builder()
            .from(from.clone())
            .to(to)
            .subject(mail.subject.as_str())
            .message_id(Some(format!("<{}@{}>", mail.id, from.email.domain())))
            .header(ContentType::TEXT_PLAIN);
        if let Some(reply_to) = reply_to {
            builder = builder.reply_to(reply_to.clone());
        }
        builder
            .body(body.to_owned())
            .map_err(|e| Failure::permanent(format!("cannot build the message: {e}")))
    }

    /// The transport for `SMTP_URL`, read as the configuration documents
    /// it: `smtp://` uses STARTTLS and refuses to go on without it,
    /// `?tls=opportunistic` uses it when offered, `?tls=none` never (a local
    /// relay), `smtps://` is TLS from the start.
    fn smtp_transport(url: &str) -> Result<Delivery, String> {
        let secrets: Vec<Zeroizing<String>> = url_password(url)
            .into_iter()
            .flat_map(|raw| {
                let decoded = percent_decode(&raw);
                [raw, decoded]
            })
            .filter(|s| !s.is_empty())
            .collect();
        let lettre_url = Zeroizing::new(lettre_url(url));
        let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(&lettre_url)
            .map_err(|e| redact(&format!("SMTP_URL is not usable: {e}"), &secrets))?
            .timeout(Some(SMTP_TIMEOUT))
            .build();
        Ok(Delivery::Smtp { transport, secrets })
    }

    /// `SMTP_URL` in lettre's terms, where a bare `smtp://` means no TLS at
    /// all and `tls=none` is unknown.
    pub(super) fn lettre_url(url: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((base, query)) => (base, query),
            None => (url, ""),
        };
        let mut pairs: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
        let plain_smtp = base
            .split_once("://")
            .is_some_and(|(scheme, _)| scheme.eq_ignore_ascii_case("smtp"));
        if plain_smtp {
            match pairs.iter().find_map(|p| p.strip_prefix("tls=")) {
                None => pairs.push("tls=required"),
                Some("none") => pairs.retain(|p| *p != "tls=none"),
                Some(_) => {}
            }
        }
        if pairs.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", pairs.join("&"))
        }
    }

    /// The password in `scheme://user:password@host…`, as written.
    fn url_password(url: &str) -> Option<Zeroizing<String>> {
        let rest = url.split_once("://")?.1;
        let authority = rest.split(['/', '?', '#']).next()?;
        let userinfo = authority.rsplit_once('@')?.0;
        let password = userinfo.split_once(':')?.1;
        Some(Zeroizing::new(password.to_owned()))
    }

    fn percent_decode(text: &str) -> Zeroizing<String> {
        let bytes = text.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes.get(i), hex) {
                (Some(b'%'), Some(byte)) => {
                    out.push(byte);
                    i += 3;
                }
                (Some(&b), _) => {
                    out.push(b);
                    i += 1;
                }
                (None, _) => break,
            }
        }
        Zeroizing::new(String::from_utf8_lossy(&out).into_owned())
    }

    /// `text` with every secret replaced by `***`.
    pub(super) fn redact(text: &str, secrets: &[Zeroizing<String>]) -> String {
        secrets
            .iter()
            .filter(|s| !s.is_empty())
            .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use zeroize::Zeroizing;

    use super::sender::{self, Due, Failure, Next, Sender};
    use super::*;
    use crate::config::{Env, Overrides};

    struct Vars(Vec<(&'static str, String)>);

    impl Env for Vars {
        fn get(&self, name: &str) -> Option<String> {
            self.0
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.clone())
                .filter(|v| !v.is_empty())
        }
    }

    fn config(dir: &Path, extra: &[(&'static str, &str)]) -> Config {
        let mut vars = vec![("CODITECT_DATA_DIR", dir.display().to_string())];
        vars.extend(extra.iter().map(|(k, v)| (*k, (*v).to_owned())));
        Config::load(&Vars(vars), &Overrides::default(), &mut Vec::new()).unwrap()
    }

    fn mail(to: &str, body: &str) -> Mail {
        Mail {
            kind: "license_key",
            to: to.to_owned(),
            subject: "Your CODITECT license key (Pilot)".to_owned(),
            body: body.to_owned(),
        }
    }

    fn row(db: &Db, id: &str) -> (i64, Option<String>, i64, i64, Option<String>) {
        db.conn()
            .unwrap()
            .query_row(
                "SELECT attempts, body, next_attempt_at, COALESCE(sent_at, -1), last_error
                 FROM email_outbox WHERE id = ?1",
                [id],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
            )
            .unwrap()
    }

    #[test]
    fn retries_double_from_the_initial_delay_up_to_an_hour() {
        let delays: Vec<i64> = (1..=9)
            .map(|n| sender::retry_delay(Duration::from_secs(30), n))
            .collect();
        assert_eq!(delays, [30, 60, 120, 240, 480, 960, 1920, 3600, 3600]);
        assert_eq!(sender::retry_delay(Duration::from_millis(200), 1), 1);
        assert_eq!(sender::retry_delay(Duration::from_secs(1), 1_000), 3600);
        assert_eq!(sender::retry_delay(Duration::MAX, 1), 3600);
    }

    #[test]
    fn smtp_url_means_starttls_unless_it_says_otherwise() {
        assert_eq!(
            sender::lettre_url("smtp://u:p@mail.example.com:587"),
            "smtp://u:p@mail.example.com:587?tls=required"
        );
        assert_eq!(
            sender::lettre_url("smtp://127.0.0.1:2525?tls=none"),
            "smtp://127.0.0.1:2525"
        );
        assert_eq!(
            sender::lettre_url("smtp://relay:25/helo.example?tls=opportunistic"),
            "smtp://relay:25/helo.example?tls=opportunistic"
        );
        assert_eq!(
            sender::lettre_url("smtps://u:p@mail.example.com"),
            "smtps://u:p@mail.example.com"
        );
    }

    #[test]
    fn secrets_are_redacted_from_error_text() {
        let secrets = [Zeroizing::new("pa$$".to_owned())];
        assert_eq!(
            sender::redact("auth pa$$ failed: pa$$", &secrets),
            "auth *** failed: ***"
        );
        assert_eq!(sender::redact("no secret here", &[]), "no secret here");
    }

    fn due(to: &str) -> Due {
        Due {
            id: "0190c2a4-mail".into(),
            kind: "license_key".into(),
            recipient: to.into(),
            subject: "Your CODITECT license key (Pilot Pro)".into(),
            body: Some(Zeroizing::new(
                "Schlüssel: CODITECT-PILOT-AAAA-BBBB-CCCC\n".into(),
            )),
        }
    }

    #[test]
    fn the_message_has_sender_recipient_reply_to_and_a_utf8_text_body() {
        let from = "CODITECT <licenses@coditect.ai>".parse().unwrap();
        let support = "support@coditect.ai".parse().unwrap();
        let d = due("buyer@example.com");
        let message = sender::build_message(&from, Some(&support), &d, "Grüße").unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        for header in [
            "From: CODITECT <licenses@coditect.ai>",
            "To: buyer@example.com",
            "Reply-To: support@coditect.ai",
            "Subject: Your CODITECT license key (Pilot Pro)",
            "Message-ID: <0190c2a4-mail@coditect.ai>",
            "Content-Type: text/plain; charset=utf-8",
        ] {
            assert!(text.contains(header), "{header} missing in\n{text}");
        }
    }

    #[test]
    fn an_invalid_recipient_is_a_permanent_failure() {
        let from = "licenses@coditect.ai".parse().unwrap();
        let err = sender::build_message(&from, None, &due("not an address"), "x").unwrap_err();
        assert!(err.permanent, "{err:?}");
        assert!(err.error.contains("recipient"), "{err:?}");
    }

    #[test]
    fn due_mail_is_claimed_oldest_first_and_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let second = enqueue(&conn, &mail("b@example.com", "B"), 200).unwrap();
        let first = enqueue(&conn, &mail("a@example.com", "A"), 100).unwrap();
        let later = enqueue(&conn, &mail("c@example.com", "C"), 10_000).unwrap();

        let due = sender::claim_due(&mut conn, 500, 10).unwrap();
        let ids: Vec<&str> = due.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [first.as_str(), second.as_str()]);
        assert_eq!(due[0].body.as_deref().map(String::as_str), Some("A"));
        // Claimed mail is not taken again while it is being sent...
        assert!(sender::claim_due(&mut conn, 501, 10).unwrap().is_empty());
        // ...but is after the claim ran out (the sender died mid-send).
        let again = sender::claim_due(&mut conn, 500 + sender::CLAIM_SECS, 10).unwrap();
        assert_eq!(again.len(), 2);
        // Batches are as small as asked, the oldest first.
        let one = sender::claim_due(&mut conn, 10_000, 1).unwrap();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].id, first);
        let rest = sender::claim_due(&mut conn, 10_000, 10).unwrap();
        let ids: Vec<&str> = rest.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids, [second.as_str(), later.as_str()]);
    }

    #[test]
    fn sending_wipes_the_body_and_failures_back_off_until_given_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let ok = enqueue(&conn, &mail("a@example.com", "key"), 100).unwrap();
        let flaky = enqueue(&conn, &mail("b@example.com", "key"), 100).unwrap();
        let bad = enqueue(&conn, &mail("nobody", "key"), 100).unwrap();

        sender::record_sent(&conn, &ok, 110).unwrap();
        assert_eq!(row(&db, &ok), (1, None, 100, 110, None));

        let initial = Duration::from_secs(30);
        let refused = Failure {
            error: "SMTP: Connection error: refused".into(),
            permanent: false,
        };
        let next = sender::record_failure(&mut conn, &flaky, 110, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::RetryAt {
                attempts: 1,
                at: 140
            })
        );
        let (attempts, body, next_at, sent, error) = row(&db, &flaky);
        assert_eq!((attempts, next_at, sent), (1, 140, -1));
        assert_eq!(
            body.as_deref(),
            Some("key"),
            "an unsent mail keeps its body"
        );
        assert_eq!(error.as_deref(), Some("SMTP: Connection error: refused"));
        let next = sender::record_failure(&mut conn, &flaky, 140, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::RetryAt {
                attempts: 2,
                at: 200
            })
        );
        for _ in 3..sender::MAX_ATTEMPTS {
            sender::record_failure(&mut conn, &flaky, 200, &refused, initial).unwrap();
        }
        let next = sender::record_failure(&mut conn, &flaky, 200, &refused, initial).unwrap();
        assert_eq!(
            next,
            Some(Next::GaveUp {
                attempts: sender::MAX_ATTEMPTS
            })
        );
        assert_eq!(row(&db, &flaky).2, sender::GAVE_UP);

        let invalid = Failure {
            error: "the recipient is not a valid address".into(),
            permanent: true,
        };
        let next = sender::record_failure(&mut conn, &bad, 110, &invalid, initial).unwrap();
        assert_eq!(next, Some(Next::GaveUp { attempts: 1 }));
        // A mail that went out meanwhile is left alone.
        assert_eq!(
            sender::record_failure(&mut conn, &ok, 120, &refused, initial).unwrap(),
            None
        );
        assert_eq!(row(&db, &ok), (1, None, 100, 110, None));
        assert!(
            sender::claim_due(&mut conn, i64::MAX - 1, 10)
                .unwrap()
                .is_empty(),
            "given-up mail is not taken again"
        );
    }

    #[test]
    fn the_outbox_listing_shows_where_each_mail_stands_and_retry_revives_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let mut conn = db.conn().unwrap();
        let sent = enqueue(&conn, &mail("a@example.com", "key"), 100).unwrap();
        let waiting = enqueue(&conn, &mail("b@example.com", "key"), 200).unwrap();
        let given_up = enqueue(&conn, &mail("nobody", "key"), 300).unwrap();
        sender::record_sent(&conn, &sent, 110).unwrap();
        let refused = Failure {
            error: "SMTP: refused".into(),
            permanent: false,
        };
        sender::record_failure(&mut conn, &waiting, 210, &refused, Duration::from_secs(30))
            .unwrap();
        let invalid = Failure {
            error: "the recipient is not a valid address".into(),
            permanent: true,
        };
        sender::record_failure(&mut conn, &given_up, 310, &invalid, Duration::from_secs(30))
            .unwrap();

        let all = list_outbox(&conn, false, 10).unwrap();
        let seen: Vec<(&str, OutboxStatus, Option<i64>)> = all
            .iter()
            .map(|e| (e.id.as_str(), e.status, e.next_attempt_at))
            .collect();
        assert_eq!(
            seen,
            [
                (sent.as_str(), OutboxStatus::Sent, None),
                (waiting.as_str(), OutboxStatus::Waiting, Some(240)),
                (given_up.as_str(), OutboxStatus::GivenUp, None),
            ]
        );
        assert_eq!(all[1].last_error.as_deref(), Some("SMTP: refused"));
        let newest = list_outbox(&conn, false, 1).unwrap();
        assert_eq!(newest.len(), 1);
        assert_eq!(newest[0].id, given_up);
        let unsent: Vec<String> = list_outbox(&conn, true, 10)
            .unwrap()
            .into_iter()
            .map(|e| e.id)
            .collect();
        assert_eq!(unsent, [waiting.clone(), given_up.clone()]);

        assert!(retry_now(&conn, &given_up, 400).unwrap());
        assert!(
            !retry_now(&conn, &sent, 400).unwrap(),
            "sent mail stays sent"
        );
        assert!(!retry_now(&conn, "no-such-mail", 400).unwrap());
        let revived = &list_outbox(&conn, true, 10).unwrap()[1];
        assert_eq!(
            (revived.status, revived.attempts, revived.next_attempt_at),
            (OutboxStatus::Waiting, 0, Some(400))
        );
    }

    #[tokio::test]
    async fn in_development_without_smtp_the_mail_is_logged_and_marked_sent() {
        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &[]);
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let id = enqueue(&db.conn().unwrap(), &mail("a@example.com", "key"), 100).unwrap();
        let sender = Sender::new(&config);
        let taken = sender::deliver_due(&db, &sender, || 150).await.unwrap();
        assert_eq!(taken, 1);
        assert_eq!(
            row(&db, &id),
            (1, None, 150 + sender::CLAIM_SECS, 150, None)
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_recorded_without_the_password() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let url = format!("smtp://mailer:s%40cr3t-pw@127.0.0.1:{port}?tls=none");
        let config = config(dir.path(), &[("SMTP_URL", &url)]);
        let db = Db::open(&dir.path().join("db.sqlite3")).unwrap();
        let conn = db.conn().unwrap();
        let a = enqueue(&conn, &mail("a@example.com", "key"), 100).unwrap();
        let b = enqueue(&conn, &mail("not an address", "key"), 100).unwrap();
        drop(conn);
        let sender = Sender::new(&config);
        assert_eq!(sender::deliver_due(&db, &sender, || 150).await.unwrap(), 2);
        let (attempts, body, next_at, sent, error) = row(&db, &a);
        assert_eq!((attempts, next_at, sent), (1, 180, -1));
        assert_eq!(body.as_deref(), Some("key"));
        let error = error.unwrap();
        assert!(error.starts_with("SMTP: "), "{error}");
        assert!(!error.contains("cr3t"), "{error}");
        let (attempts, _, next_at, sent, error) = row(&db, &b);
        assert_eq!((attempts, next_at, sent), (1, sender::GAVE_UP, -1));
        assert!(error.unwrap().contains("recipient"));
    }
}
