//! The license-key mail of a paid signup, end to end: the real issuer, a
//! fake Stripe, and a real SMTP listener (python aiosmtpd) in a separate
//! process. The mail reaches the buyer with a key that activates; while the
//! mail server is down it waits in the outbox and goes out, once, when the
//! server is back; in development without SMTP it is written to the log.

use std::path::Path;
use std::time::{Duration, Instant};

use coditect_tests::billing::{BillingEnv, open_db, query_rows};
use coditect_tests::issuer::{admin, hardware_id};
use coditect_tests::smtp::{ReceivedMail, SmtpSink};
use serde_json::{Value, json};

/// Generous: the only waits are for things to happen, never for speed.
const WAIT: Duration = Duration::from_secs(90);
const FROM: &str = "CODITECT Licenses <licenses@mail-test.example>";
const FROM_ADDRESS: &str = "licenses@mail-test.example";
const SUPPORT: &str = "help@mail-test.example";
const BUYER: &str = "buyer@example.com";
const KEY_PREFIX: &str = "CODITECT-PILOT-";

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coditect-mail-e2e-")
        .tempdir()
        .expect("a temporary directory")
}

fn outbox(data_dir: &Path) -> Vec<Value> {
    query_rows(
        &open_db(data_dir),
        // The key mails (each signup also queues a verification mail).
        "SELECT * FROM email_outbox WHERE kind = 'license_key' ORDER BY created_at, id",
    )
}

/// Waits until the outbox satisfies `done`; panics with the rows and the
/// issuer's log when [`WAIT`] passes first.
fn wait_for_outbox(
    env: &BillingEnv,
    data_dir: &Path,
    what: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = outbox(data_dir);
        if done(&rows) {
            return rows;
        }
        assert!(
            Instant::now() < deadline,
            "outbox: not {what} within {WAIT:?}\n{rows:#?}\n--- issuer log\n{}",
            env.issuer.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The license-key mails the listener received (the buyer's signup sent
/// a verification mail too).
fn key_mails(sink: &SmtpSink) -> Vec<coditect_tests::smtp::ReceivedMail> {
    sink.messages()
        .into_iter()
        .filter(|m| {
            m.header("Subject")
                .is_some_and(|s| s.contains("license key"))
        })
        .collect()
}

/// The key mails of `mail list --json` (the signup's verification mail
/// is listed too).
fn key_entries(listed: &Value) -> Value {
    Value::Array(
        listed
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m["kind"] == "license_key")
            .cloned()
            .collect(),
    )
}

fn one_sent(rows: &[Value]) -> bool {
    rows.len() == 1 && !rows[0]["sent_at"].is_null()
}

/// The sender is idle: there is mail and none of it is unsent, so none is
/// waiting, claimed or being delivered. A row is marked sent only after the
/// SMTP server accepted it, and the listener writes each mail to its spool
/// before accepting it, so every mail the issuer sent is counted from here
/// on: a second delivery could not still be on its way.
fn sender_idle(rows: &[Value]) -> bool {
    !rows.is_empty() && rows.iter().all(|r| !r["sent_at"].is_null())
}

/// The license key in `text` (the first `CODITECT-PILOT-XXXX-YYYY-ZZZZ`).
fn license_key_in(text: &str) -> String {
    let start = text
        .find(KEY_PREFIX)
        .unwrap_or_else(|| panic!("no license key in:\n{text}"));
    let key: String = text[start..].chars().take(29).collect();
    let groups: Vec<&str> = key[KEY_PREFIX.len()..].split('-').collect();
    assert!(
        groups.len() == 3
            && groups.iter().all(|g| g.len() == 4
                && g.chars()
                    .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())),
        "not a license key: {key:?}"
    );
    key
}

/// The key activates a machine over the API.
fn assert_activates(env: &BillingEnv, key: &str) {
    let body = env
        .client()
        .post_json(
            "/api/v1/licenses/activate",
            &json!({
                "license_key": key,
                "hardware_id": hardware_id("mail-e2e-machine"),
                "machine_name": "mail e2e machine",
            }),
        )
        .expect_status(201);
    assert_eq!(body["activation"]["status"], "active", "{body:#}");
}

/// What the license-key mail must say and how it must be addressed.
fn assert_license_mail(mail: &ReceivedMail) -> String {
    assert_eq!(mail.mail_from, FROM_ADDRESS, "{}", mail.raw);
    assert_eq!(mail.rcpt_tos, [BUYER], "{}", mail.raw);
    assert_eq!(mail.header("From"), Some(FROM), "{}", mail.raw);
    assert_eq!(mail.header("To"), Some(BUYER), "{}", mail.raw);
    assert_eq!(mail.header("Reply-To"), Some(SUPPORT), "{}", mail.raw);
    let subject = mail.header("Subject").unwrap_or_default();
    assert!(
        subject.starts_with("Your CODITECT license key"),
        "{subject}"
    );
    let content_type = mail.header("Content-Type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/plain") && content_type.contains("utf-8"),
        "{content_type}"
    );
    assert!(
        mail.header("Message-ID")
            .is_some_and(|id| id.ends_with("@mail-test.example>")),
        "{}",
        mail.raw
    );
    assert!(mail.header("Date").is_some(), "{}", mail.raw);
    let text = mail.text();
    let key = license_key_in(text);
    for needed in [
        "npm install -g @coditect-ai/coditect-core".to_owned(),
        format!("coditect activate {key}"),
        "coditect license status".to_owned(),
        SUPPORT.to_owned(),
    ] {
        assert!(text.contains(&needed), "{needed:?} missing in:\n{text}");
    }
    key
}

/// The outbox row after delivery: sent once, the body (the key) wiped.
fn assert_delivered(row: &Value) {
    assert_eq!(row["recipient"], BUYER, "{row:#}");
    assert_eq!(row["kind"], "license_key", "{row:#}");
    assert!(row["sent_at"].is_i64(), "{row:#}");
    assert!(
        row["body"].is_null(),
        "the body is wiped once sent: {row:#}"
    );
    assert!(row["last_error"].is_null(), "{row:#}");
}

#[test]
fn a_paid_signup_mails_the_license_key_over_smtp() {
    if !coditect_tests::smtp::listener_available("a_paid_signup_mails_the_license_key_over_smtp") {
        return;
    }
    let data = temp_dir();
    let spool = temp_dir();
    let sink = SmtpSink::start(spool.path());
    let url = sink.url();
    let env = BillingEnv::start(
        data.path(),
        &[
            ("SMTP_URL", &url),
            ("MAIL_FROM", FROM),
            ("SUPPORT_EMAIL", SUPPORT),
        ],
    );
    env.buy(BUYER, "pilot-professional", "month");

    let rows = wait_for_outbox(&env, data.path(), "idle", sender_idle);
    assert_eq!(rows.len(), 1, "one key mail queued: {rows:#?}");
    let mails = key_mails(&sink);
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:#?}");
    let key = assert_license_mail(&mails[0]);
    assert_delivered(&rows[0]);
    assert_eq!(rows[0]["attempts"], 1, "{rows:#?}");
    assert!(
        !env.issuer.log().contains(&key),
        "the key is mailed, never logged, when SMTP is set up"
    );
    assert_activates(&env, &key);

    let listed = admin(data.path(), &["mail", "list", "--json"]);
    listed.assert_success();
    assert!(!listed.stdout.contains(&key), "{listed}");
    let listed = key_entries(&listed.json());
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["status"], "sent", "{listed:#}");
    assert_eq!(listed[0]["recipient"], BUYER, "{listed:#}");
}

#[test]
fn with_the_mail_server_down_the_mail_waits_and_goes_out_once_it_is_back() {
    if !coditect_tests::smtp::listener_available(
        "with_the_mail_server_down_the_mail_waits_and_goes_out_once_it_is_back",
    ) {
        return;
    }
    let data = temp_dir();
    let spool = temp_dir();
    // The port is the listener's; nothing listens there until it restarts.
    let mut sink = SmtpSink::start(spool.path());
    sink.stop();
    let url = sink.url();
    let env = BillingEnv::start(
        data.path(),
        &[
            ("SMTP_URL", &url),
            ("MAIL_FROM", FROM),
            ("SUPPORT_EMAIL", SUPPORT),
            ("MAIL_RETRY_INITIAL", "1s"),
        ],
    );
    env.buy(BUYER, "pilot-professional", "month");

    let rows = wait_for_outbox(&env, data.path(), "a failed attempt", |rows| {
        rows.len() == 1
            && rows[0]["attempts"].as_i64() >= Some(1)
            && rows[0]["last_error"].is_string()
    });
    let row = &rows[0];
    assert!(row["sent_at"].is_null(), "{row:#}");
    let body = row["body"].as_str().expect("an unsent mail keeps its body");
    let key = license_key_in(body);
    let error = row["last_error"].as_str().unwrap_or_default();
    assert!(error.starts_with("SMTP: "), "{error}");
    assert!(!error.contains(&key), "{error}");
    assert!(sink.messages().is_empty());
    let listed = admin(data.path(), &["mail", "list", "--unsent", "--json"]);
    listed.assert_success();
    assert!(!listed.stdout.contains(&key), "{listed}");
    let listed = key_entries(&listed.json());
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed:#}");
    assert_eq!(listed[0]["status"], "waiting", "{listed:#}");
    assert!(listed[0]["last_error"].is_string(), "{listed:#}");
    assert!(
        env.issuer.log().contains("mail not sent"),
        "{}",
        env.issuer.log()
    );

    sink.restart();
    let rows = wait_for_outbox(&env, data.path(), "idle", sender_idle);
    assert_eq!(rows.len(), 1, "one key mail queued: {rows:#?}");
    let mails = key_mails(&sink);
    assert_eq!(mails.len(), 1, "exactly one mail: {mails:#?}");
    assert_eq!(
        assert_license_mail(&mails[0]),
        key,
        "the queued mail went out"
    );
    assert_delivered(&rows[0]);
    assert!(rows[0]["attempts"].as_i64() >= Some(2), "{rows:#?}");
    assert!(!env.issuer.log().contains(&key));
    assert_activates(&env, &key);
}

#[test]
fn in_development_without_smtp_the_mail_is_written_to_the_log() {
    let data = temp_dir();
    // An empty value is no value: SMTP stays off whatever the shell says.
    let env = BillingEnv::start(data.path(), &[("SMTP_URL", ""), ("SUPPORT_EMAIL", SUPPORT)]);
    env.buy(BUYER, "pilot-starter", "year");

    let rows = wait_for_outbox(&env, data.path(), "marked sent", one_sent);
    assert_delivered(&rows[0]);
    let log = env.issuer.log();
    let at = log
        .find("MAIL NOT SENT")
        .unwrap_or_else(|| panic!("the mail is not in the log:\n{log}"));
    let logged = &log[at..];
    assert!(logged.contains(&format!("To: {BUYER}")), "{logged}");
    assert!(
        logged.contains("Subject: Your CODITECT license key"),
        "{logged}"
    );
    assert!(logged.contains(SUPPORT), "{logged}");
    let key = license_key_in(logged);
    assert!(
        logged.contains(&format!("coditect activate {key}")),
        "{logged}"
    );
    assert_activates(&env, &key);
}
