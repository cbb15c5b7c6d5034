//! Seat integrity against a hostile key holder, with the real issuer and
//! CLI binaries: seat transfers are capped per 30 days, a downgrade takes
//! seats from the latest machines, an air-gapped seat is the operator's to
//! free, and freeing another machine's seat needs proof of standing. Each
//! refusal is checked for its code and for leaving everything as it was.

use std::collections::BTreeSet;
use std::path::Path;

use coditect_tests::billing::BillingEnv;
use coditect_tests::cli::Cli;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::fake_stripe;
use coditect_tests::issuer::{
    CommandOutput, HttpResponse, IssuerServer, admin, create_license, hardware_id, show_license,
    unix_now,
};
use serde_json::{Value, json};

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";
const DEACTIVATE: &str = "/api/v1/licenses/deactivate";
const WINDOW: i64 = 30 * 86_400;

fn data_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("temp dir")
}

fn activate(server: &IssuerServer, key: &str, machine: &str) -> HttpResponse {
    server.post_json(
        ACTIVATE,
        &json!({"license_key": key, "hardware_id": hardware_id(machine), "machine_name": machine}),
    )
}

fn validate(server: &IssuerServer, key: &str, machine: &str) -> HttpResponse {
    server.post_json(
        VALIDATE,
        &json!({"license_key": key, "hardware_id": hardware_id(machine)}),
    )
}

fn deactivate(server: &IssuerServer, key: &str, machine: &str) -> HttpResponse {
    server.post_json(
        DEACTIVATE,
        &json!({"license_key": key, "hardware_id": hardware_id(machine)}),
    )
}

/// The machines (hardware ids) active on a license, as the operator sees it.
fn active_machines(data_dir: &Path, license_id: &str) -> BTreeSet<String> {
    let shown = show_license(data_dir, license_id);
    shown["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| a["hardware_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Now, as the API's times count (Unix seconds).
fn now() -> i64 {
    i64::try_from(unix_now()).expect("a Unix time")
}

fn seconds(rfc3339: &Value) -> i64 {
    let text = rfc3339.as_str().expect("an RFC 3339 time");
    time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .expect("an RFC 3339 time")
        .unix_timestamp()
}

#[track_caller]
fn json_refusal(out: &CommandOutput, code: &str) -> Value {
    assert_eq!(out.code, Some(1), "{out}");
    let doc = out.json();
    assert_eq!(doc["error"]["code"], code, "{out}");
    doc["error"].clone()
}

coditect_tests::on_both_backends!(cycling_a_one_seat_license_stops_at_the_transfer_cap);

/// Item 1: activate/deactivate cycling. A one-seat license allows three
/// seat transfers per 30 days; the fourth freeing is refused with the date
/// the next one is possible, the machine keeps its seat, and the CLI shows
/// the transfers left and refuses the same way.
fn cycling_a_one_seat_license_stops_at_the_transfer_cap(backend: Backend) {
    let dir = data_dir();
    let Some(_db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let server = IssuerServer::start(dir.path());
    let lic = create_license(
        dir.path(),
        &["--email", "cycle@example.com", "--tier", "pilot-starter"],
    );
    let mut first_freed = None;
    for n in 1..=3 {
        let machine = format!("cycle-{n}");
        let granted = activate(&server, &lic.key, &machine).expect_status(201);
        assert_eq!(granted["license"]["transfers"]["remaining"], 4 - n);
        let before = now();
        let freed = deactivate(&server, &lic.key, &machine).expect_status(200);
        first_freed.get_or_insert(before);
        let t = &freed["license"]["transfers"];
        assert_eq!(
            (&t["allowed"], &t["used"], &t["remaining"]),
            (&json!(3), &json!(n), &json!(3 - n)),
            "{freed}"
        );
    }

    // The fourth machine (the real CLI) takes the free seat and sees no
    // transfers left; freeing its seat is refused.
    let cli = Cli::new().machine("cycle-4");
    cli.run(&["activate", &lic.key, "--server", server.base_url()])
        .assert_success();
    let status = cli.run(&["license", "status"]);
    status.assert_success();
    assert!(
        status.stdout.contains("Transfers: 0 of 3 left (next on "),
        "{status}"
    );
    let refused = json_refusal(
        &cli.run(&["--json", "deactivate"]),
        "transfer_limit_reached",
    );
    assert!(
        refused["message"]
            .as_str()
            .unwrap_or_default()
            .contains("3 seat transfers"),
        "{refused}"
    );
    assert!(
        cli.license_file().exists(),
        "the license stays on the machine"
    );

    let p = deactivate(&server, &lic.key, "cycle-4").expect_problem(403, "transfer_limit_reached");
    let first = first_freed.expect("three freed");
    let available = seconds(&p["available_at"]);
    assert!(
        (first + WINDOW..=now() + WINDOW).contains(&available),
        "the next transfer when the first leaves the window: {p}"
    );
    // Nothing changed: the machine holds its seat and renews.
    assert_eq!(
        active_machines(dir.path(), &lic.id),
        BTreeSet::from([hardware_id("cycle-4")])
    );
    validate(&server, &lic.key, "cycle-4").expect_status(200);
    cli.run(&["license", "renew"]).assert_success();
    // Every refused attempt is audited with its code.
    let audit = admin(dir.path(), &["audit", "--event", "deactivate", "--json"]);
    audit.assert_success();
    let refusals = audit.stdout.matches("transfer_limit_reached").count();
    assert_eq!(refusals, 2, "{}", audit.stdout);
    // The operator can still free it, and that is not a transfer.
    let shown = show_license(dir.path(), &lic.id);
    let activation = shown["activations"]
        .as_array()
        .and_then(|a| a.iter().find(|a| a["status"] == "active"))
        .and_then(|a| a["id"].as_str())
        .expect("the active machine")
        .to_owned();
    admin(
        dir.path(),
        &["license", "free", &lic.id, "--activation", &activation],
    )
    .assert_success();
    assert!(active_machines(dir.path(), &lic.id).is_empty());
}

/// Item 2: a downgrade is enforced at renewal. Three machines on a
/// Professional license; Stripe moves the subscription to Starter (one
/// seat): the webhook records the two machines that lose their seat, the
/// first activated keeps renewing, the others are refused with
/// `seat_over_limit` (nothing is freed for them) until the holder frees
/// seats, which is not counted as a transfer.
#[test]
fn a_downgrade_refuses_the_latest_machines_until_seats_are_freed() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let purchase = env.buy("down@example.com", "pilot-professional", "month");
    let key = env.logged_key();
    let server = &env.issuer;
    for n in 1..=3 {
        activate(server, &key, &format!("down-{n}")).expect_status(201);
        // Activation order is by the second: keep them apart.
        std::thread::sleep(std::time::Duration::from_millis(1100));
    }
    let mut sub = env
        .stripe
        .subscription(&purchase.subscription_id)
        .expect("the subscription");
    sub["items"]["data"][0]["price"]["id"] = json!(fake_stripe::PRICE_STARTER_MONTHLY);
    if sub["items"]["data"][0]["plan"].is_object() {
        sub["items"]["data"][0]["plan"]["id"] = json!(fake_stripe::PRICE_STARTER_MONTHLY);
    }
    let event = env
        .stripe
        .create_event("customer.subscription.updated", sub);
    let delivered = env.stripe.deliver(&event.id);
    assert!(
        delivered.succeeded(),
        "{delivered:#?}\n{}",
        env.issuer.log()
    );

    let licenses = env
        .client()
        .with_bearer(&purchase.jwt)
        .get("/api/v1/licenses")
        .expect_status(200);
    let entry = &licenses["licenses"][0];
    assert_eq!(entry["license"]["entitlements"]["max_devices"], 1);
    let id_of = |machine: &str| -> String {
        entry["activations"]
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|a| a["hardware_id"] == hardware_id(machine).as_str())
            })
            .and_then(|a| a["id"].as_str())
            .expect("the machine's activation")
            .to_owned()
    };
    // The webhook recorded which machines lost their seat.
    let audit = admin(dir.path(), &["audit", "--event", "seat_lost", "--json"]);
    audit.assert_success();
    let lost: BTreeSet<String> = audit
        .json()
        .as_array()
        .expect("a list of events")
        .iter()
        .filter_map(|e| e["subject_id"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(
        lost,
        BTreeSet::from([id_of("down-2"), id_of("down-3")]),
        "{}",
        audit.stdout
    );

    validate(server, &key, "down-1").expect_status(200);
    for machine in ["down-2", "down-3"] {
        let p = validate(server, &key, machine).expect_problem(403, "seat_over_limit");
        assert!(
            p["detail"]
                .as_str()
                .unwrap_or_default()
                .contains("allows 1"),
            "{p}"
        );
        activate(server, &key, machine).expect_problem(403, "seat_over_limit");
    }
    // Refused renewals free nothing.
    let license_id = entry["license"]["id"].as_str().expect("id").to_owned();
    assert_eq!(active_machines(dir.path(), &license_id).len(), 3);

    // The holder frees the first machine: still two for one seat.
    let freed = deactivate(server, &key, "down-1").expect_status(200);
    assert_eq!(freed["license"]["transfers"]["used"], 0, "not a transfer");
    validate(server, &key, "down-3").expect_problem(403, "seat_over_limit");
    deactivate(server, &key, "down-3").expect_status(200);
    // Within the seats again: the remaining machine renews.
    let renewed = validate(server, &key, "down-2").expect_status(200);
    assert_eq!(renewed["license"]["devices_used"], 1);
    assert_eq!(renewed["license"]["transfers"]["used"], 0);
}

/// Item 3: an air-gapped activation holds its seat until its token
/// expires. Neither the key holder for that machine nor another active
/// machine can free it (`offline_seat`, with `available_at`); the operator
/// can, and that is not counted as a transfer.
#[test]
fn an_offline_seat_is_freed_only_by_the_operator() {
    let dir = data_dir();
    let files = data_dir();
    let server = IssuerServer::start(dir.path());
    let lic = create_license(
        dir.path(),
        &[
            "--email",
            "vault@example.com",
            "--tier",
            "pilot-professional",
            "--expires",
            "90days",
        ],
    );
    let request = files.path().join("request.json");
    std::fs::write(
        &request,
        json!({
            "format": "coditect-activation-request-v1",
            "license_key": lic.key,
            "hardware_id": hardware_id("vault"),
            "machine_name": "vault",
            "created_at": "2026-01-01T00:00:00Z",
        })
        .to_string(),
    )
    .expect("request file");
    let out = files.path().join("token.json");
    admin(
        dir.path(),
        &[
            "license",
            "issue-offline",
            "--request",
            request.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--valid-for",
            "30days",
        ],
    )
    .assert_success();
    let online = activate(&server, &lic.key, "online").expect_status(201);

    let shown = show_license(dir.path(), &lic.id);
    let vault = shown["activations"]
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|a| a["hardware_id"] == hardware_id("vault").as_str())
        })
        .expect("the offline activation")
        .clone();
    let until = seconds(&vault["offline_until"]);
    assert!(
        (now() + WINDOW - 120..=now() + WINDOW).contains(&until),
        "marked with its token's expiry: {vault}"
    );
    let vault_id = vault["id"].as_str().expect("id").to_owned();

    // The key holder, as that machine or from the other active machine.
    let p = deactivate(&server, &lic.key, "vault").expect_problem(403, "offline_seat");
    assert_eq!(seconds(&p["available_at"]), until);
    server
        .post_json(
            DEACTIVATE,
            &json!({"license_key": lic.key, "hardware_id": hardware_id("online"),
                    "activation_id": vault_id}),
        )
        .expect_problem(403, "offline_seat");
    assert_eq!(
        active_machines(dir.path(), &lic.id),
        BTreeSet::from([hardware_id("vault"), hardware_id("online")]),
        "nothing was freed"
    );
    assert_eq!(online["license"]["transfers"]["used"], 0);

    // The operator frees it; the holder's transfers are untouched.
    let freed = admin(
        dir.path(),
        &["license", "free", &lic.key, "--activation", &vault_id],
    );
    freed.assert_success();
    assert!(
        freed.stdout.contains("cannot be called back"),
        "{}",
        freed.stdout
    );
    assert_eq!(
        active_machines(dir.path(), &lic.id),
        BTreeSet::from([hardware_id("online")])
    );
    let renewed = validate(&server, &lic.key, "online").expect_status(200);
    assert_eq!(renewed["license"]["transfers"]["used"], 0);
    // An unknown activation is refused by the admin command too.
    let unknown = admin(
        dir.path(),
        &["license", "free", &lic.id, "--activation", "nope"],
    );
    assert!(!unknown.success(), "{}", unknown.all_output());
    assert!(
        unknown.all_output().contains("No activation with this id")
            || unknown.all_output().contains("no activation with this id"),
        "{}",
        unknown.all_output()
    );
}

/// Item 4: freeing another machine's seat needs a machine that holds a
/// seat on the license, or a session of the license's organization; the
/// key and a made-up hardware id are not enough, nor a session of another
/// organization, nor an invalid session.
#[test]
fn freeing_another_machines_seat_needs_a_seat_or_the_organizations_session() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let purchase = env.buy("owner@example.com", "pilot-professional", "month");
    let key = env.logged_key();
    let server = &env.issuer;
    let a = activate(server, &key, "team-a").expect_status(201);
    let b = activate(server, &key, "team-b").expect_status(201);
    let a_id = a["activation"]["id"].as_str().expect("id").to_owned();
    let b_id = b["activation"]["id"].as_str().expect("id").to_owned();
    let license_id = a["license"]["id"].as_str().expect("id").to_owned();
    let free_a = |asker: &str| json!({"license_key": key, "hardware_id": hardware_id(asker), "activation_id": a_id});

    // A stranger with the key: by activation id, with no session, another
    // organization's session, or an invalid one.
    server
        .post_json(DEACTIVATE, &free_a("stranger"))
        .expect_problem(403, "not_allowed_to_free");
    let other = env.account("other@example.com", "Other Org");
    env.client()
        .with_bearer(&other)
        .post_json(DEACTIVATE, &free_a("stranger"))
        .expect_problem(403, "not_allowed_to_free");
    env.client()
        .with_bearer("not-a-session")
        .post_json(DEACTIVATE, &free_a("stranger"))
        .expect_problem(401, "unauthorized");
    assert_eq!(
        active_machines(dir.path(), &license_id),
        BTreeSet::from([hardware_id("team-a"), hardware_id("team-b")]),
        "nothing was freed"
    );

    // The organization's session may; so may an active machine (the CLI's
    // `deactivate --machine` from team-a frees team-b).
    env.client()
        .with_bearer(&purchase.jwt)
        .post_json(DEACTIVATE, &free_a("stranger"))
        .expect_status(200);
    let cli = Cli::new().machine("team-c");
    cli.run(&["activate", &key, "--server", server.base_url()])
        .assert_success();
    let out = cli.run(&["--json", "deactivate", "--machine", &b_id]);
    out.assert_success();
    assert_eq!(out.json()["deactivated"], b_id.as_str(), "{out}");
    assert_eq!(
        active_machines(dir.path(), &license_id),
        BTreeSet::from([hardware_id("team-c")])
    );
}
