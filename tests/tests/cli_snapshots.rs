//! Snapshots (insta) of what a user reads: `coditect license status`, human
//! and JSON, and every error a user can meet that can be brought about
//! without an issuer, each in its human form (stdout, stderr, exit code) and
//! its `--json` form.
//!
//! Deterministic without a server: the state file is written here with a
//! token signed by the development key (fixed claims, fixed `cti`), the
//! CLI's clock is `CODITECT_TEST_NOW` and its machine `CODITECT_TEST_MACHINE_ID`.
//! Temporary paths and ports are replaced by `[DIR]` and `[PORT]`.
//!
//! New or changed snapshots: run with `INSTA_UPDATE=always` (or
//! `cargo insta review`) and commit the `.snap` files; with `CI=true` a
//! missing snapshot fails.

use coditect_tests::cli::{Cli, dev_token, has_ansi, license_state, unreachable_server};
use coditect_tests::{DAY, FIXED_NOW, HOUR, sample_claims};
use serde_json::{Value, json};
use verifier::{LicenseClaims, ProjectLimit};

const MACHINE: &str = "snapshot-machine";
const KEY: &str = "CODITECT-PILOT-ABCD-EFGH-JKMN";
/// The token was issued two hours before the fixed "now".
const IAT: u64 = FIXED_NOW - 2 * HOUR;

/// The sample license (Pilot Professional, three projects) issued at `IAT`.
fn professional() -> LicenseClaims {
    sample_claims(IAT, MACHINE, ProjectLimit::Limited(3))
}

/// A Pilot Starter license: three projects, one device.
fn starter() -> LicenseClaims {
    let mut c = sample_claims(IAT, MACHINE, ProjectLimit::Limited(3));
    c.tier = "pilot-starter".into();
    c.organization = String::new();
    c.entitlements.max_devices = 1;
    c.entitlements.ai_requests = 100;
    c
}

/// A user on `MACHINE` at `FIXED_NOW` with `claims` stored (last verified
/// at their `iat`, high-water mark `high_water`), whose server is a port
/// on which nothing listens.
fn user_with(claims: &LicenseClaims, high_water: u64) -> Cli {
    let cli = Cli::new().machine(MACHINE).now(FIXED_NOW);
    cli.write_state(&license_state(
        Some(KEY),
        &dev_token(claims),
        &unreachable_server(),
        claims.issued_at,
        high_water,
    ));
    cli
}

fn user(claims: &LicenseClaims) -> Cli {
    user_with(claims, claims.issued_at)
}

/// A user with no license on `MACHINE` at `FIXED_NOW`.
fn nobody() -> Cli {
    Cli::new().machine(MACHINE).now(FIXED_NOW)
}

/// `text` with the user's temporary directory replaced by `[DIR]` and
/// loopback ports by `[PORT]`.
fn redact(cli: &Cli, text: &str) -> String {
    let dir = cli.cwd().to_string_lossy().into_owned();
    let text = text.replace(&dir, "[DIR]");
    let mut out = String::with_capacity(text.len());
    let mut rest = text.as_str();
    const HOST: &str = "127.0.0.1:";
    while let Some(at) = rest.find(HOST) {
        out.push_str(&rest[..at + HOST.len()]);
        rest = &rest[at + HOST.len()..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("[PORT]");
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    out
}

/// One command as the user sees it: exit code, stdout and stderr.
fn run(cli: &Cli, args: &[&str]) -> String {
    let out = cli.run(args);
    assert_ne!(out.code, Some(101), "a panic:\n{out}");
    assert!(
        !has_ansi(&out.stdout) && !has_ansi(&out.stderr),
        "piped output has no escape sequences:\n{out}"
    );
    if args.contains(&"--json") {
        let doc: Value = serde_json::from_str(&out.stdout)
            .unwrap_or_else(|e| panic!("--json output is not JSON ({e}):\n{out}"));
        if out.code != Some(0) {
            assert!(doc["error"]["code"].is_string(), "{doc}");
            assert!(out.stderr.is_empty(), "--json errors go to stdout:\n{out}");
        }
    }
    redact(
        cli,
        &format!(
            "$ coditect {}\nexit code: {}\n--- stdout ---\n{}--- stderr ---\n{}",
            args.join(" "),
            out.code.map_or("signal".to_owned(), |c| c.to_string()),
            out.stdout,
            out.stderr
        ),
    )
}

/// The human and the `--json` form of a failing command; both exit 1.
fn error_transcript(cli: &Cli, args: &[&str]) -> String {
    let human = run(cli, args);
    let mut json_args = vec!["--json"];
    json_args.extend_from_slice(args);
    let json = run(cli, &json_args);
    assert!(
        human.contains("\nexit code: 1\n") && json.contains("\nexit code: 1\n"),
        "expected exit code 1 both times:\n{human}\n{json}"
    );
    format!("{human}\n{json}")
}

#[test]
fn license_status_human() {
    let u = user(&professional());
    let out = run(&u, &["license", "status"]);
    assert!(out.contains("exit code: 0"), "{out}");
    insta::assert_snapshot!("license_status_human", out);
}

#[test]
fn license_status_json() {
    let u = user(&professional());
    let out = run(&u, &["--json", "license", "status"]);
    assert!(out.contains("exit code: 0"), "{out}");
    insta::assert_snapshot!("license_status_json", out);
}

/// Inside the renewal window with the server unreachable: licensed, with a
/// warning (human) or `renewal_error` (JSON).
#[test]
fn license_status_renewal_pending_offline() {
    let claims = professional();
    let mut u = user(&claims);
    u.set_now(Some(claims.renew_after + HOUR));
    let out = format!(
        "{}\n{}",
        run(&u, &["license", "status"]),
        run(&u, &["--json", "license", "status"])
    );
    insta::assert_snapshot!("license_status_renewal_pending_offline", out);
}

#[test]
fn error_not_activated() {
    insta::assert_snapshot!(error_transcript(&nobody(), &["license", "status"]));
}

#[test]
fn error_invalid_key() {
    insta::assert_snapshot!(error_transcript(&nobody(), &["activate", "hello-world"]));
}

#[test]
fn error_no_key_given() {
    insta::assert_snapshot!(error_transcript(&nobody(), &["activate"]));
}

#[test]
fn error_corrupt_state() {
    let u = nobody();
    std::fs::create_dir_all(u.home()).unwrap();
    std::fs::write(u.license_file(), b"\x00\xff not json").unwrap();
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

#[test]
fn error_state_from_another_program() {
    let u = nobody();
    std::fs::create_dir_all(u.home()).unwrap();
    std::fs::write(u.license_file(), br#"{"format":"something-else"}"#).unwrap();
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// The clock is two hours behind the last time coditect ran.
#[test]
fn error_clock_rolled_back() {
    let u = user_with(&professional(), FIXED_NOW + 2 * HOUR);
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// Offline past the token's `exp` (72 h after `iat`), the server unreachable.
#[test]
fn error_token_expired_offline() {
    let claims = professional();
    let mut u = user(&claims);
    u.set_now(Some(claims.expires_at + 5 * HOUR));
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// The license itself has ended, the server unreachable.
#[test]
fn error_license_ended_offline() {
    let mut claims = starter();
    claims.issued_at = FIXED_NOW - 3 * DAY;
    claims.not_before = claims.issued_at;
    claims.renew_after = claims.issued_at + DAY;
    claims.license_expires_at = FIXED_NOW - HOUR;
    claims.expires_at = claims.license_expires_at;
    let u = user(&claims);
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// The state was copied from another machine.
#[test]
fn error_wrong_machine() {
    let mut u = user(&professional());
    u.set_machine("another-machine");
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// A renewal was refused earlier (revoked); every command says so offline.
#[test]
fn error_revoked_remembered() {
    let claims = professional();
    let u = nobody();
    let mut state = license_state(
        Some(KEY),
        &dev_token(&claims),
        &unreachable_server(),
        IAT,
        IAT,
    );
    state["refused"] = json!({
        "code": "license_revoked",
        "message": "The license has been revoked. Contact support if you think this is a mistake.",
        "at": IAT + HOUR,
    });
    u.write_state(&state);
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// A user whose renewal was refused for `code` (remembered in the state,
/// the server unreachable since).
fn refused_user(code: &str, message: &str) -> Cli {
    let claims = professional();
    let u = nobody();
    let mut state = license_state(
        Some(KEY),
        &dev_token(&claims),
        &unreachable_server(),
        IAT,
        IAT,
    );
    state["refused"] = json!({"code": code, "message": message, "at": IAT + HOUR});
    u.write_state(&state);
    u
}

/// Upgrade prompts: a canceled subscription names the account page where
/// a new one starts, in both forms.
#[test]
fn error_canceled_names_the_account_page() {
    let u = refused_user(
        "license_canceled",
        "The subscription of this license was canceled.",
    );
    let out = error_transcript(&u, &["license", "status"]);
    assert!(
        out.contains("open: http://127.0.0.1:[PORT]/account"),
        "{out}"
    );
    assert!(
        out.contains("\"url\": \"http://127.0.0.1:[PORT]/account\""),
        "{out}"
    );
    insta::assert_snapshot!(out);
}

/// Upgrade prompts: an unpaid invoice past its grace names the account
/// page, whose billing portal takes the payment.
#[test]
fn error_payment_overdue_names_the_account_page() {
    let u = refused_user(
        "payment_overdue",
        "A payment is overdue since Dec 20, 2025; renewals stopped after the grace period.",
    );
    insta::assert_snapshot!(error_transcript(&u, &["license", "status"]));
}

/// Pilot Starter allows three projects: the fourth `init` is refused.
#[test]
fn error_project_limit() {
    let u = user(&starter());
    for name in ["alpha", "beta", "gamma"] {
        let out = u.run(&["init", name]);
        out.assert_success();
    }
    insta::assert_snapshot!(error_transcript(&u, &["init", "delta"]));
}

/// A token file made for another machine's request.
#[test]
fn error_token_file_for_another_machine() {
    let u = nobody();
    let mut claims = starter();
    claims.hardware_id = verifier::HardwareId::from_machine_id("the-other-machine");
    let file = u.cwd().join("token.json");
    let doc = json!({
        "format": "coditect-license-token-v1",
        "token": dev_token(&claims),
        "license_id": claims.license_id,
        "expires_at": "2026-12-31T22:00:00Z",
    });
    std::fs::write(&file, doc.to_string()).unwrap();
    insta::assert_snapshot!(error_transcript(
        &u,
        &["activate", "--token-file", "token.json"]
    ));
}

#[test]
fn error_token_file_not_json() {
    let u = nobody();
    std::fs::write(u.cwd().join("token.json"), "not json").unwrap();
    insta::assert_snapshot!(error_transcript(
        &u,
        &["activate", "--token-file", "token.json"]
    ));
}

/// `coditect activate` with no server to talk to.
#[test]
fn error_server_unreachable_during_activate() {
    let server = unreachable_server();
    insta::assert_snapshot!(error_transcript(
        &nobody(),
        &["activate", KEY, "--server", &server]
    ));
}

/// `license renew` on a license imported from a token file without a key.
#[test]
fn error_offline_license_cannot_renew() {
    let claims = starter();
    let u = nobody();
    u.write_state(&license_state(
        None,
        &dev_token(&claims),
        &unreachable_server(),
        IAT,
        IAT,
    ));
    insta::assert_snapshot!(error_transcript(&u, &["license", "renew"]));
}

#[test]
fn error_deactivate_without_license() {
    insta::assert_snapshot!(error_transcript(&nobody(), &["deactivate"]));
}

#[test]
fn redaction_replaces_ports_and_the_directory() {
    let u = nobody();
    let dir = u.cwd().display().to_string();
    assert_eq!(
        redact(
            &u,
            &format!("{dir}/home at http://127.0.0.1:40123/x and 127.0.0.1:"),
        ),
        "[DIR]/home at http://127.0.0.1:[PORT]/x and 127.0.0.1:"
    );
}
