//! `coditect-issuer stats`: the pilot's figures from a known history made
//! through the API and signed webhooks of the fake Stripe, read by the
//! real command as an operator runs it.

use std::time::{Duration, Instant};

use coditect_tests::billing::{BillingEnv, stripe_env};
use coditect_tests::issuer::{admin_with_env, env_refs, hardware_id};
use serde_json::{Value, json};

/// The `n`th distinct license key the issuer mailed (to its log, in
/// development), waiting for it.
fn nth_key(env: &BillingEnv, n: usize) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let log = env.issuer.log();
        let mut keys: Vec<String> = Vec::new();
        for (i, _) in log.match_indices("CODITECT-PILOT-") {
            let key = log[i..(i + 29).min(log.len())].to_owned();
            if key.len() == 29 && !keys.contains(&key) {
                keys.push(key);
            }
        }
        if keys.len() >= n {
            return keys[n - 1].clone();
        }
        assert!(Instant::now() < deadline, "no key {n} in the log:\n{log}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn activate(env: &BillingEnv, key: &str, machine: &str) {
    env.client()
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": key, "hardware_id": hardware_id(machine), "machine_name": machine}),
        )
        .expect_status(201);
}

/// Three organizations buy (Starter monthly at $19, Professional monthly
/// at $49, Starter yearly at $190); two activate a machine; Professional's
/// renewal fails once and is paid on the retry, the first Starter's fails
/// and stays unpaid (past due: still revenue Stripe is collecting); the
/// yearly one is canceled. Every figure follows from that.
#[test]
fn stats_reports_every_figure_of_a_known_history_against_the_targets() {
    let dir = tempfile::tempdir().expect("temp dir");
    let env = BillingEnv::start(dir.path(), &[]);
    let a = env.buy("a@example.com", "pilot-starter", "month");
    let key_a = nth_key(&env, 1);
    let b = env.buy("b@example.com", "pilot-professional", "month");
    let key_b = nth_key(&env, 2);
    let c = env.buy("c@example.com", "pilot-starter", "year");
    nth_key(&env, 3);
    activate(&env, &key_a, "a-laptop");
    activate(&env, &key_b, "b-laptop");

    env.stripe.fail_next_payment(&b.subscription_id);
    env.stripe.recover_payment(&b.subscription_id);
    env.stripe.fail_next_payment(&a.subscription_id);
    let mut ended = env
        .stripe
        .subscription(&c.subscription_id)
        .expect("c's subscription");
    ended["status"] = json!("canceled");
    env.stripe
        .send_event("customer.subscription.deleted", ended);

    let vars = stripe_env(&env.stripe);
    let out = admin_with_env(dir.path(), &["stats", "--json"], &env_refs(&vars));
    out.assert_success();
    let s: Value = out.json();
    assert_eq!(s["since"], Value::Null);
    assert_eq!(s["paid_signups"], 3);
    assert_eq!(
        s["signups_by_plan"],
        json!({"pilot-professional": 1, "pilot-starter": 2})
    );
    assert_eq!(
        (s["paid_licenses"].clone(), s["activated_licenses"].clone()),
        (json!(3), json!(2))
    );
    assert!((s["activation_rate"].as_f64().unwrap() - 2.0 / 3.0).abs() < 1e-9);
    // Five invoices: three first payments, Professional's renewal (paid on
    // the retry) and the first Starter's renewal (failed).
    assert_eq!(
        (s["invoices_attempted"].clone(), s["invoices_paid"].clone()),
        (json!(5), json!(4))
    );
    assert!((s["payment_success"].as_f64().unwrap() - 0.8).abs() < 1e-9);
    // $19 (past due, still collected) + $49; the canceled yearly plan no more.
    assert_eq!(
        s["mrr"],
        json!({"minor": 6_800, "currency": "usd", "subscriptions": 2, "unpriced": 0})
    );
    assert_eq!(s["mrr_at_since"]["minor"], 0);
    assert_eq!(s["mrr_change_minor"], 6_800);
    assert_eq!(
        (s["churned"].clone(), s["churn_base"].clone()),
        (json!(1), json!(3))
    );
    assert_eq!(s["active_machines"], 2);
    let targets: Vec<(String, String, bool)> = s["targets"]
        .as_array()
        .expect("targets")
        .iter()
        .map(|t| {
            (
                t["metric"].as_str().unwrap().to_owned(),
                t["actual"].as_str().unwrap().to_owned(),
                t["met"].as_bool().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        targets,
        [
            ("paid_signups".to_owned(), "3".to_owned(), false),
            ("activation_rate".to_owned(), "66.7%".to_owned(), false),
            ("payment_success".to_owned(), "80.0%".to_owned(), false),
            ("mrr".to_owned(), "$68.00".to_owned(), false),
        ]
    );

    // The same figures for the operator's eyes.
    let out = admin_with_env(dir.path(), &["stats"], &env_refs(&vars));
    out.assert_success();
    let text = out.stdout.clone();
    println!("{text}");
    for line in [
        "paid signups      3",
        "activation rate   66.7% (2 of 3 paid licenses activated)",
        "payment success   80.0% (4 of 5 invoices paid)",
        "MRR               $68.00 (+$68.00 since the start; 2 subscriptions)",
        "churn             33.3% (1 of 3 subscriptions ended)",
        "active machines   2 (renewed in the last 7 days)",
    ] {
        assert!(text.contains(line), "`{line}` missing from:\n{text}");
    }
    assert!(text.contains("not met"), "{text}");

    // A period that starts after everything: nothing new in it, and the
    // revenue it started with is today's.
    std::thread::sleep(Duration::from_millis(2100));
    let out = admin_with_env(
        dir.path(),
        &["stats", "--since", "1s", "--json"],
        &env_refs(&vars),
    );
    out.assert_success();
    let later = out.json();
    assert_eq!(later["paid_signups"], 0);
    assert_eq!(later["invoices_attempted"], 0);
    assert_eq!(later["payment_success"], Value::Null);
    assert_eq!(later["mrr_at_since"]["minor"], 6_800);
    assert_eq!(later["mrr_change_minor"], 0);
    assert_eq!(later["active_machines"], 2);

    // Bad input is a clear refusal.
    let out = admin_with_env(
        dir.path(),
        &["stats", "--since", "last tuesday"],
        &env_refs(&vars),
    );
    assert!(!out.success());
    assert!(out.stderr.contains("--since"), "{}", out.stderr);
}
