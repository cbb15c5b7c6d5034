//! Delivery of the outbox: claims due mail, sends it over SMTP (or, in
//! development without `SMTP_URL`, writes it to the log) and records the
//! outcome through the store. Delivery is at least once: a mail is marked
//! sent only after the server took it, so a crash in between sends it
//! again.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::Mailbox;
use lettre::message::header::ContentType;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use tokio::sync::{Notify, watch};
use zeroize::Zeroizing;

use crate::config::{Config, Environment};
use crate::domain::StorageError;
use crate::domain::mail::{CLAIM_SECS, DueMail as Due, Failure, Next};
use crate::store::SharedStore;

/// Mails taken per pass; a full batch is followed at once by the next.
pub(crate) const BATCH: usize = 10;
/// How often the outbox is looked at without a wake-up (for retries).
const POLL: Duration = Duration::from_secs(5);
/// How long one SMTP conversation may take.
const SMTP_TIMEOUT: Duration = Duration::from_secs(30);

/// The ids of the mails this process has claimed and not yet finished:
/// given back to the outbox when the process stops (see
/// `Mailer::stop`).
pub type Held = Arc<std::sync::Mutex<Vec<String>>>;

/// Delivers due mail until `stop` says so; then returns after the mail
/// being sent (if any), leaving the rest of its claims in `held`.
pub async fn run(
    store: SharedStore,
    config: Arc<Config>,
    wake: Arc<Notify>,
    held: Held,
    mut stop: watch::Receiver<bool>,
) {
    let sender = Sender::new(&config);
    while !*stop.borrow() {
        let full = match deliver_due(&store, &sender, crate::app::now, &held, &stop).await {
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
            _ = stop.changed() => {}
        }
    }
}

/// One pass: claims up to [`BATCH`] due mails and tries each once,
/// stopping between two mails when `stop` says so (the claims not tried
/// stay in `held`). Returns how many were taken.
pub(crate) async fn deliver_due(
    store: &SharedStore,
    sender: &Sender,
    now: impl Fn() -> i64,
    held: &Held,
    stop: &watch::Receiver<bool>,
) -> Result<usize, StorageError> {
    let due = store.claim_mail(now(), BATCH).await?;
    let taken = due.len();
    if let Ok(mut h) = held.lock() {
        h.extend(due.iter().map(|m| m.id.clone()));
    }
    // One at a time, and without the writer's turn while talking to the
    // server; a failure is recorded on its own row and the next goes on.
    for mail in due {
        if *stop.borrow() {
            break;
        }
        let outcome = sender.deliver(&mail).await;
        let at = now();
        let recorded = match &outcome {
            Ok(()) => store.mail_sent(&mail.id, at).await.map(|()| None),
            Err(failure) => {
                store
                    .mail_failed(&mail.id, at, failure, sender.retry_initial)
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
        if let Ok(mut h) = held.lock() {
            h.retain(|id| *id != mail.id);
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
pub(crate) struct Sender {
    delivery: Delivery,
    from: Result<Mailbox, String>,
    reply_to: Option<Mailbox>,
    pub retry_initial: Duration,
}

impl Sender {
    pub(crate) fn new(config: &Config) -> Sender {
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
            (None, Environment::Production) => Delivery::Unusable("SMTP_URL is not set".to_owned()),
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
    pub(crate) async fn deliver(&self, mail: &Due) -> Result<(), Failure> {
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
pub(crate) fn build_message(
    from: &Mailbox,
    reply_to: Option<&Mailbox>,
    mail: &Due,
    body: &str,
) -> Result<Message, Failure> {
    let to = mail
        .recipient
        .parse::<Mailbox>()
        .map_err(|e| Failure::permanent(format!("the recipient is not a valid address ({e})")))?;
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
pub(crate) fn lettre_url(url: &str) -> String {
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
pub(crate) fn redact(text: &str, secrets: &[Zeroizing<String>]) -> String {
    secrets
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_owned(), |t, s| t.replace(s.as_str(), "***"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use zeroize::Zeroizing;

    use super::*;
    use crate::config::{Env, Overrides};
    use crate::domain::mail::{Mail, OutboxStatus};

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
    fn smtp_url_means_starttls_unless_it_says_otherwise() {
        assert_eq!(
            lettre_url("smtp://u:p@mail.example.com:587"),
            "smtp://u:p@mail.example.com:587?tls=required"
        );
        assert_eq!(
            lettre_url("smtp://127.0.0.1:2525?tls=none"),
            "smtp://127.0.0.1:2525"
        );
        assert_eq!(
            lettre_url("smtp://relay:25/helo.example?tls=opportunistic"),
            "smtp://relay:25/helo.example?tls=opportunistic"
        );
        assert_eq!(
            lettre_url("smtps://u:p@mail.example.com"),
            "smtps://u:p@mail.example.com"
        );
    }

    #[test]
    fn secrets_are_redacted_from_error_text() {
        let secrets = [Zeroizing::new("pa$$".to_owned())];
        assert_eq!(
            redact("auth pa$$ failed: pa$$", &secrets),
            "auth *** failed: ***"
        );
        assert_eq!(redact("no secret here", &[]), "no secret here");
    }

    #[test]
    fn the_message_has_sender_recipient_reply_to_and_a_utf8_text_body() {
        let from = "CODITECT <licenses@coditect.ai>".parse().unwrap();
        let support = "support@coditect.ai".parse().unwrap();
        let d = due("buyer@example.com");
        let message = build_message(&from, Some(&support), &d, "Grüße").unwrap();
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
        let err = build_message(&from, None, &due("not an address"), "x").unwrap_err();
        assert!(err.permanent, "{err:?}");
        assert!(err.error.contains("recipient"), "{err:?}");
    }

    #[tokio::test]
    async fn in_development_without_smtp_the_mail_is_logged_and_marked_sent() {
        // The log of this test's thread (the test runtime has one thread).
        #[derive(Clone, Default)]
        struct Log(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let log = Log::default();
        let writer = log.clone();
        let _logging = tracing::subscriber::set_default(
            tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .finish(),
        );

        let dir = tempfile::tempdir().unwrap();
        let config = config(dir.path(), &[]);
        let store =
            crate::store::open_sqlite(&dir.path().join("db.sqlite3"), crate::store::test_pepper())
                .unwrap();
        let id = store
            .enqueue_mail(&mail("a@example.com", "CODITECT-PILOT-LOGD-MAIL-BODY"), 100)
            .await
            .unwrap();
        let sender = Sender::new(&config);
        let taken = deliver_due(
            &store,
            &sender,
            || 150,
            &Held::default(),
            &watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(taken, 1);
        let row = &store.outbox(false, 10).await.unwrap()[0];
        assert_eq!(row.id, id);
        assert_eq!(
            (
                row.status,
                row.attempts,
                row.sent_at,
                row.last_error.as_deref()
            ),
            (OutboxStatus::Sent, 1, Some(150), None)
        );
        assert!(
            store.claim_mail(i64::MAX - 1, 10).await.unwrap().is_empty(),
            "a sent mail is never claimed again"
        );
        // The whole mail is in the log, where a developer reads it.
        let logged = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        for part in [
            "MAIL NOT SENT",
            "To: a@example.com",
            "Subject: Your CODITECT license key (Pilot)",
            "CODITECT-PILOT-LOGD-MAIL-BODY",
        ] {
            assert!(logged.contains(part), "{part} is not in the log:\n{logged}");
        }
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
        let store =
            crate::store::open_sqlite(&dir.path().join("db.sqlite3"), crate::store::test_pepper())
                .unwrap();
        let a = store
            .enqueue_mail(&mail("a@example.com", "key"), 100)
            .await
            .unwrap();
        let b = store
            .enqueue_mail(&mail("not an address", "key"), 100)
            .await
            .unwrap();
        let sender = Sender::new(&config);
        assert_eq!(
            deliver_due(
                &store,
                &sender,
                || 150,
                &Held::default(),
                &watch::channel(false).1
            )
            .await
            .unwrap(),
            2
        );
        let rows = store.outbox(false, 10).await.unwrap();
        let row = |id: &str| rows.iter().find(|r| r.id == id).unwrap().clone();
        let ra = row(&a);
        assert_eq!(
            (ra.status, ra.attempts, ra.next_attempt_at, ra.sent_at),
            (OutboxStatus::Waiting, 1, Some(180), None)
        );
        let error = ra.last_error.unwrap();
        assert!(error.starts_with("SMTP: "), "{error}");
        assert!(!error.contains("cr3t"), "{error}");
        let rb = row(&b);
        assert_eq!(
            (rb.status, rb.attempts, rb.sent_at),
            (OutboxStatus::GivenUp, 1, None)
        );
        assert!(rb.last_error.unwrap().contains("recipient"));
        // The waiting mail still has its body for the next attempt.
        let again = store.claim_mail(180, 10).await.unwrap();
        assert_eq!(again.len(), 1);
        assert_eq!(again[0].body.as_deref().map(String::as_str), Some("key"));
    }
}
