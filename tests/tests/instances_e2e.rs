//! Two issuer instances on one PostgreSQL database behave as one service,
//! as they do on Cloud Run, where any instance may take any request: seats,
//! Stripe events, mail and sign-outs are decided in the database, whichever
//! instance is asked. (The shared rate limits are proven in
//! `rate_limits_e2e.rs`.)

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Barrier};
use std::time::Duration;

use coditect_tests::billing::{BillingEnv, stripe_env};
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{
    IssuerServer, admin, create_license, env_refs, hardware_id, show_license,
};
use coditect_tests::smtp::{SmtpSink, listener_available};
use serde_json::json;

const ACTIVATE: &str = "/api/v1/licenses/activate";

/// Instance A with the fake Stripe (its webhook URL points at A), and
/// instance B with the same settings, both on the test's database.
fn two_instances(dir: &std::path::Path, env: &[(&str, &str)]) -> (BillingEnv, IssuerServer) {
    let a = BillingEnv::start(dir, env);
    let mut all: Vec<(String, String)> = stripe_env(&a.stripe);
    all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let b = IssuerServer::start_with_env(dir, &env_refs(&all));
    (a, b)
}

#[test]
fn fifty_activations_spread_over_two_instances_take_exactly_three_seats() {
    const MACHINES: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let Some(_db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let (a, b) = two_instances(dir.path(), &[]);
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "two@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "3",
        ],
    );
    let barrier = Arc::new(Barrier::new(MACHINES));
    let clients = [a.issuer.client(), b.client()];
    let threads: Vec<_> = (0..MACHINES)
        .map(|i| {
            let client = clients[i % 2].clone();
            let barrier = Arc::clone(&barrier);
            let key = license.key.clone();
            std::thread::spawn(move || {
                let hw = hardware_id(&format!("two-instances-{i:02}"));
                let body = json!({"license_key": key, "hardware_id": hw});
                barrier.wait();
                (hw, client.post_json(ACTIVATE, &body))
            })
        })
        .collect();
    let mut winners = BTreeSet::new();
    for t in threads {
        let (hw, resp) = t.join().unwrap();
        match resp.status {
            201 => {
                winners.insert(hw);
            }
            _ => {
                resp.expect_problem(403, "too_many_activations");
            }
        }
    }
    assert_eq!(
        winners.len(),
        3,
        "exactly three seats across both instances"
    );
    let shown = show_license(dir.path(), &license.id);
    assert_eq!(shown["devices_used"], 3, "{shown}");
}

#[test]
fn one_stripe_event_delivered_twenty_times_to_two_instances_makes_one_license_and_one_mail() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let (a, b) = two_instances(dir.path(), &[]);
    a.stripe.pause_deliveries();
    let jwt = a.account("split@example.com", "Split Ltd");
    let started = a
        .start_checkout(&jwt, "pilot-starter", "month")
        .expect_status(200);
    a.stripe
        .complete_checkout(started["session_id"].as_str().unwrap());
    let queued = a.stripe.take_queued();
    let completed = queued
        .iter()
        .find(|id| {
            a.stripe
                .event(id)
                .is_some_and(|e| e.event_type == "checkout.session.completed")
        })
        .expect("a checkout.session.completed event")
        .clone();
    let urls = [
        format!("{}/webhooks/stripe", a.issuer.base_url()),
        format!("{}/webhooks/stripe", b.base_url()),
    ];
    // Ten at the same moment, five to each instance, then ten alternating.
    let barrier = Barrier::new(10);
    let mut deliveries: Vec<_> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..10)
            .map(|i| {
                let (url, barrier, stripe, id) = (&urls[i % 2], &barrier, &a.stripe, &completed);
                scope.spawn(move || {
                    barrier.wait();
                    stripe.deliver_to(url, id)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for i in 0..10 {
        deliveries.push(a.stripe.deliver_to(&urls[i % 2], &completed));
    }
    assert!(
        deliveries.iter().all(|d| d.status == Some(200)),
        "{deliveries:#?}"
    );
    let applied = deliveries
        .iter()
        .filter(|d| d.response.contains("\"applied\""))
        .count();
    assert_eq!(applied, 1, "{deliveries:#?}");
    for id in &queued {
        a.stripe.deliver_to(&urls[1], id);
    }
    assert_eq!(db.count("SELECT count(*) FROM licenses"), 1);
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox WHERE kind = 'license_key'"),
        1
    );
    assert_eq!(
        db.count(&format!(
            "SELECT count(*) FROM stripe_events WHERE id = '{completed}'"
        )),
        1
    );
}

#[test]
fn two_mail_senders_send_every_mail_once() {
    const BUYERS: usize = 6;
    if !listener_available("two_mail_senders_send_every_mail_once") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    // The mail server is down while the purchases queue their key mails,
    // so that both instances' senders retry the same mails at once when it
    // comes back.
    let mut smtp = SmtpSink::start(&dir.path().join("smtp"));
    smtp.stop();
    let smtp_url = smtp.url();
    let env = [
        ("SMTP_URL", smtp_url.as_str()),
        ("MAIL_RETRY_INITIAL", "1s"),
    ];
    let (a, _b) = two_instances(dir.path(), &env);
    for i in 0..BUYERS {
        a.buy(&format!("buyer{i}@example.com"), "pilot-starter", "month");
    }
    // Each buyer's signup queued a verification mail, each purchase a key.
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox WHERE kind = 'license_key'"),
        BUYERS as i64
    );
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox"),
        2 * BUYERS as i64
    );
    smtp.restart();
    smtp.wait_for(2 * BUYERS, Duration::from_secs(60));
    // Time for a second copy to arrive, were one on its way.
    std::thread::sleep(Duration::from_secs(3));
    let mut per_recipient: BTreeMap<(String, String), usize> = BTreeMap::new();
    for m in smtp.messages() {
        let subject = m.header("Subject").unwrap_or_default().to_owned();
        for to in &m.rcpt_tos {
            *per_recipient
                .entry((to.clone(), subject.clone()))
                .or_default() += 1;
        }
    }
    assert_eq!(per_recipient.len(), 2 * BUYERS, "{per_recipient:?}");
    assert!(
        per_recipient.values().all(|&n| n == 1),
        "a mail went out twice: {per_recipient:?}"
    );
    assert_eq!(
        db.count("SELECT count(*) FROM email_outbox WHERE sent_at IS NULL"),
        0
    );
}

#[test]
fn signing_out_on_one_instance_ends_the_session_on_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let (a, b) = two_instances(dir.path(), &[]);
    let jwt = a.account("session@example.com", "Session Ltd");
    let on_b = b.client().with_bearer(&jwt);
    on_b.get("/api/v1/licenses").expect_status(200);
    let out = a
        .client()
        .with_bearer(&jwt)
        .post_json("/api/v1/auth/logout", &json!({}));
    assert_eq!(out.status, 204, "{}", out.body);
    on_b.get("/api/v1/licenses")
        .expect_problem(401, "unauthorized");
}

/// The container as Cloud Run runs it: exactly the arguments and the
/// environment of `deploy/cloud-run/container.json` (what `service.yaml`
/// and `migrate-job.yaml` are rendered from), with the secrets filled in
/// and `PORT` set as the platform sets it. The migrate job runs first; two
/// instances then serve one database.
#[test]
fn the_cloud_run_container_runs_as_two_instances_after_the_migrate_job() {
    let dir = tempfile::tempdir().unwrap();
    let Some(db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    let root = dir.path().join("container");
    let rendered = std::process::Command::new("python3")
        .arg(coditect_tests::repo_file("deploy/cloud-run/render.py"))
        .args(["--local", "--root", root.to_str().unwrap()])
        .output()
        .expect("run deploy/cloud-run/render.py");
    assert!(rendered.status.success(), "{rendered:?}");
    let spec: serde_json::Value = serde_json::from_slice(&rendered.stdout).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect()
    };
    let (serve_args, migrate_args) = (strings(&spec["args"]), strings(&spec["migrate_args"]));

    // The secrets, as Secret Manager would hand them over.
    let smtp = coditect_tests::smtp::smtp_url(coditect_tests::smtp::free_port());
    let secret = |name: &str| -> String {
        match name {
            "coditect-database-url" => db.url().unwrap().to_owned(),
            "coditect-jwt-secret" => "container-test-jwt-secret-0123456789abcdef".into(),
            "coditect-license-key-pepper" => "container-test-key-pepper-0123456789abcdef".into(),
            "coditect-stripe-secret-key" => "sk_test_container".into(),
            "coditect-stripe-webhook-secret" => "whsec_container".into(),
            "coditect-smtp-url" => smtp.clone(),
            "coditect-metrics-token" => "container-test-metrics-token-0123456789abcdef".into(),
            other => panic!("container.json names a secret this test does not fill: {other}"),
        }
    };
    let mut env: Vec<(String, String)> = spec["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_owned();
            let value = match (e["value"].as_str(), e["secret"].as_str()) {
                (Some(v), None) => v.to_owned(),
                (None, Some(s)) => secret(s),
                _ => panic!("neither value nor secret: {e}"),
            };
            (name, value)
        })
        .collect();
    for file in spec["files"].as_array().unwrap() {
        let path = std::path::PathBuf::from(file["path"].as_str().unwrap());
        assert_eq!(file["secret"], "coditect-signing-key", "{file}");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let kid = env
            .iter()
            .find(|(n, _)| n == "SIGNING_KEY_ID")
            .map(|(_, v)| v.clone())
            .unwrap();
        admin(
            dir.path(),
            &[
                "keys",
                "generate",
                "--kid",
                &kid,
                "--out",
                path.to_str().unwrap(),
            ],
        )
        .assert_success();
    }
    // The issuer's own defaults for the rate limits (the harness lifts
    // them for other tests).
    for (name, _) in coditect_tests::issuer::TEST_RATE_LIMITS {
        env.push(((*name).to_owned(), String::new()));
    }
    let pairs = |port: Option<&str>| -> Vec<(String, String)> {
        let mut all = env.clone();
        if let Some(p) = port {
            all.push(("PORT".into(), p.into()));
        }
        all
    };
    let run = |args: &[String], vars: &[(String, String)]| {
        let refs = env_refs(vars);
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        coditect_tests::issuer::admin_with_env(dir.path(), &argv, &refs)
    };

    // The service refuses to start before the migrate job has run.
    let port_a = coditect_tests::smtp::free_port().to_string();
    let too_early = {
        let vars = pairs(Some(&port_a));
        let refs = env_refs(&vars);
        let mut cmd = coditect_tests::issuer::issuer_command(dir.path(), &refs);
        cmd.args(&serve_args);
        coditect_tests::issuer::run_with_timeout(cmd, Duration::from_secs(30))
    };
    assert_eq!(too_early.code, Some(1), "{too_early}");
    assert!(
        too_early.stderr.contains("coditect-issuer migrate"),
        "{too_early}"
    );
    run(&migrate_args, &pairs(None)).assert_success();

    let start = |port: &str| {
        let vars = pairs(Some(port));
        let refs = env_refs(&vars);
        let argv: Vec<&str> = serve_args.iter().map(String::as_str).collect();
        IssuerServer::start_with_args(dir.path(), &argv, &refs)
    };
    let a = start(&port_a);
    let b = start(&coditect_tests::smtp::free_port().to_string());
    let log = a.log();
    assert!(
        log.lines()
            .any(|l| l.contains("\"severity\"") || l.starts_with('{')),
        "LOG_FORMAT=json gives JSON lines:\n{log}"
    );
    let keys = b.get("/api/v1/keys").expect_status(200);
    assert_eq!(keys["keys"][0]["kid"], "coditect-2026-1", "{keys}");

    // A license made by an admin command in the same environment, activated
    // on one instance and renewed on the other.
    let made = run(
        &[
            "license".into(),
            "create".into(),
            "--email".into(),
            "container@example.com".into(),
            "--tier".into(),
            "pilot-starter".into(),
            "--json".into(),
        ],
        &pairs(None),
    );
    made.assert_success();
    let key = made.json()["key"].as_str().unwrap().to_owned();
    let hw = hardware_id("container-machine");
    let body = json!({"license_key": key, "hardware_id": hw});
    a.post_json(ACTIVATE, &body).expect_status(201);
    b.post_json("/api/v1/licenses/validate", &body)
        .expect_status(200);
}
