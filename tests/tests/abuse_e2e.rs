//! Unbounded work from strangers, against the real issuer and a fake
//! Stripe: junk posted to `/webhooks/stripe` is limited per address and
//! audited in a bounded number of rows; old audit rows are pruned; billing
//! calls (each calls Stripe) are limited per user and per organization; a
//! delivery signed with two secrets (Stripe during a secret rotation) is
//! accepted whichever signature comes first. Every refusal is checked for
//! its code and for leaving everything as it was.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use coditect_tests::billing::BillingEnv;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::fake_stripe::{self, StoredEvent, unix_now};
use coditect_tests::issuer::{COMMAND_TIMEOUT, IssuerServer, issuer_command, run_with_timeout};
use serde_json::{Value, json};

const CHECKOUT: &str = "/api/v1/billing/checkout";
const PORTAL: &str = "/api/v1/billing/portal";
const DAY: i64 = 86_400;

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

/// An answer with its headers.
struct Answer {
    status: u16,
    headers: ureq::http::HeaderMap,
    body: String,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    /// Asserts a 429 `rate_limited` problem with `Retry-After` and the
    /// `RateLimit-*` headers for a limit of `limit`; returns the detail.
    fn assert_rate_limited(&self, limit: u32) -> String {
        assert_eq!(self.status, 429, "{}", self.body);
        assert_eq!(
            self.header("content-type"),
            Some("application/problem+json")
        );
        let retry: u64 = self
            .header("retry-after")
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no Retry-After: {}", self.body));
        assert!(retry >= 1, "{retry}");
        assert_eq!(
            self.header("ratelimit-limit"),
            Some(limit.to_string().as_str())
        );
        assert_eq!(self.header("ratelimit-remaining"), Some("0"));
        let p = self.json();
        assert_eq!(p["code"], "rate_limited", "{p}");
        assert_eq!(p["status"], 429, "{p}");
        assert!(p["request_id"].is_string(), "{p}");
        p["detail"].as_str().unwrap_or_default().to_owned()
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// `POST url` with `body` and `headers`.
fn post(agent: &ureq::Agent, url: &str, headers: &[(&str, &str)], body: &str) -> Answer {
    let mut req = agent
        .post(url)
        .header("content-type", "application/json; charset=utf-8");
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let mut resp = req.send(body).unwrap_or_else(|e| panic!("POST {url}: {e}"));
    Answer {
        status: resp.status().as_u16(),
        headers: resp.headers().clone(),
        body: resp.body_mut().read_to_string().unwrap_or_default(),
    }
}

/// Waits (at most 30 s) until `done` holds.
fn eventually(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------------------
// Item 8: junk webhook posts, audit retention
// ---------------------------------------------------------------------------

coditect_tests::on_both_backends!(
    three_hundred_junk_webhook_posts_are_limited_and_leave_two_audit_rows,
    audit_rows_past_the_retention_are_pruned_and_a_zero_retention_is_refused,
);

/// 300 forged deliveries from one address: the first 10 (the limit) are
/// refused 400 `bad_signature`, the other 290 get 429 `rate_limited`;
/// nothing is applied; the audit log gets one row at once and one row with
/// the count of the other 299 (at the end of the minute, here at the stop);
/// a delivery Stripe signed still passes from the same address.
fn three_hundred_junk_webhook_posts_are_limited_and_leave_two_audit_rows(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let mut env = BillingEnv::start(dir.path(), &[("RATE_LIMIT_WEBHOOK_REFUSALS", "10/min")]);
    let p = env.buy("junk@example.com", "pilot-starter", "month");
    let webhook_rows = || db.count("SELECT count(*) FROM audit_log WHERE event = 'stripe_webhook'");
    eventually("the purchase's events are audited", || {
        webhook_rows() >= i64::try_from(p.event_ids.len()).unwrap_or(0)
    });
    let rows_before = webhook_rows();
    let events_before = db.count("SELECT count(*) FROM stripe_events");
    let license_before = db.one("SELECT status, max_activations, expires_at FROM licenses");

    // A forged event that would cancel the subscription.
    let junk = json!({
        "id": "evt_forged_1", "type": "customer.subscription.deleted", "created": unix_now(),
        "data": {"object": {"id": p.subscription_id, "customer": p.customer_id, "status": "canceled"}}
    })
    .to_string();
    let forged = format!("t={},v1={}", unix_now(), "ab".repeat(32));
    let url = format!("{}/webhooks/stripe", env.issuer.base_url());
    let http = agent();
    let started = Instant::now();
    for i in 0..300 {
        let a = post(&http, &url, &[("stripe-signature", &forged)], &junk);
        if i < 10 {
            assert_eq!(a.status, 400, "post {i}: {}", a.body);
            assert_eq!(a.json()["code"], "bad_signature", "post {i}");
        } else {
            let detail = a.assert_rate_limited(10);
            assert!(detail.contains("webhook"), "{detail}");
        }
    }
    let elapsed = started.elapsed();
    eprintln!("300 junk posts answered in {elapsed:?}");
    // Nothing applied; one audit row so far.
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(
        db.count("SELECT count(*) FROM stripe_events"),
        events_before
    );
    assert_eq!(
        db.one("SELECT status, max_activations, expires_at FROM licenses"),
        license_before
    );
    assert_eq!(webhook_rows(), rows_before + 1);
    // Stripe's own delivery from the same (limited) address is applied.
    let sub = env.stripe.subscription(&p.subscription_id).unwrap();
    let mut more = sub.clone();
    more["items"]["data"][0]["quantity"] = json!(2);
    more["quantity"] = json!(2);
    let real = env.stripe.send_event("customer.subscription.updated", more);
    let delivered = env.stripe.deliveries_of(&real.id);
    assert_eq!(
        delivered.last().and_then(|d| d.status),
        Some(200),
        "{delivered:?}"
    );
    assert_eq!(db.count("SELECT max_activations FROM licenses"), 2);

    env.issuer.terminate(Duration::from_secs(20));
    let refusals = db.rows(
        "SELECT outcome, ip, detail FROM audit_log WHERE event = 'stripe_webhook'
         AND outcome IN ('bad_signature', 'rate_limited', 'repeated') ORDER BY id",
    );
    assert_eq!(refusals.len(), 2, "{refusals:#?}");
    assert_eq!(refusals[0]["outcome"], "bad_signature");
    assert_eq!(refusals[0]["ip"], "127.0.0.1");
    assert_eq!(refusals[1]["outcome"], "repeated");
    assert_eq!(refusals[1]["ip"], "127.0.0.1");
    let detail = refusals[1]["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("299 more since "), "{detail}");
    assert!(
        detail.ends_with(": bad_signature 9, rate_limited 290"),
        "{detail}"
    );
}

/// Rows older than `AUDIT_RETENTION_DAYS` go at the start (and every ten
/// minutes); younger ones stay. `AUDIT_RETENTION_DAYS=0` (it would empty
/// the log) is refused at start, and nothing is deleted.
fn audit_rows_past_the_retention_are_pruned_and_a_zero_retention_is_refused(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    // Create the schema, then put rows of various ages in.
    let mut issuer = IssuerServer::start(dir.path());
    issuer.terminate(Duration::from_secs(20));
    let now = unix_now();
    let mut values = Vec::new();
    for (age_days, n) in [(400, 3), (31, 4), (29, 2), (0, 1)] {
        for i in 0..n {
            values.push(format!(
                "({}, 'old_test', 'ok', 'age {age_days}')",
                now - age_days * DAY - i
            ));
        }
    }
    db.execute(&format!(
        "INSERT INTO audit_log (at, event, outcome, detail) VALUES {}",
        values.join(", ")
    ));
    let count = || db.count("SELECT count(*) FROM audit_log WHERE event = 'old_test'");
    assert_eq!(count(), 10);

    for bad in ["0", "-1", "forever"] {
        let mut cmd = issuer_command(dir.path(), &[("AUDIT_RETENTION_DAYS", bad)]);
        cmd.args(["serve", "--bind", "127.0.0.1:0"]);
        let out = run_with_timeout(cmd, COMMAND_TIMEOUT);
        assert_eq!(out.code, Some(1), "{bad}: {out}");
        assert!(out.stderr.contains("AUDIT_RETENTION_DAYS"), "{out}");
    }
    assert_eq!(count(), 10, "a refused start deleted nothing");

    let mut issuer = IssuerServer::start_with_env(dir.path(), &[("AUDIT_RETENTION_DAYS", "30")]);
    eventually("rows older than 30 days are deleted", || count() == 3);
    let left = db.rows("SELECT detail FROM audit_log WHERE event = 'old_test' ORDER BY at");
    let ages: Vec<&str> = left.iter().filter_map(|r| r["detail"].as_str()).collect();
    assert_eq!(ages, ["age 29", "age 29", "age 0"]);
    eventually("the pruning is logged", || {
        issuer
            .log()
            .contains("deleted audit rows past their retention")
    });
    issuer.terminate(Duration::from_secs(20));
}

// ---------------------------------------------------------------------------
// Item 9: checkout and portal limited per user and per organization
// ---------------------------------------------------------------------------

coditect_tests::on_both_backends!(
    billing_calls_beyond_the_users_limit_are_refused_before_stripe_is_called,
    the_thirty_first_billing_call_of_an_organization_is_refused_before_stripe,
);

/// What a refused billing call must leave as it was.
fn billing_state(env: &BillingEnv, db: &TestDatabase) -> (usize, i64, i64) {
    (
        env.stripe.requests().len(),
        db.count("SELECT count(*) FROM checkouts"),
        db.count("SELECT count(*) FROM audit_log WHERE event = 'checkout_started'"),
    )
}

/// 10 per user (an hour here, so that none is regained during the test):
/// 10 calls, checkout and portal together, reach Stripe; the next 20 are
/// 429 and Stripe sees none of them; another user is not affected.
fn billing_calls_beyond_the_users_limit_are_refused_before_stripe_is_called(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let env = BillingEnv::start(dir.path(), &[("RATE_LIMIT_BILLING_USER", "10/hour")]);
    let jwt = env.account("burst@example.com", "Burst Ltd");
    let bearer = format!("Bearer {jwt}");
    let auth = [("authorization", bearer.as_str())];
    let http = agent();
    let base = env.issuer.base_url().to_owned();
    let body = json!({"plan": "pilot-starter", "interval": "month"}).to_string();
    for i in 0..10 {
        let path = if i % 2 == 0 { CHECKOUT } else { PORTAL };
        let a = post(&http, &format!("{base}{path}"), &auth, &body);
        assert_eq!(a.status, 200, "call {i} ({path}): {}", a.body);
        assert_eq!(
            a.header("ratelimit-remaining"),
            Some((9 - i).to_string().as_str())
        );
    }
    eventually("the five checkouts are audited", || {
        billing_state(&env, &db).2 == 5
    });
    let before = billing_state(&env, &db);
    assert!(before.0 >= 10, "each call reached Stripe: {before:?}");
    let started = Instant::now();
    for i in 0..20 {
        let path = if i % 2 == 0 { CHECKOUT } else { PORTAL };
        let a = post(&http, &format!("{base}{path}"), &auth, &body);
        let detail = a.assert_rate_limited(10);
        assert!(detail.contains("your account"), "{detail}");
    }
    eprintln!("20 refused billing calls in {:?}", started.elapsed());
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        billing_state(&env, &db),
        before,
        "a refused call changed something"
    );
    // Another user of another organization is counted on their own.
    let other = env.account("other@example.com", "Other Ltd");
    env.start_checkout(&other, "pilot-starter", "month")
        .expect_status(200);
}

/// 30 per organization (per hour here; the user's own limit out of the
/// way): a burst of 30 checkouts reaches Stripe, the 31st and later are
/// 429 naming the organization, and Stripe sees no further request.
fn the_thirty_first_billing_call_of_an_organization_is_refused_before_stripe(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let env = BillingEnv::start(dir.path(), &[("RATE_LIMIT_BILLING_ORG", "30/hour")]);
    let jwt = env.account("org@example.com", "Org Ltd");
    let bearer = format!("Bearer {jwt}");
    let auth = [("authorization", bearer.as_str())];
    let http = agent();
    let url = format!("{}{CHECKOUT}", env.issuer.base_url());
    let body = json!({"plan": "pilot-professional", "interval": "year"}).to_string();
    for i in 0..30 {
        let a = post(&http, &url, &auth, &body);
        assert_eq!(a.status, 200, "call {i}: {}", a.body);
    }
    eventually("the 30 checkouts are audited", || {
        billing_state(&env, &db).2 == 30
    });
    let before = billing_state(&env, &db);
    assert_eq!(before.1, 30, "30 checkouts were started");
    for _ in 0..5 {
        let a = post(&http, &url, &auth, &body);
        let detail = a.assert_rate_limited(30);
        assert!(detail.contains("organization"), "{detail}");
    }
    let portal = post(
        &http,
        &format!("{}{PORTAL}", env.issuer.base_url()),
        &auth,
        "",
    );
    portal.assert_rate_limited(30);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        billing_state(&env, &db),
        before,
        "a refused call changed something"
    );
}

// ---------------------------------------------------------------------------
// Item 10: two v1 signatures (a secret rotation), either order
// ---------------------------------------------------------------------------

/// `Stripe-Signature` for `payload` at `timestamp` with one `v1` per
/// secret, in the order given, each made by Stripe's python library (which
/// also checks that it accepts the header under every one of the secrets).
/// `None` (the test skips) when python3 or the library is missing outside CI.
fn python_header(payload: &str, timestamp: i64, secrets: &[&str]) -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payload.json");
    std::fs::write(&path, payload).expect("write payload");
    let script = "import sys, stripe\n\
                  payload = open(sys.argv[1], 'rb').read().decode('utf-8')\n\
                  t = int(sys.argv[2])\n\
                  parts = [stripe.WebhookSignature.generate_signature_header(payload, s, t) for s in sys.argv[3:]]\n\
                  header = 't=%d,' % t + ','.join(p.split(',', 1)[1] for p in parts)\n\
                  for s in sys.argv[3:]:\n    stripe.WebhookSignature.verify_header(payload, header, s)\n\
                  print(header)\n";
    let out = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", script])
        .arg(&path)
        .arg(timestamp.to_string())
        .args(secrets)
        .output();
    match out {
        Ok(o) if o.status.success() => Some(String::from_utf8_lossy(&o.stdout).trim().to_owned()),
        other => {
            let why = format!("python3 with the stripe library is not usable: {other:?}");
            assert!(!coditect_tests::in_ci(), "{why}");
            let _ = writeln!(std::io::stderr(), "NOTICE: skipping: {why}");
            None
        }
    }
}

/// A `customer.subscription.updated` with `quantity` seats, created (not
/// sent) by the fake.
fn seats_event(env: &BillingEnv, subscription_id: &str, quantity: u64) -> StoredEvent {
    let mut sub = env.stripe.subscription(subscription_id).unwrap();
    sub["items"]["data"][0]["quantity"] = json!(quantity);
    sub["quantity"] = json!(quantity);
    env.stripe
        .create_event("customer.subscription.updated", sub)
}

/// While a rolled secret is valid, Stripe signs with both secrets: the
/// issuer accepts the delivery when either `v1` matches, whichever comes
/// first (the fake signs the purchase's events current-first; Stripe's
/// python library signs two updates, in both orders). Signed with two
/// other secrets, or with both but too old, the delivery is refused and
/// changes nothing.
#[test]
fn deliveries_signed_with_two_secrets_pass_in_either_order_and_fail_when_none_matches() {
    let dir = data_dir();
    let rolled = "whsec_rolledSecretStillValid000000000000";
    let stripe_config = fake_stripe::Config {
        extra_webhook_secrets: vec![rolled.to_owned()],
        current_signature_first: true,
        ..fake_stripe::Config::default()
    };
    let env = BillingEnv::start_with_stripe(stripe_config, dir.path(), &[]);
    // Every event of the purchase came with `v1=<current>,v1=<rolled>`.
    let p = env.buy("rotation@example.com", "pilot-professional", "month");
    let deliveries = env.stripe.deliveries();
    assert!(!deliveries.is_empty());
    for d in &deliveries {
        assert_eq!(d.signature.matches("v1=").count(), 2, "{d:?}");
        assert_eq!(d.status, Some(200), "{d:?}\n{}", env.issuer.log());
    }
    let db = coditect_tests::billing::open_db(dir.path());
    let seats = || -> i64 {
        db.query_row("SELECT max_activations FROM licenses", [], |r| r.get(0))
            .expect("one license")
    };
    let recorded = |id: &str| -> i64 {
        db.query_row(
            "SELECT count(*) FROM stripe_events WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .expect("count")
    };
    assert_eq!(seats(), 3);
    let current = env.stripe.webhook_secret().to_owned();
    let now = unix_now();

    let first = seats_event(&env, &p.subscription_id, 2);
    let Some(current_first) = python_header(&first.payload, now, &[&current, rolled]) else {
        return;
    };
    assert_eq!(current_first.matches("v1=").count(), 2, "{current_first}");
    let d = env
        .stripe
        .post_raw_webhook(&first.payload, Some(&current_first));
    assert_eq!(d.status, Some(200), "{d:?}\n{}", env.issuer.log());
    assert_eq!(seats(), 6);

    let second = seats_event(&env, &p.subscription_id, 3);
    let rolled_first = python_header(&second.payload, now, &[rolled, &current]).unwrap();
    let d = env
        .stripe
        .post_raw_webhook(&second.payload, Some(&rolled_first));
    assert_eq!(d.status, Some(200), "{d:?}\n{}", env.issuer.log());
    assert_eq!(seats(), 9);

    // Neither signature is the endpoint's: refused, nothing applied.
    let third = seats_event(&env, &p.subscription_id, 4);
    let strangers = python_header(
        &third.payload,
        now,
        &[rolled, "whsec_someoneElsesSecret0000000000000000"],
    )
    .unwrap();
    let stale = python_header(&third.payload, now - 600, &[rolled, &current]).unwrap();
    for (header, code) in [(strangers, "bad_signature"), (stale, "stale_signature")] {
        let d = env.stripe.post_raw_webhook(&third.payload, Some(&header));
        assert_eq!(d.status, Some(400), "{d:?}");
        let body: Value = serde_json::from_str(&d.response).unwrap_or_default();
        assert_eq!(body["code"], code, "{body}");
        assert!(!d.response.contains(&current), "the secret leaked");
    }
    assert_eq!(seats(), 9, "a refused delivery changed the license");
    assert_eq!(recorded(&third.id), 0, "a refused event was recorded");
    assert_eq!(recorded(&first.id) + recorded(&second.id), 2);
}
