//! End-to-end tests of the `coditect` CLI (issue 5), as a user runs it: the
//! test build of the binary (`dev-keys`, `test-hooks`) in its own state
//! directory, against the real `coditect-issuer` binary on a free port with
//! a temporary data directory. `CODITECT_TEST_NOW` moves the CLI's clock
//! and `CODITECT_TEST_MACHINE_ID` makes it another machine; the issuer keeps
//! the real clock.
//!
//! Servers are killed when their guard drops, also when a test fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coditect_tests::cli::{
    Cli, ConnectionTrap, dev_token, has_ansi, license_state, stored_claims, unreachable_server,
    wait_until_after,
};
use coditect_tests::issuer::{
    CommandOutput, IssuerServer, admin, create_license, hardware_id, show_license, unix_now,
};
use coditect_tests::{DAY, FIXED_NOW, HOUR, sample_claims};
use serde_json::{Value, json};
use tempfile::TempDir;
use verifier::{HardwareId, ProjectLimit};

fn data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("coditect-cli-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

/// The `{"error": {…}}` document of a failed `--json` command, after
/// checking its shape and that it went to stdout only.
#[track_caller]
fn json_error(out: &CommandOutput) -> Value {
    assert_eq!(out.code, Some(1), "expected exit code 1:\n{out}");
    let doc = out.json();
    let err = &doc["error"];
    assert_eq!(
        doc.as_object().map(|o| o.len()),
        Some(1),
        "only `error` in {doc}"
    );
    for field in ["code", "message"] {
        assert!(
            err[field].as_str().is_some_and(|s| !s.is_empty()),
            "the error has a `{field}`: {doc}"
        );
    }
    assert!(
        err["hint"].is_null() || err["hint"].is_string(),
        "hint is text or null: {doc}"
    );
    assert!(
        out.stderr.is_empty(),
        "under --json nothing else is printed:\n{out}"
    );
    err.clone()
}

/// Asserts a refusal with `code` under `--json`; returns the error.
#[track_caller]
fn refused(out: &CommandOutput, code: &str) -> Value {
    let err = json_error(out);
    assert_eq!(err["code"], code, "{out}");
    err
}

/// Asserts a human-mode refusal: exit 1, nothing on stdout, `error: …` on
/// stderr, no panic.
#[track_caller]
fn refused_human(out: &CommandOutput) -> String {
    assert_eq!(out.code, Some(1), "expected exit code 1:\n{out}");
    assert!(out.stdout.is_empty(), "errors go to stderr:\n{out}");
    assert!(out.stderr.starts_with("error: "), "{out}");
    assert!(!out.stderr.contains("panicked"), "{out}");
    out.stderr.clone()
}

fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

fn active_hardware_ids(license: &Value) -> BTreeSet<String> {
    license["activations"]
        .as_array()
        .unwrap_or_else(|| panic!("no activations in {license}"))
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| text(&a["hardware_id"]).to_owned())
        .collect()
}

const ACTIVATED_LINES: [&str; 3] = [
    "✓ License validated",
    "✓ Device registered (laptop-a - jane@acme.example)",
    "✓ CODITECT activated successfully!",
];

/// The story of issue 5, in order, against the real issuer: activate (key
/// as argument and from stdin) → offline → renew on a restarted issuer →
/// revoke → refused and remembered → a token lapses offline → short tokens
/// renew by themselves online and lapse offline → a second machine over the
/// device limit → deactivate frees the seat.
#[test]
fn the_whole_story_against_the_real_issuer() {
    let data = data_dir();
    let issuer = IssuerServer::start(data.path());
    let lic = create_license(
        data.path(),
        &[
            "--email",
            "jane@acme.example",
            "--tier",
            "pilot-starter",
            "--max-devices",
            "1",
        ],
    );
    let mut a = Cli::new().machine("story-machine-a");

    // Activate with the key as an argument: the seed's three lines.
    let out = a.run(&[
        "activate",
        &lic.key,
        "--server",
        issuer.base_url(),
        "--name",
        "laptop-a",
    ]);
    out.assert_success();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ACTIVATED_LINES,
        "{out}"
    );
    assert!(out.stderr.is_empty(), "{out}");
    let activated = a.stored_claims();
    assert_eq!(activated.license_id, lic.id);
    assert_eq!(activated.tier, "pilot-starter");
    assert_eq!(
        activated.hardware_id,
        HardwareId::from_machine_id("story-machine-a")
    );
    assert_eq!(activated.entitlements.max_devices, 1);
    assert_eq!(
        activated.entitlements.max_projects,
        ProjectLimit::Limited(3)
    );

    // Again with the key on stdin (`echo KEY | coditect activate`), typed
    // in lower case, and the server from CODITECT_API_URL: no prompt when
    // stdin is not a terminal, and the same machine takes no second seat.
    a.set_env("CODITECT_API_URL", issuer.base_url());
    let out = a.run_with_stdin(
        &["activate", "--name", "laptop-a"],
        &format!("  {}\n", lic.key.to_ascii_lowercase()),
    );
    a.remove_env("CODITECT_API_URL");
    out.assert_success();
    assert_eq!(
        out.stdout.lines().collect::<Vec<_>>(),
        ACTIVATED_LINES,
        "{out}"
    );
    let shown = show_license(data.path(), &lic.id);
    assert_eq!(shown["devices_used"], 1, "{shown}");
    assert_eq!(
        active_hardware_ids(&shown),
        BTreeSet::from([hardware_id("story-machine-a")])
    );
    let before_renewal = a.stored_claims();

    // The issuer goes away: licensed commands work offline.
    drop(issuer);
    let out = a.run(&["license", "status"]);
    out.assert_success();
    for expected in [
        "Plan:    Pilot Starter",
        "User:    jane@acme.example",
        "Devices: 1/1 activated",
        "Status:  ✓ Active",
    ] {
        assert!(out.stdout.contains(expected), "no `{expected}`:\n{out}");
    }
    assert!(out.stderr.is_empty(), "{out}");
    let project = a.cwd().join("first-project");
    let out = a.run(&["init", path_str(&project)]);
    out.assert_success();
    assert!(out.stdout.contains("✓ CODITECT initialized"), "{out}");
    assert!(project.join(".coditect/project.json").is_file());
    let out = a.run(&["status", path_str(&project)]);
    out.assert_success();
    assert!(out.stdout.contains("(CODITECT project)"), "{out}");

    // A new issuer on the same data, on another port: renewal moves iat.
    wait_until_after(before_renewal.issued_at);
    let issuer = IssuerServer::start(data.path());
    let out = a.run(&["license", "renew", "--server", issuer.base_url()]);
    out.assert_success();
    assert!(out.stdout.starts_with("✓ License renewed"), "{out}");
    let renewed = a.stored_claims();
    assert!(
        renewed.issued_at > before_renewal.issued_at,
        "iat {} did not move past {}",
        renewed.issued_at,
        before_renewal.issued_at
    );
    assert!(renewed.expires_at > before_renewal.expires_at);
    assert_ne!(renewed.token_id, before_renewal.token_id);
    assert_eq!(a.stored_state()["server"], issuer.base_url());

    // Revoked with the admin command: renewal is refused, and says why.
    admin(
        data.path(),
        &["license", "revoke", &lic.id, "--reason", "chargeback"],
    )
    .assert_success();
    let out = a.run(&["license", "renew"]);
    let stderr = refused_human(&out);
    assert!(stderr.to_lowercase().contains("revoked"), "{out}");
    assert!(stderr.contains("hint: "), "{out}");
    let err = refused(&a.run(&["--json", "license", "renew"]), "license_revoked");
    assert!(text(&err["message"]).to_lowercase().contains("revoked"));
    // The refusal is remembered: status refuses without going online.
    let trap = ConnectionTrap::new();
    let out = a.run(&["license", "status", "--server", &trap.url()]);
    assert!(
        refused_human(&out).to_lowercase().contains("revoked"),
        "{out}"
    );
    refused(
        &a.run(&["--json", "license", "status", "--server", &trap.url()]),
        "license_revoked",
    );
    refused(
        &a.run(&["--json", "init", "second-project", "--server", &trap.url()]),
        "license_revoked",
    );
    assert_eq!(
        trap.connections(),
        0,
        "a remembered refusal needs no network"
    );

    // A new license replaces the refused one (`--json activate`).
    let lic2 = create_license(
        data.path(),
        &[
            "--email",
            "jane@acme.example",
            "--tier",
            "pilot-starter",
            "--max-devices",
            "1",
        ],
    );
    let out = a.run(&[
        "--json",
        "activate",
        &lic2.key,
        "--server",
        issuer.base_url(),
    ]);
    out.assert_success();
    let doc = out.json();
    assert_eq!(doc["activated"], true, "{doc}");
    assert_eq!(doc["license_id"], lic2.id, "{doc}");
    assert_eq!(doc["tier"], "pilot-starter", "{doc}");
    assert_eq!(doc["devices_used"], 1, "{doc}");
    assert_eq!(doc["max_devices"], 1, "{doc}");
    assert!(out.stderr.is_empty(), "{out}");
    a.run(&["license", "status"]).assert_success();

    // The issuer goes away and the token lapses (72 h + 1 h later): the
    // CLI says when it was last verified and to renew.
    drop(issuer);
    let lapsing = a.stored_claims();
    assert_eq!(lapsing.expires_at - lapsing.issued_at, 72 * HOUR);
    a.set_now(Some(lapsing.expires_at + HOUR));
    let out = a.run(&["license", "status"]);
    let stderr = refused_human(&out);
    assert!(stderr.contains("last verified"), "{out}");
    assert!(stderr.contains("(3 days ago)"), "{out}");
    assert!(stderr.contains("coditect license renew"), "{out}");
    let err = refused(&a.run(&["--json", "license", "status"]), "token_expired");
    assert!(text(&err["message"]).contains("last verified"), "{err}");
    assert!(
        text(&err["hint"]).contains("`coditect license renew`"),
        "{err}"
    );
    refused(
        &a.run(&["--json", "init", "third-project"]),
        "token_expired",
    );

    // With a 10-second token lifetime (renew after 5 s) on the issuer: a
    // lapsed token is renewed by a normal command when the issuer answers…
    a.set_now(None);
    let issuer = IssuerServer::start_with_env(
        data.path(),
        &[("TOKEN_LIFETIME", "10s"), ("TOKEN_RENEW_AFTER", "5s")],
    );
    a.run(&["license", "renew", "--server", issuer.base_url()])
        .assert_success();
    let short = a.stored_claims();
    assert_eq!(short.expires_at - short.issued_at, 10);
    assert_eq!(short.renew_after - short.issued_at, 5);
    // The issuer signs with the real clock: let it pass `iat`, so that the
    // next token outlives this one.
    wait_until_after(short.issued_at);
    a.set_now(Some(short.expires_at));
    let out = a.run(&["--json", "license", "status"]);
    out.assert_success();
    let doc = out.json();
    assert_eq!(doc["token"]["renewed_now"], true, "{doc}");
    assert_eq!(doc["renewal_error"], Value::Null, "{doc}");
    let auto = a.stored_claims();
    assert!(auto.issued_at > short.issued_at);
    assert!(auto.expires_at > short.expires_at);
    // … and refused when it does not.
    drop(issuer);
    a.set_now(Some(auto.expires_at + 1));
    let err = refused(&a.run(&["--json", "license", "status"]), "token_expired");
    assert!(
        text(&err["hint"]).contains("coditect license renew"),
        "{err}"
    );
    a.set_now(None);

    // A second machine over the one-device limit: a clear refusal.
    let issuer = IssuerServer::start(data.path());
    let b = Cli::new().machine("story-machine-b");
    let err = refused(
        &b.run(&[
            "--json",
            "activate",
            &lic2.key,
            "--server",
            issuer.base_url(),
        ]),
        "too_many_activations",
    );
    assert!(
        text(&err["hint"]).contains("`coditect deactivate`"),
        "{err}"
    );
    let out = b.run(&["activate", &lic2.key, "--server", issuer.base_url()]);
    assert!(refused_human(&out).contains("coditect deactivate"), "{out}");
    assert!(
        !b.license_file().exists(),
        "a refused activation stores nothing"
    );

    // The first machine frees its seat and forgets the license…
    let out = a.run(&["deactivate", "--server", issuer.base_url()]);
    out.assert_success();
    assert!(out.stdout.starts_with("✓ "), "{out}");
    assert!(!a.license_file().exists());
    refused(&a.run(&["--json", "license", "status"]), "not_activated");
    // … and the second machine can activate.
    let out = b.run(&["activate", &lic2.key, "--server", issuer.base_url()]);
    out.assert_success();
    assert_eq!(out.stdout.lines().count(), 3, "{out}");
    assert_eq!(
        active_hardware_ids(&show_license(data.path(), &lic2.id)),
        BTreeSet::from([hardware_id("story-machine-b")])
    );
    let out = b.run(&["license", "status"]);
    out.assert_success();
    assert!(out.stdout.contains("Devices: 1/1 activated"), "{out}");
}

/// From renew-after a command tries to renew: offline it carries on with a
/// warning, online it renews. While the token is fresh nothing touches the
/// network.
#[test]
fn renewal_window_and_no_network_while_fresh() {
    let data = data_dir();
    let issuer = IssuerServer::start(data.path());
    let lic = create_license(
        data.path(),
        &["--email", "sam@example.com", "--tier", "pilot-professional"],
    );
    let mut c = Cli::new().machine("renewal-machine");
    c.run(&["activate", &lic.key, "--server", issuer.base_url()])
        .assert_success();
    let first = c.stored_claims();

    // Fresh token: no connection at all, even to a server that would
    // answer; quick, and silent on stderr.
    let trap = ConnectionTrap::new();
    let trap_url = trap.url();
    let project = c.cwd().join("fresh-project");
    for args in [
        vec!["license", "status"],
        vec!["--json", "license", "status"],
        vec!["status"],
        vec!["init", path_str(&project)],
    ] {
        let mut args = args;
        args.extend(["--server", trap_url.as_str()]);
        let out = c.run(&args);
        out.assert_success();
        assert!(out.stderr.is_empty(), "{args:?}: {out}");
        assert!(
            out.elapsed < Duration::from_millis(2500),
            "{args:?} took {:?}",
            out.elapsed
        );
    }
    assert_eq!(
        trap.connections(),
        0,
        "a fresh token must not open a connection"
    );
    // Nothing listening at all makes no difference either.
    let out = c.run(&["license", "status", "--server", &unreachable_server()]);
    out.assert_success();
    assert!(out.stderr.is_empty(), "{out}");

    // Inside [renew_after, exp) with the issuer stopped: still licensed,
    // with a warning that renewal failed.
    drop(issuer);
    let due = first.renew_after + HOUR;
    assert!(due < first.expires_at);
    c.set_now(Some(due));
    let out = c.run(&["license", "status"]);
    out.assert_success();
    assert!(out.stdout.contains("Active (renewal pending)"), "{out}");
    assert!(out.stdout.contains("Renews:  now due"), "{out}");
    assert!(out.stderr.starts_with("warning: "), "{out}");
    assert!(
        out.stderr
            .contains("due for renewal but the server could not be reached"),
        "{out}"
    );
    let out = c.run(&["--json", "license", "status"]);
    out.assert_success();
    let doc = out.json();
    assert_eq!(doc["status"], "renewal_due", "{doc}");
    assert_eq!(doc["token"]["renewed_now"], false, "{doc}");
    assert!(
        text(&doc["renewal_error"]).contains("cannot reach the license server"),
        "{doc}"
    );
    assert!(out.stderr.is_empty(), "JSON carries the warning:\n{out}");
    // The trap sees the attempt now (and proves it would have seen one
    // above); its closed connection is a failed renewal, not an error.
    let out = c.run(&["license", "status", "--server", &trap.url()]);
    out.assert_success();
    assert!(out.stderr.contains("warning: "), "{out}");
    assert!(trap.connections() >= 1, "a due renewal goes online");
    // The token did not change while offline.
    assert_eq!(c.stored_claims(), first);

    // Inside the window with the issuer running: renewed by `status`.
    let issuer = IssuerServer::start(data.path());
    let out = c.run(&["--json", "license", "status", "--server", issuer.base_url()]);
    out.assert_success();
    let doc = out.json();
    assert_eq!(doc["token"]["renewed_now"], true, "{doc}");
    assert_eq!(doc["renewal_error"], Value::Null, "{doc}");
    let renewed = c.stored_claims();
    assert_ne!(renewed.token_id, first.token_id);
    assert!(renewed.expires_at >= first.expires_at);
}

/// A clock more than a small tolerance behind the high-water
/// mark is refused with a clear message; going online repairs it.
#[test]
fn a_clock_set_back_is_refused_and_going_online_repairs_it() {
    let data = data_dir();
    let issuer = IssuerServer::start(data.path());
    let lic = create_license(
        data.path(),
        &["--email", "tick@example.com", "--tier", "pilot-starter"],
    );
    let mut e = Cli::new().machine("clock-machine");
    e.run(&["activate", &lic.key, "--server", issuer.base_url()])
        .assert_success();
    let t = unix_now().max(e.stored_claims().issued_at);

    e.set_now(Some(t));
    e.run(&["license", "status"]).assert_success();

    // Two hours back: refused, saying by how much and what to do.
    e.set_now(Some(t - 2 * HOUR));
    let out = e.run(&["license", "status"]);
    let stderr = refused_human(&out);
    assert!(stderr.contains("2 hours behind"), "{out}");
    let err = refused(
        &e.run(&["--json", "license", "status"]),
        "clock_rolled_back",
    );
    assert!(text(&err["message"]).contains("2 hours behind"), "{err}");
    assert!(text(&err["hint"]).contains("clock"), "{err}");
    assert!(
        text(&err["hint"]).contains("`coditect license renew`"),
        "{err}"
    );
    refused(&e.run(&["--json", "init", "p"]), "clock_rolled_back");
    // A few minutes back is within the tolerance (NTP corrections).
    e.set_now(Some(t - 120));
    e.run(&["license", "status"]).assert_success();

    // Renewing while the clock is still wrong renews (the issuer keeps the
    // time) but says the clock is wrong, and does not make the wrong clock
    // acceptable.
    e.set_now(Some(t - 2 * HOUR));
    let err = refused(&e.run(&["--json", "license", "renew"]), "clock_rolled_back");
    assert!(
        text(&err["hint"]).contains("the license was renewed, but set the system clock"),
        "{err}"
    );
    refused(
        &e.run(&["--json", "license", "status"]),
        "clock_rolled_back",
    );

    // A clock that once ran an hour ahead left the mark in the future; now
    // right, it is refused until the user goes online once.
    e.set_now(Some(t + HOUR));
    e.run(&["license", "status"]).assert_success();
    e.set_now(Some(t));
    let err = refused(
        &e.run(&["--json", "license", "status"]),
        "clock_rolled_back",
    );
    assert!(text(&err["message"]).contains("minutes behind"), "{err}");
    let out = e.run(&["license", "renew"]);
    out.assert_success();
    let out = e.run(&["license", "status"]);
    out.assert_success();
    assert!(out.stderr.is_empty(), "{out}");
    e.run(&["init", "after-repair"]).assert_success();
}

/// Offline activation: request file → `coditect-issuer license
/// issue-offline` (no server) → `--token-file` → status. Token files for
/// another machine, or broken ones, are refused naming the file.
#[test]
fn offline_activation_round_trip_and_refused_token_files() {
    let data = data_dir();
    let lic = create_license(
        data.path(),
        &[
            "--email",
            "air@gapped.example",
            "--tier",
            "pilot-starter",
            "--max-devices",
            "2",
        ],
    );
    let trap = ConnectionTrap::new();
    let g = Cli::new().machine("air-gapped-machine");
    let request = g.cwd().join("request.json");
    let out = g.run(&[
        "--json",
        "activate",
        &lic.key,
        "--offline-request",
        path_str(&request),
        "--server",
        &trap.url(),
    ]);
    out.assert_success();
    assert_eq!(out.json()["hardware_id"], hardware_id("air-gapped-machine"));
    let req: Value = serde_json::from_str(&std::fs::read_to_string(&request).unwrap()).unwrap();
    assert_eq!(req["format"], "coditect-activation-request-v1", "{req}");
    assert_eq!(req["license_key"], lic.key, "{req}");
    assert_eq!(
        req["hardware_id"],
        hardware_id("air-gapped-machine"),
        "{req}"
    );
    assert!(!g.license_file().exists(), "a request is not an activation");
    let out = g.run(&[
        "activate",
        &lic.key,
        "--offline-request",
        path_str(&request),
    ]);
    out.assert_success();
    assert!(
        out.stdout.contains("coditect-issuer license issue-offline"),
        "the human form says what to do next:\n{out}"
    );

    let token_file = g.cwd().join("token.json");
    admin(
        data.path(),
        &[
            "license",
            "issue-offline",
            "--request",
            path_str(&request),
            "--out",
            path_str(&token_file),
        ],
    )
    .assert_success();
    let out = g.run(&[
        "activate",
        "--token-file",
        path_str(&token_file),
        "--server",
        &trap.url(),
    ]);
    out.assert_success();
    assert!(out.stdout.contains("activated offline"), "{out}");
    let out = g.run(&["--json", "license", "status", "--server", &trap.url()]);
    out.assert_success();
    let doc = out.json();
    assert_eq!(doc["license_id"], lic.id, "{doc}");
    assert_eq!(doc["user"], "air@gapped.example", "{doc}");
    assert_eq!(doc["status"], "active", "{doc}");
    g.run(&["init", "offline-project", "--server", &trap.url()])
        .assert_success();
    assert_eq!(trap.connections(), 0, "offline activation needs no network");
    assert_eq!(
        active_hardware_ids(&show_license(data.path(), &lic.id)),
        BTreeSet::from([hardware_id("air-gapped-machine")])
    );
    let good = g.stored_claims();

    // The same file on another machine.
    let h = Cli::new().machine("someone-elses-machine");
    let out = h.run(&["activate", "--token-file", path_str(&token_file)]);
    let stderr = refused_human(&out);
    assert!(stderr.contains(path_str(&token_file)), "{out}");
    let err = refused(
        &h.run(&["--json", "activate", "--token-file", path_str(&token_file)]),
        "bad_token_file",
    );
    assert!(
        text(&err["message"]).contains(path_str(&token_file)),
        "{err}"
    );
    assert!(text(&err["message"]).contains("machine"), "{err}");
    assert!(!h.license_file().exists());

    // Broken files: refused naming the file; the license in place stays.
    let real: Value = serde_json::from_str(&std::fs::read_to_string(&token_file).unwrap()).unwrap();
    let real_token = text(&real["token"]).to_owned();
    let mut tampered = URL_SAFE_NO_PAD.decode(&real_token).unwrap();
    *tampered.last_mut().unwrap() ^= 1;
    let with_token = |token: &str| {
        let mut doc = real.clone();
        doc["token"] = json!(token);
        doc.to_string()
    };
    let real_text = std::fs::read_to_string(&token_file).unwrap();
    let cases: Vec<(&str, String)> = vec![
        ("garbage.json", "\u{0}\u{ff} not json".to_owned()),
        ("empty.json", String::new()),
        (
            "truncated.json",
            real_text[..real_text.len() / 2].to_owned(),
        ),
        (
            "other-format.json",
            json!({"format": "something-else", "token": real_token}).to_string(),
        ),
        (
            "no-token.json",
            json!({"format": "coditect-license-token-v1"}).to_string(),
        ),
        ("not-base64.json", with_token("%%% not base64 %%%")),
        ("not-a-token.json", with_token("aGVsbG8")),
        (
            "tampered.json",
            with_token(&URL_SAFE_NO_PAD.encode(&tampered)),
        ),
        (
            "request-instead.json",
            std::fs::read_to_string(&request).unwrap(),
        ),
    ];
    let missing = g.cwd().join("missing.json");
    let mut files = vec![missing];
    for (name, content) in &cases {
        let path = g.cwd().join(name);
        std::fs::write(&path, content).unwrap();
        files.push(path);
    }
    for file in &files {
        let out = g.run(&["--json", "activate", "--token-file", path_str(file)]);
        let err = refused(&out, "bad_token_file");
        assert!(text(&err["message"]).contains(path_str(file)), "{err}");
        assert!(
            text(&err["hint"]).contains("issue-offline"),
            "says where a good file comes from: {err}"
        );
        assert_eq!(
            g.stored_claims(),
            good,
            "{} replaced the license",
            file.display()
        );
    }
    g.run(&["license", "status", "--server", &trap.url()])
        .assert_success();
}

/// The state files are owner-only, and a corrupt or foreign `license.json`
/// is exit 1 with the way out (`coditect activate`), never a panic.
#[test]
fn state_files_are_private_and_corrupt_state_is_a_clear_error() {
    let data = data_dir();
    let issuer = IssuerServer::start(data.path());
    let lic = create_license(
        data.path(),
        &["--email", "files@example.com", "--tier", "pilot-starter"],
    );
    let s = Cli::new().machine("files-machine");
    s.run(&["activate", &lic.key, "--server", issuer.base_url()])
        .assert_success();
    s.run(&["init", "one"]).assert_success();
    s.run(&["license", "renew"]).assert_success();
    #[cfg(unix)]
    {
        assert_eq!(mode(&s.license_file()), 0o600, "license.json");
        assert_eq!(mode(&s.projects_file()), 0o600, "projects.json");
        assert_eq!(mode(s.home()), 0o700, "CODITECT_HOME");
    }
    // Written atomically: no temporary file left behind.
    let names: BTreeSet<String> = std::fs::read_dir(s.home())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        BTreeSet::from(["license.json".to_owned(), "projects.json".to_owned()])
    );

    let real = std::fs::read_to_string(s.license_file()).unwrap();
    let mut other_version: Value = serde_json::from_str(&real).unwrap();
    other_version["format"] = json!("coditect-license-state-v2");
    let mut missing_field: Value = serde_json::from_str(&real).unwrap();
    missing_field.as_object_mut().unwrap().remove("token");
    let mut bad_token: Value = serde_json::from_str(&real).unwrap();
    bad_token["token"] = json!("not a token");
    let mut wrong_types: Value = serde_json::from_str(&real).unwrap();
    wrong_types["high_water"] = json!("yesterday");
    let corrupt: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", b"\x00\xff\xfe garbage".to_vec()),
        ("empty", Vec::new()),
        ("truncated", real.as_bytes()[..real.len() / 2].to_vec()),
        ("array", b"[]".to_vec()),
        ("null", b"null".to_vec()),
        (
            "another program",
            br#"{"format":"other","token":"x"}"#.to_vec(),
        ),
        (
            "the projects file",
            br#"{"format":"coditect-projects-v1","projects":[]}"#.to_vec(),
        ),
        ("another version", other_version.to_string().into_bytes()),
        ("no token", missing_field.to_string().into_bytes()),
        ("wrong types", wrong_types.to_string().into_bytes()),
        ("a broken token", bad_token.to_string().into_bytes()),
    ];
    for (what, bytes) in &corrupt {
        std::fs::write(s.license_file(), bytes).unwrap();
        for args in [
            &["license", "status"][..],
            &["license", "renew"],
            &["status"],
            &["init", "two"],
        ] {
            let out = s.run(args);
            assert_eq!(
                out.code,
                Some(1),
                "{what}, {args:?}: exit 1, not a panic (101):\n{out}"
            );
            let stderr = refused_human(&out);
            assert!(
                stderr.contains("hint: ") && stderr.contains("`coditect activate`"),
                "{what}, {args:?}: the way out is named:\n{out}"
            );
            let mut json_args = vec!["--json"];
            json_args.extend_from_slice(args);
            let err = json_error(&s.run(&json_args));
            assert!(
                ["state_corrupt", "license_invalid"].contains(&text(&err["code"])),
                "{what}: {err}"
            );
            assert!(
                text(&err["hint"]).contains("coditect activate"),
                "{what}: {err}"
            );
        }
    }
    // Activating again replaces the file and everything works.
    s.run(&["activate", &lic.key, "--server", issuer.base_url()])
        .assert_success();
    s.run(&["license", "status"]).assert_success();
    #[cfg(unix)]
    assert_eq!(mode(&s.license_file()), 0o600);

    // A corrupt project list: exit 1 and the way out too.
    std::fs::write(s.projects_file(), "{ nope").unwrap();
    let err = refused(&s.run(&["--json", "init", "three"]), "state_corrupt");
    assert!(text(&err["hint"]).contains("delete the file"), "{err}");
}

/// A user with a fresh development-signed license at `FIXED_NOW` (no
/// issuer needed), whose server is a port where nothing listens.
fn licensed_user(machine: &str) -> Cli {
    let iat = FIXED_NOW - HOUR;
    let claims = sample_claims(iat, machine, ProjectLimit::Limited(3));
    let cli = Cli::new().machine(machine).now(FIXED_NOW);
    cli.write_state(&license_state(
        Some("CODITECT-PILOT-ABCD-EFGH-JKMN"),
        &dev_token(&claims),
        &unreachable_server(),
        iat,
        iat,
    ));
    assert_eq!(stored_claims(&cli.license_file()), claims);
    cli
}

/// Colour only on a terminal and never with NO_COLOR; JSON under --json;
/// nothing under --quiet; completions, man page and --help.
#[test]
fn output_rules() {
    let user = licensed_user("output-machine");
    let nobody = Cli::new();

    // Piped: never an escape sequence, whatever the command.
    let runs = [
        user.run(&["license", "status"]),
        user.run(&["status"]),
        user.run(&["init", "coloured"]),
        user.run(&["--help"]),
        user.run(&["license", "bogus"]),
        nobody.run(&["license", "status"]),
        nobody.run(&["activate", "not-a-key"]),
    ];
    for out in &runs {
        assert!(
            !has_ansi(&out.stdout) && !has_ansi(&out.stderr),
            "escape sequences in piped output:\n{out}"
        );
    }

    // On a terminal: colour, unless NO_COLOR is set.
    let out = user.run_in_terminal(&["license", "status"], &[]);
    out.assert_success();
    assert!(
        out.stdout.contains("\u{1b}[32m✓ Active\u{1b}[0m"),
        "a terminal gets colour:\n{out}"
    );
    let out = nobody.run_in_terminal(&["license", "status"], &[]);
    assert!(has_ansi(&out.stdout), "errors are coloured too:\n{out}");
    for (cli, args) in [
        (&user, &["license", "status"][..]),
        (&user, &["status"]),
        (&user, &["--help"]),
        (&nobody, &["license", "status"]),
        (&nobody, &["activate", "not-a-key"]),
    ] {
        let out = cli.run_in_terminal(args, &[("NO_COLOR", "1")]);
        assert!(
            out.stdout.contains("coditect") || out.stdout.contains("CODITECT"),
            "{out}"
        );
        assert!(!has_ansi(&out.stdout), "NO_COLOR, {args:?}:\n{out}");
    }

    // --json: status and errors are JSON documents on stdout.
    let out = user.run(&["--json", "license", "status"]);
    out.assert_success();
    let doc = out.json();
    for field in [
        "status",
        "plan",
        "tier",
        "user",
        "license_id",
        "license_expires_at",
        "devices",
        "entitlements",
        "token",
        "last_verified_at",
    ] {
        assert!(!doc[field].is_null(), "no `{field}` in {doc}");
    }
    assert_eq!(doc["status"], "active");
    assert_eq!(doc["devices"], json!({"used": 1, "allowed": 3}));
    refused(
        &nobody.run(&["--json", "license", "status"]),
        "not_activated",
    );
    refused(
        &nobody.run(&["--json", "activate", "not-a-key"]),
        "invalid_key",
    );
    refused(
        &nobody.run(&["--json", "activate", "--token-file", "nowhere.json"]),
        "bad_token_file",
    );
    let out = nobody.run(&[
        "--json",
        "activate",
        "CODITECT-PILOT-ABCD-EFGH-JKMN",
        "--offline-request",
        "req.json",
    ]);
    out.assert_success();
    assert!(out.json()["hardware_id"].is_string(), "{out}");

    // --quiet: nothing on success, the error on failure.
    for args in [
        &["--quiet", "license", "status"][..],
        &["-q", "status"],
        &["-q", "init", "quiet-project"],
    ] {
        let out = user.run(args);
        out.assert_success();
        assert_eq!(
            (out.stdout.as_str(), out.stderr.as_str()),
            ("", ""),
            "{args:?}"
        );
    }
    let out = nobody.run(&["-q", "license", "status"]);
    assert_eq!(out.code, Some(1));
    assert!(
        out.stdout.is_empty() && out.stderr.contains("error: "),
        "{out}"
    );

    // Completions, man page, help.
    let out = nobody.run(&["completions", "bash"]);
    out.assert_success();
    assert!(out.stdout.contains("_coditect()"), "{}", out.stdout);
    for shell in ["zsh", "fish"] {
        let out = nobody.run(&["completions", shell]);
        out.assert_success();
        assert!(out.stdout.contains("coditect"), "{shell}");
    }
    let out = nobody.run(&["man"]);
    out.assert_success();
    assert!(out.stdout.contains(".TH coditect"), "{}", out.stdout);
    let out = nobody.run(&["--help"]);
    out.assert_success();
    assert!(
        out.stdout.contains("Exit codes: 0 ok, 1 ") && out.stdout.contains("2 unexpected"),
        "--help documents the exit codes:\n{out}"
    );
    let out = nobody.run(&["--version"]);
    out.assert_success();
    assert!(out.stdout.contains("development build"), "{out}");
}

// Regressions of CLI bugs found by these tests (each was fixed; the tests
// keep them fixed).

/// Importing a token file again must not lower the clock high-water mark:
/// today `activate --token-file` writes a new state whose mark is
/// `max(now, iat)`, so a clock set back (here by ten days) is accepted again
/// after a re-import, and an offline token can be used past the license's
/// end by turning the clock back.
#[test]
fn reimporting_a_token_file_keeps_the_clock_guard() {
    let mut claims = sample_claims(FIXED_NOW - HOUR, "guard-machine", ProjectLimit::Limited(3));
    // As `issue-offline` makes them: good until the license ends, no renewal.
    claims.expires_at = claims.license_expires_at;
    claims.renew_after = claims.license_expires_at;
    let mut u = Cli::new().machine("guard-machine").now(FIXED_NOW);
    let file = u.cwd().join("token.json");
    let doc = json!({
        "format": "coditect-license-token-v1",
        "token": dev_token(&claims),
        "license_id": claims.license_id,
        "expires_at": "2026-12-31T23:00:00Z",
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    u.run(&["activate", "--token-file", path_str(&file)])
        .assert_success();
    u.set_now(Some(FIXED_NOW + 10 * DAY));
    u.run(&["license", "status"]).assert_success();
    u.set_now(Some(FIXED_NOW));
    refused(
        &u.run(&["--json", "license", "status"]),
        "clock_rolled_back",
    );
    // Importing the same file again with the clock still set back…
    let _ = u.run(&["activate", "--token-file", path_str(&file)]);
    // … must not make the rolled-back clock acceptable.
    refused(
        &u.run(&["--json", "license", "status"]),
        "clock_rolled_back",
    );
}

/// A folder that already holds `.coditect/project.json` (copied, or made by
/// another user) is added to the project list without checking the plan's
/// limit, so Pilot Starter's three projects become any number.
#[test]
fn init_counts_existing_project_folders_against_the_limit() {
    let user = licensed_user("limit-machine");
    for name in ["p1", "p2", "p3"] {
        user.run(&["init", name]).assert_success();
    }
    let copy = user.cwd().join("p4/.coditect");
    std::fs::create_dir_all(&copy).unwrap();
    std::fs::copy(
        user.cwd().join("p1/.coditect/project.json"),
        copy.join("project.json"),
    )
    .unwrap();
    refused(&user.run(&["--json", "init", "p4"]), "project_limit");
}

/// Usage errors (caught by clap) under `--json` are printed as clap's human
/// text on stderr, not as `{"error": …}` on stdout.
#[test]
fn usage_errors_are_json_under_json() {
    let nobody = Cli::new();
    for args in [
        &["--json", "license", "bogus"][..],
        &[
            "--json",
            "activate",
            "--token-file",
            "a",
            "--offline-request",
            "b",
        ],
    ] {
        json_error(&nobody.run(args));
    }
}
