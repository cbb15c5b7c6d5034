//! Paid signup over HTTP against the real issuer and a fake Stripe:
//! checkout and portal, the webhook events (verified, exactly once, in
//! order), the license they make and change, and its mail.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use coditect_tests::billing::{BillingEnv, Purchase, files_containing, open_db, query_rows};
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::fake_stripe::{StoredEvent, unix_now};
use coditect_tests::issuer::hardware_id;
use serde_json::{Value, json};

const DAY: i64 = 86_400;
/// BILLING_GRACE's default.
const BILLING_GRACE: i64 = 2 * DAY;
/// PAST_DUE_GRACE's default.
const PAST_DUE_GRACE: i64 = 7 * DAY;

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn one(conn: &rusqlite::Connection, sql: &str) -> Value {
    let rows = query_rows(conn, sql);
    assert_eq!(rows.len(), 1, "{sql}: {rows:#?}");
    rows.into_iter().next().unwrap_or_default()
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).expect(sql)
}

/// The period end of a subscription as the fake Stripe has it.
fn period_end(env: &BillingEnv, sub: &str) -> i64 {
    let s = env
        .stripe
        .subscription(sub)
        .expect("the fake has the subscription");
    s["items"]["data"][0]["current_period_end"]
        .as_i64()
        .expect("period end")
}

/// The license key of a purchase, from the mail the issuer wrote to its
/// log (development mode without SMTP_URL).
fn key_from_log(env: &BillingEnv) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = env.issuer.log();
        if let Some(i) = log.find("CODITECT-PILOT-") {
            return log[i..i + 29].to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no license key in the issuer's log:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn activate(env: &BillingEnv, key: &str, machine: &str) -> coditect_tests::issuer::HttpResponse {
    env.client().post_json(
        "/api/v1/licenses/activate",
        &json!({"license_key": key, "hardware_id": hardware_id(machine), "machine_name": machine}),
    )
}

fn validate(env: &BillingEnv, key: &str, machine: &str) -> coditect_tests::issuer::HttpResponse {
    env.client().post_json(
        "/api/v1/licenses/validate",
        &json!({"license_key": key, "hardware_id": hardware_id(machine)}),
    )
}

fn assert_all_delivered(env: &BillingEnv) {
    let failed: Vec<_> = env
        .stripe
        .deliveries()
        .into_iter()
        .filter(|d| !d.succeeded())
        .collect();
    assert!(failed.is_empty(), "{failed:#?}\n{}", env.issuer.log());
}

#[test]
fn a_paid_checkout_makes_one_license_and_one_mail_and_the_key_works() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("buyer@example.com", "pilot-professional", "month");
    assert_all_delivered(&env);
    assert!(
        p.redirect_url
            .as_deref()
            .is_some_and(|u| u.contains(&format!("/signup/success?session_id={}", p.session_id))),
        "{:?}",
        p.redirect_url
    );
    let db = open_db(dir.path());
    let license = one(&db, "SELECT * FROM licenses");
    assert_eq!(license["tier"], "pilot-professional");
    assert_eq!(license["status"], "active");
    assert_eq!(license["max_activations"], 3);
    assert_eq!(license["max_projects"], Value::Null);
    assert_eq!(license["ai_requests"], 1000);
    assert_eq!(license["email"], "buyer@example.com");
    assert_eq!(
        license["stripe_subscription_id"],
        p.subscription_id.as_str()
    );
    assert_eq!(
        license["expires_at"],
        period_end(&env, &p.subscription_id) + BILLING_GRACE
    );
    let sub = one(&db, "SELECT * FROM subscriptions");
    assert_eq!(sub["status"], "active");
    assert_eq!(sub["stripe_customer_id"], p.customer_id.as_str());
    let mail = one(&db, "SELECT * FROM email_outbox WHERE kind = 'license_key'");
    assert_eq!(mail["recipient"], "buyer@example.com");
    assert_eq!(mail["kind"], "license_key");
    // Every event the checkout sent was recorded once.
    for id in &p.event_ids {
        assert_eq!(
            count(
                &db,
                &format!("SELECT count(*) FROM stripe_events WHERE id = '{id}'")
            ),
            1
        );
    }
    // The key from the mail activates, with the plan's entitlements.
    let key = key_from_log(&env);
    let body = activate(&env, &key, "laptop").expect_status(201);
    assert_eq!(body["license"]["tier"], "pilot-professional", "{body}");
    // The customer is reused for the organization; a second checkout while
    // subscribed is refused.
    env.start_checkout(&p.jwt, "pilot-starter", "year")
        .expect_problem(409, "already_subscribed");
    let customers = env.stripe.requests_to("POST", "/v1/customers");
    assert_eq!(customers.len(), 1, "one customer per organization");
}

#[test]
fn checkout_and_portal_requests_are_checked() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let jwt = env.account("owner@example.com", "Owner Co");
    let client = env.client();
    // Not signed in.
    client
        .post_json(
            "/api/v1/billing/checkout",
            &json!({"plan": "pilot-starter", "interval": "month"}),
        )
        .expect_problem(401, "unauthorized");
    // Bad plan and interval name the field.
    let p = env
        .start_checkout(&jwt, "enterprise", "month")
        .expect_problem(422, "invalid_field");
    assert_eq!(p["field"], "plan");
    let p = env
        .start_checkout(&jwt, "pilot-starter", "weekly")
        .expect_problem(422, "invalid_field");
    assert_eq!(p["field"], "interval");
    // The portal needs a customer first.
    let authed = client.clone().with_bearer(&jwt);
    authed
        .post_json("/api/v1/billing/portal", &json!({}))
        .expect_problem(409, "no_billing_account");
    // Stripe failing: a clear 503, and nothing half-made.
    env.stripe
        .fail_next_requests("POST", "/v1/checkout/sessions", 500, 1);
    let failed = env
        .start_checkout(&jwt, "pilot-starter", "month")
        .expect_problem(503, "billing_unavailable");
    assert!(!failed.to_string().contains("sk_test"), "{failed}");
    let db = open_db(dir.path());
    assert_eq!(count(&db, "SELECT count(*) FROM checkouts"), 0);
    // Then it works, with the right price, the organization in the
    // metadata and the success/cancel URLs on the issuer.
    let ok = env
        .start_checkout(&jwt, "pilot-starter", "year")
        .expect_status(200);
    let session_id = ok["session_id"].as_str().unwrap();
    assert!(
        ok["url"]
            .as_str()
            .unwrap()
            .starts_with(&env.stripe.base_url())
    );
    let session = env.stripe.checkout_session(session_id).unwrap();
    assert_eq!(session["mode"], "subscription");
    let org = one(&db, "SELECT id FROM organizations")["id"].clone();
    assert_eq!(session["client_reference_id"], org);
    assert_eq!(session["metadata"]["organization_id"], org);
    assert!(
        session["success_url"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/signup/success", env.issuer.base_url()))
    );
    let created = env.stripe.requests_to("POST", "/v1/checkout/sessions");
    let last = created.last().unwrap();
    assert_eq!(
        last.param("line_items[0][price]"),
        Some(coditect_tests::fake_stripe::PRICE_STARTER_ANNUAL)
    );
    // The customer made for the failed attempt was reused.
    assert_eq!(env.stripe.requests_to("POST", "/v1/customers").len(), 1);
    // The portal opens for the organization's customer.
    let portal = authed
        .post_json("/api/v1/billing/portal", &json!({}))
        .expect_status(200);
    assert!(
        portal["url"].as_str().is_some_and(|u| !u.is_empty()),
        "{portal}"
    );
}

#[test]
fn a_trial_from_the_configuration_starts_a_license_before_the_first_charge() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[("STRIPE_TRIAL_DAYS", "7")]);
    let p = env.buy("trial@example.com", "pilot-starter", "month");
    assert_all_delivered(&env);
    let created = env.stripe.requests_to("POST", "/v1/checkout/sessions");
    assert_eq!(
        created[0].param("subscription_data[trial_period_days]"),
        Some("7")
    );
    let sub = env.stripe.subscription(&p.subscription_id).unwrap();
    assert_eq!(sub["status"], "trialing");
    let db = open_db(dir.path());
    let license = one(&db, "SELECT status, expires_at FROM licenses");
    assert_eq!(license["status"], "active");
    assert_eq!(
        license["expires_at"],
        period_end(&env, &p.subscription_id) + BILLING_GRACE
    );
    let key = key_from_log(&env);
    activate(&env, &key, "laptop").expect_status(201);
}

#[test]
fn payments_are_off_without_stripe_settings() {
    let dir = data_dir();
    let server = coditect_tests::issuer::IssuerServer::start(dir.path());
    let client = server.client();
    client
        .post_json(
            "/api/v1/auth/signup",
            &json!({"email": "a@example.com", "password": "correct horse battery staple", "company_name": "A"}),
        )
        .expect_status(202);
    let login = client
        .post_json(
            "/api/v1/auth/login",
            &json!({"email": "a@example.com", "password": "correct horse battery staple"}),
        )
        .expect_status(200);
    let jwt = login["access_token"].as_str().unwrap();
    client
        .clone()
        .with_bearer(jwt)
        .post_json(
            "/api/v1/billing/checkout",
            &json!({"plan": "pilot-starter", "interval": "month"}),
        )
        .expect_problem(503, "billing_not_configured");
    client
        .post_raw("/webhooks/stripe", "application/json", "{}")
        .expect_problem(503, "webhooks_not_configured");
}

/// `Stripe-Signature` made by Stripe's own python library.
fn python_signature(payload: &str, secret: &str, timestamp: i64) -> Option<String> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("payload.json");
    std::fs::write(&path, payload).expect("write payload");
    let script = "import sys, stripe\n\
                  payload = open(sys.argv[1], 'rb').read().decode('utf-8')\n\
                  print(stripe.WebhookSignature.generate_signature_header(payload, sys.argv[2], int(sys.argv[3])))\n";
    let out = Command::new("python3")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .args(["-c", script])
        .arg(&path)
        .arg(secret)
        .arg(timestamp.to_string())
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

/// A `customer.subscription.updated` for the purchase with `quantity`
/// seats, created (not sent) by the fake.
fn seats_event(env: &BillingEnv, p: &Purchase, quantity: u64) -> StoredEvent {
    let mut sub = env.stripe.subscription(&p.subscription_id).unwrap();
    sub["items"]["data"][0]["quantity"] = json!(quantity);
    sub["quantity"] = json!(quantity);
    env.stripe
        .create_event("customer.subscription.updated", sub)
}

#[test]
fn webhook_signatures_python_made_ones_pass_and_bad_ones_change_nothing() {
    let dir = data_dir();
    let mut env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("sig@example.com", "pilot-professional", "month");
    let event = seats_event(&env, &p, 2);
    let secret = env.stripe.webhook_secret().to_owned();
    let now = unix_now();
    let Some(good) = python_signature(&event.payload, &secret, now) else {
        return;
    };
    let db = open_db(dir.path());
    let seats = || count(&db, "SELECT max_activations FROM licenses");
    assert_eq!(seats(), 3);
    let tampered = event
        .payload
        .replacen("\"quantity\": 2", "\"quantity\": 50", 1);
    assert_ne!(
        tampered, event.payload,
        "the payload has a quantity to change"
    );
    let wrong_secret = python_signature(&event.payload, "whsec_not_the_secret", now).unwrap();
    let stale = python_signature(&event.payload, &secret, now - 600).unwrap();
    let future = python_signature(&event.payload, &secret, now + 600).unwrap();
    let cases: [(&str, &str, Option<&str>, &str); 7] = [
        ("tampered body", &tampered, Some(&good), "bad_signature"),
        (
            "wrong secret",
            &event.payload,
            Some(&wrong_secret),
            "bad_signature",
        ),
        (
            "ten minutes old",
            &event.payload,
            Some(&stale),
            "stale_signature",
        ),
        (
            "ten minutes ahead",
            &event.payload,
            Some(&future),
            "stale_signature",
        ),
        ("unsigned", &event.payload, None, "missing_signature"),
        (
            "garbage header",
            &event.payload,
            Some("t=abc,v1=zz"),
            "bad_signature",
        ),
        (
            "v0 only",
            &event.payload,
            Some(&good.replace("v1=", "v0=")),
            "bad_signature",
        ),
    ];
    for (what, payload, signature, code) in cases {
        let d = env.stripe.post_raw_webhook(payload, signature);
        assert_eq!(d.status, Some(400), "{what}: {d:?}");
        let body: Value = serde_json::from_str(&d.response).unwrap_or_default();
        assert_eq!(body["code"], code, "{what}: {body}");
        assert!(!d.response.contains(&secret), "{what}: the secret leaked");
    }
    assert_eq!(seats(), 3, "a refused delivery changed the license");
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM stripe_events WHERE id = '{}'",
                event.id
            )
        ),
        0
    );
    // Refusals are in the audit log: the first from this address at once,
    // the others counted into one row (written at the end of the minute or,
    // below, at the stop).
    std::thread::sleep(Duration::from_millis(1500));
    let refusals = count(
        &db,
        "SELECT count(*) FROM audit_log WHERE event = 'stripe_webhook'
         AND outcome IN ('bad_signature', 'stale_signature', 'missing_signature')",
    );
    assert_eq!(refusals, 1);
    // Stripe's own signature over the real bytes is accepted.
    let d = env.stripe.post_raw_webhook(&event.payload, Some(&good));
    assert_eq!(d.status, Some(200), "{d:?}\n{}", env.issuer.log());
    assert_eq!(seats(), 6, "two seats of Professional: 6 devices");
    // An oversized body is refused before it is read.
    let huge = format!("{{\"pad\": \"{}\"}}", "x".repeat(600 * 1024));
    let d = env.stripe.post_raw_webhook(&huge, Some(&good));
    assert_eq!(d.status, Some(413), "{d:?}");
    env.issuer.terminate(Duration::from_secs(20));
    let repeated = one(
        &db,
        "SELECT detail FROM audit_log WHERE event = 'stripe_webhook' AND outcome = 'repeated'",
    );
    let detail = repeated["detail"].as_str().unwrap_or_default();
    assert!(detail.starts_with("6 more since "), "{detail}");
    assert!(
        detail.ends_with(": bad_signature 3, missing_signature 1, stale_signature 2"),
        "{detail}"
    );
}

coditect_tests::on_both_backends!(
    the_same_event_twenty_times_ten_at_once_makes_one_license_and_one_mail
);

fn the_same_event_twenty_times_ten_at_once_makes_one_license_and_one_mail(backend: Backend) {
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let env = BillingEnv::start(dir.path(), &[]);
    env.stripe.pause_deliveries();
    let jwt = env.account("twice@example.com", "Twice Ltd");
    let started = env
        .start_checkout(&jwt, "pilot-starter", "month")
        .expect_status(200);
    let done = env
        .stripe
        .complete_checkout(started["session_id"].as_str().unwrap());
    let queued = env.stripe.take_queued();
    let completed = queued
        .iter()
        .find(|id| {
            env.stripe
                .event(id)
                .is_some_and(|e| e.event_type == "checkout.session.completed")
        })
        .expect("a checkout.session.completed event")
        .clone();
    // Ten at the same moment, then ten more one by one.
    let mut deliveries = env.stripe.deliver_concurrently(&completed, 10);
    for _ in 0..10 {
        deliveries.push(env.stripe.deliver(&completed));
    }
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:#?}\n{}",
        env.issuer.log()
    );
    let applied = deliveries
        .iter()
        .filter(|d| d.response.contains("\"applied\""))
        .count();
    assert_eq!(applied, 1, "{deliveries:#?}");
    // The other events, in any order, twice each.
    for id in queued.iter().rev().chain(queued.iter()) {
        assert_eq!(env.stripe.deliver(id).status, Some(200));
    }
    assert_eq!(db.count("SELECT count(*) FROM licenses"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox WHERE kind = 'license_key'"),
        1
    );
    assert_eq!(db.count("SELECT count(*) FROM subscriptions"), 1);
    let license = db.one("SELECT * FROM licenses");
    assert_eq!(license["tier"], "pilot-starter");
    assert_eq!(license["max_activations"], 1);
    assert_eq!(
        license["expires_at"],
        period_end(&env, &done.subscription_id) + BILLING_GRACE
    );
}

#[test]
fn when_stripe_cannot_be_asked_the_event_fails_cleanly_and_its_retry_applies() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    env.stripe.pause_deliveries();
    let jwt = env.account("retry@example.com", "Retry Ltd");
    let started = env
        .start_checkout(&jwt, "pilot-professional", "year")
        .expect_status(200);
    env.stripe
        .complete_checkout(started["session_id"].as_str().unwrap());
    // Reading the subscription back from Stripe fails (Stripe has an outage).
    env.stripe
        .fail_next_requests("GET", "/v1/subscriptions/*", 500, 3);
    let deliveries = env.stripe.resume_deliveries();
    let completed = deliveries
        .iter()
        .find(|d| d.event_type == "checkout.session.completed")
        .expect("delivered");
    assert_eq!(completed.status, Some(503), "{completed:?}");
    let db = open_db(dir.path());
    assert_eq!(count(&db, "SELECT count(*) FROM licenses"), 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_outbox WHERE kind = 'license_key'"
        ),
        0
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM stripe_events WHERE id = '{}'",
                completed.event_id
            )
        ),
        0,
        "a failed event is not marked processed"
    );
    // Stripe's retries: the failures run out, then it is applied, once.
    let mut statuses = Vec::new();
    for _ in 0..4 {
        statuses.push(env.stripe.deliver(&completed.event_id).status);
    }
    assert_eq!(statuses, [Some(503), Some(503), Some(200), Some(200)]);
    assert_eq!(count(&db, "SELECT count(*) FROM licenses"), 1);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM email_outbox WHERE kind = 'license_key'"
        ),
        1
    );
}

#[test]
fn subscription_events_out_of_order_end_in_the_newest_state() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("order@example.com", "pilot-starter", "month");
    let key = key_from_log(&env);
    let mut sub = env.stripe.subscription(&p.subscription_id).unwrap();
    let t = unix_now();
    // Upgrade to Professional with 2 seats at t+20, and an older update
    // (Starter, 1 seat, cancel at period end) at t+10, delivered newest first.
    sub["items"]["data"][0]["price"]["id"] =
        json!(coditect_tests::fake_stripe::PRICE_PROFESSIONAL_MONTHLY);
    sub["items"]["data"][0]["quantity"] = json!(2);
    let newer = env
        .stripe
        .create_event_at("customer.subscription.updated", sub.clone(), t + 20);
    sub["items"]["data"][0]["price"]["id"] =
        json!(coditect_tests::fake_stripe::PRICE_STARTER_MONTHLY);
    sub["items"]["data"][0]["quantity"] = json!(1);
    sub["cancel_at_period_end"] = json!(true);
    let older = env
        .stripe
        .create_event_at("customer.subscription.updated", sub.clone(), t + 10);
    assert_eq!(env.stripe.deliver(&newer.id).status, Some(200));
    let d = env.stripe.deliver(&older.id);
    assert_eq!(d.status, Some(200), "{d:?}");
    assert!(d.response.contains("\"stale\""), "{}", d.response);
    let db = open_db(dir.path());
    let license = one(&db, "SELECT tier, max_activations FROM licenses");
    assert_eq!(license["tier"], "pilot-professional");
    assert_eq!(license["max_activations"], 6);
    let s = one(
        &db,
        "SELECT status, cancel_at_period_end FROM subscriptions",
    );
    assert_eq!(s["cancel_at_period_end"], 0);
    // A deletion is final: an update from before it, delivered after it,
    // does not bring the license back.
    sub["status"] = json!("canceled");
    let deleted = env
        .stripe
        .create_event_at("customer.subscription.deleted", sub.clone(), t + 40);
    sub["status"] = json!("active");
    let late = env
        .stripe
        .create_event_at("customer.subscription.updated", sub.clone(), t + 30);
    assert_eq!(env.stripe.deliver(&deleted.id).status, Some(200));
    assert_eq!(env.stripe.deliver(&late.id).status, Some(200));
    assert_eq!(
        one(&db, "SELECT status FROM licenses")["status"],
        "canceled"
    );
    activate(&env, &key, "desk").expect_problem(403, "license_canceled");
}

#[test]
fn renewals_extend_and_failed_payments_run_out_after_the_grace() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("renew@example.com", "pilot-professional", "month");
    let key = key_from_log(&env);
    activate(&env, &key, "laptop").expect_status(201);
    let db = open_db(dir.path());
    let expiry = || count(&db, "SELECT expires_at FROM licenses");
    let first = expiry();
    // A paid renewal moves the expiry to the new period end (+ grace).
    env.stripe.advance_period(&p.subscription_id);
    assert_all_delivered(&env);
    let renewed = period_end(&env, &p.subscription_id);
    assert!(renewed > first - BILLING_GRACE, "the period moved on");
    assert_eq!(expiry(), renewed + BILLING_GRACE);
    // Redelivering the older invoice.paid does not move it back.
    let first_paid = env
        .stripe
        .events_of_type("invoice.paid")
        .first()
        .unwrap()
        .id
        .clone();
    env.stripe.deliver(&first_paid);
    assert_eq!(expiry(), renewed + BILLING_GRACE);
    // The next payment fails: past due, still renewing for the grace.
    env.stripe.fail_next_payment(&p.subscription_id);
    assert_all_delivered(&env);
    let s = one(&db, "SELECT status, past_due_since FROM subscriptions");
    assert_eq!(s["status"], "past_due");
    let since = s["past_due_since"].as_i64().unwrap();
    assert_eq!(expiry(), since + PAST_DUE_GRACE);
    validate(&env, &key, "laptop").expect_status(200);
    // The payment is recovered: active, and the expiry follows the period.
    env.stripe.recover_payment(&p.subscription_id);
    assert_all_delivered(&env);
    let s = one(&db, "SELECT status, past_due_since FROM subscriptions");
    assert_eq!(s["status"], "active");
    assert_eq!(s["past_due_since"], Value::Null);
    assert_eq!(
        expiry(),
        period_end(&env, &p.subscription_id) + BILLING_GRACE
    );
}

#[test]
fn past_due_licenses_are_refused_after_the_grace_and_deleted_ones_at_once() {
    let dir = data_dir();
    // A one-second past-due grace, so that it runs out during the test.
    let env = BillingEnv::start(dir.path(), &[("PAST_DUE_GRACE", "1s")]);
    let p = env.buy("late@example.com", "pilot-starter", "year");
    let key = key_from_log(&env);
    activate(&env, &key, "laptop").expect_status(201);
    env.stripe.fail_next_payment(&p.subscription_id);
    assert_all_delivered(&env);
    let db = open_db(dir.path());
    let expires = count(&db, "SELECT expires_at FROM licenses");
    while unix_now() <= expires {
        std::thread::sleep(Duration::from_millis(200));
    }
    let refused = validate(&env, &key, "laptop").expect_problem(403, "payment_overdue");
    assert!(
        refused["detail"]
            .as_str()
            .is_some_and(|d| d.contains("billing portal")),
        "{refused}"
    );
    // Paid after all: renewing again.
    env.stripe.recover_payment(&p.subscription_id);
    assert_all_delivered(&env);
    validate(&env, &key, "laptop").expect_status(200);
    // Deleting the subscription ends the license at once.
    let mut sub = env.stripe.subscription(&p.subscription_id).unwrap();
    sub["status"] = json!("canceled");
    let deleted = env
        .stripe
        .create_event_at("customer.subscription.deleted", sub, unix_now() + 2);
    assert_eq!(env.stripe.deliver(&deleted.id).status, Some(200));
    validate(&env, &key, "laptop").expect_problem(403, "license_canceled");
}

#[test]
fn unknown_events_and_customers_are_acknowledged_and_ignored() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let e = env.stripe.send_event(
        "charge.refunded",
        json!({"id": "ch_1", "object": "charge", "customer": "cus_nobody"}),
    );
    let d = env.stripe.deliveries_of(&e.id);
    assert_eq!(d[0].status, Some(200), "{d:?}");
    assert!(d[0].response.contains("ignored"), "{}", d[0].response);
    let e = env.stripe.send_event(
        "customer.subscription.updated",
        json!({"id": "sub_x", "object": "subscription", "customer": "cus_unknown", "status": "active", "items": {"data": []}}),
    );
    let d = env.stripe.deliveries_of(&e.id);
    assert_eq!(d[0].status, Some(200), "{d:?}");
    let db = open_db(dir.path());
    assert_eq!(count(&db, "SELECT count(*) FROM subscriptions"), 0);
    assert_eq!(count(&db, "SELECT count(*) FROM stripe_events"), 2);
}

#[test]
fn once_mailed_the_key_is_nowhere_in_the_database_files() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    env.buy("disk@example.com", "pilot-starter", "month");
    let key = key_from_log(&env);
    let db = open_db(dir.path());
    let deadline = Instant::now() + Duration::from_secs(30);
    while count(
        &db,
        "SELECT count(*) FROM email_outbox WHERE sent_at IS NULL",
    ) > 0
    {
        assert!(Instant::now() < deadline, "the mail was not sent");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(db);
    // The sender scrubs the write-ahead log right after marking the mail
    // sent; give it a moment.
    let files_with_key = || files_containing(dir.path(), &key);
    let mut found = files_with_key();
    while !found.is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
        found = files_with_key();
    }
    assert!(
        found.is_empty(),
        "the key {key} is still on disk in {found:?}"
    );
}

#[test]
fn a_bought_key_activates_in_the_cli_and_ending_the_subscription_stops_its_renewals() {
    use coditect_tests::cli::Cli;
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let p = env.buy("cli@example.com", "pilot-professional", "year");
    let key = key_from_log(&env);
    let cli = Cli::new().machine("bought-machine");
    let out = cli.run(&[
        "activate",
        &key,
        "--server",
        env.issuer.base_url(),
        "--name",
        "laptop",
    ]);
    out.assert_success();
    let claims = cli.stored_claims();
    assert_eq!(claims.tier, "pilot-professional");
    assert_eq!(claims.entitlements.max_devices, 3);
    let status = cli.run(&["license", "status"]);
    status.assert_success();
    assert!(status.stdout.contains("Pilot Professional"), "{status}");
    // The subscription ends: the next renewal is refused and explained.
    let mut sub = env.stripe.subscription(&p.subscription_id).unwrap();
    sub["status"] = json!("canceled");
    let deleted = env
        .stripe
        .create_event_at("customer.subscription.deleted", sub, unix_now() + 1);
    assert_eq!(env.stripe.deliver(&deleted.id).status, Some(200));
    let out = cli.run(&["license", "renew", "--server", env.issuer.base_url()]);
    assert!(!out.success(), "{out}");
    assert!(out.all_output().to_lowercase().contains("cancel"), "{out}");
}

#[test]
fn a_new_checkout_expires_the_open_one_so_nobody_pays_twice() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let jwt = env.account("tabs@example.com", "Two Tabs Ltd");
    let first = env
        .start_checkout(&jwt, "pilot-starter", "month")
        .expect_status(200);
    let first_id = first["session_id"].as_str().unwrap().to_owned();
    let second = env
        .start_checkout(&jwt, "pilot-professional", "month")
        .expect_status(200);
    let second_id = second["session_id"].as_str().unwrap().to_owned();
    assert_eq!(
        env.stripe.checkout_session(&first_id).unwrap()["status"],
        "expired"
    );
    assert_eq!(
        env.stripe.checkout_session(&second_id).unwrap()["status"],
        "open"
    );
    env.stripe.complete_checkout(&second_id);
    assert_all_delivered(&env);
    let db = open_db(dir.path());
    assert_eq!(count(&db, "SELECT count(*) FROM licenses"), 1);
    assert_eq!(
        one(&db, "SELECT tier FROM licenses")["tier"],
        "pilot-professional"
    );

    // Paid in one tab while Stripe's events are still on their way: a new
    // checkout in another tab is refused, not charged again.
    let jwt = env.account("race@example.com", "Race Ltd");
    let paid = env
        .start_checkout(&jwt, "pilot-starter", "year")
        .expect_status(200);
    env.stripe.pause_deliveries();
    env.stripe
        .complete_checkout(paid["session_id"].as_str().unwrap());
    env.start_checkout(&jwt, "pilot-starter", "month")
        .expect_problem(409, "already_subscribed");
    env.stripe.resume_deliveries();
    assert_all_delivered(&env);
    assert_eq!(count(&db, "SELECT count(*) FROM licenses"), 2);
}
