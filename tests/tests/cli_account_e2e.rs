//! The README's account commands of the `coditect` CLI, end to end: the
//! test build of the binary against the real issuer with a fake Stripe (a
//! bought license belongs to the buyer's organization). `login`, `license
//! machines`, `deactivate --machine` (freeing another machine's seat with
//! the `coditect login` session) and `logout`, with their refusals.

use std::collections::BTreeSet;
use std::path::Path;

use coditect_tests::billing::BillingEnv;
use coditect_tests::cli::Cli;
use coditect_tests::issuer::{CommandOutput, hardware_id, show_license};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery staple";
const DEACTIVATE: &str = "/api/v1/licenses/deactivate";

fn data_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("coditect-cli-account-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

/// The `{"error": {…}}` code of a failed `--json` command (exit code 1).
#[track_caller]
fn refused(out: &CommandOutput, code: &str) -> Value {
    assert_eq!(out.code, Some(1), "expected exit code 1:\n{out}");
    let doc = out.json();
    assert_eq!(doc["error"]["code"], code, "{out}");
    doc["error"].clone()
}

/// The hardware ids active on a license, as the operator sees them.
fn active_machines(data_dir: &Path, license_id: &str) -> BTreeSet<String> {
    show_license(data_dir, license_id)["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| a["hardware_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// The session the CLI keeps after `coditect login`, if any.
fn session(cli: &Cli) -> Option<Value> {
    let text = std::fs::read_to_string(cli.home().join("session.json")).ok()?;
    Some(serde_json::from_str(&text).expect("session.json is JSON"))
}

#[test]
fn login_machines_deactivate_machine_and_logout() {
    let dir = data_dir();
    let env = BillingEnv::start(dir.path(), &[]);
    let purchase = env.buy("owner@example.com", "pilot-professional", "month");
    let key = {
        let log = env.issuer.log();
        let i = log
            .find("CODITECT-PILOT-")
            .expect("the key mail in the log");
        log[i..i + 29].to_owned()
    };
    // Someone of another organization, with the same password.
    env.account("other@example.com", "Other Org");
    let server = env.issuer.base_url().to_owned();

    // Two machines hold seats; the owner's laptop holds the key too.
    let team_a = Cli::new().machine("team-a");
    let team_b = Cli::new().machine("team-b");
    let laptop = Cli::new().machine("owner-laptop");
    for (cli, name) in [
        (&team_a, "team-a"),
        (&team_b, "team-b"),
        (&laptop, "laptop"),
    ] {
        cli.run(&["activate", &key, "--server", &server, "--name", name])
            .assert_success();
    }
    let license_id = team_a.stored_claims().license_id;
    // The organization frees the laptop's seat (through the API): the
    // laptop keeps the key but no longer holds a seat.
    let listed = env
        .client()
        .with_bearer(&purchase.jwt)
        .get("/api/v1/licenses")
        .expect_status(200);
    let activations = listed["licenses"][0]["activations"]
        .as_array()
        .expect("activations")
        .clone();
    let id_of = |machine: &str| -> String {
        activations
            .iter()
            .find(|a| a["hardware_id"] == hardware_id(machine).as_str())
            .and_then(|a| a["id"].as_str())
            .expect("the machine's activation")
            .to_owned()
    };
    let (laptop_id, b_id) = (id_of("owner-laptop"), id_of("team-b"));
    env.client()
        .with_bearer(&purchase.jwt)
        .post_json(
            DEACTIVATE,
            &json!({"license_key": key, "hardware_id": hardware_id("owner-laptop"), "activation_id": laptop_id}),
        )
        .expect_status(200);
    let both = BTreeSet::from([hardware_id("team-a"), hardware_id("team-b")]);
    assert_eq!(active_machines(dir.path(), &license_id), both);

    // Not signed in: `license machines` says so; the seatless laptop may
    // not free team-b's seat with the key alone.
    refused(
        &laptop.run(&["--json", "license", "machines", "--server", &server]),
        "not_signed_in",
    );
    refused(
        &laptop.run(&["--json", "deactivate", "--machine", &b_id]),
        "not_allowed_to_free",
    );
    assert_eq!(active_machines(dir.path(), &license_id), both);

    // A wrong password: refused, no session kept.
    let out = laptop.run_with_stdin(
        &[
            "--json",
            "login",
            "--email",
            "owner@example.com",
            "--password-stdin",
            "--server",
            &server,
        ],
        "not the password\n",
    );
    refused(&out, "invalid_credentials");
    assert!(session(&laptop).is_none(), "a refused login kept a session");
    // Without a terminal or --password-stdin: a clear refusal.
    refused(
        &laptop.run(&[
            "--json",
            "login",
            "--email",
            "owner@example.com",
            "--server",
            &server,
        ]),
        "input",
    );

    // Signed in to another organization: still not allowed.
    let login = |cli: &Cli, email: &str| {
        let out = cli.run_with_stdin(
            &[
                "--json",
                "login",
                "--email",
                email,
                "--password-stdin",
                "--server",
                &server,
            ],
            &format!("{PASSWORD}\n"),
        );
        out.assert_success();
        assert_eq!(out.json()["signed_in"], true, "{out}");
        assert_eq!(out.json()["email"], email, "{out}");
    };
    login(&laptop, "other@example.com");
    let listed = laptop.run(&["--json", "license", "machines"]);
    listed.assert_success();
    assert_eq!(listed.json()["licenses"], json!([]), "{listed}");
    refused(
        &laptop.run(&["--json", "deactivate", "--machine", &b_id]),
        "not_allowed_to_free",
    );
    assert_eq!(active_machines(dir.path(), &license_id), both);
    let out = laptop.run(&["--json", "logout"]);
    out.assert_success();
    assert_eq!(out.json()["server_session_ended"], true, "{out}");

    // Signed in as the owner: the machines are listed, and the session
    // frees team-b's seat from the seatless laptop.
    login(&laptop, "owner@example.com");
    let token = session(&laptop).expect("a session after login")["access_token"]
        .as_str()
        .expect("access_token")
        .to_owned();
    let listed = laptop.run(&["--json", "license", "machines"]);
    listed.assert_success();
    let doc = listed.json();
    assert_eq!(
        doc["licenses"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    assert_eq!(doc["licenses"][0]["license"]["id"], license_id.as_str());
    let shown: BTreeSet<String> = doc["licenses"][0]["activations"]
        .as_array()
        .expect("activations")
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| a["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(shown, BTreeSet::from([id_of("team-a"), b_id.clone()]));
    let human = laptop.run(&["license", "machines"]);
    human.assert_success();
    assert!(human.stdout.contains(&b_id), "{human}");
    assert!(human.stdout.contains("team-b"), "{human}");

    let out = laptop.run(&["--json", "deactivate", "--machine", &b_id]);
    out.assert_success();
    assert_eq!(out.json()["deactivated"], b_id.as_str(), "{out}");
    assert_eq!(out.json()["removed_local_license"], false, "{out}");
    assert!(
        laptop.license_file().exists(),
        "the laptop keeps its license"
    );
    assert_eq!(
        active_machines(dir.path(), &license_id),
        BTreeSet::from([hardware_id("team-a")])
    );

    // Logout ends the session on the server too.
    let out = laptop.run(&["--json", "logout"]);
    out.assert_success();
    assert_eq!(
        out.json(),
        json!({"signed_in": false, "server_session_ended": true}),
        "{out}"
    );
    assert!(session(&laptop).is_none(), "logout forgot the session");
    env.client()
        .with_bearer(&token)
        .get("/api/v1/licenses")
        .expect_problem(401, "unauthorized");
    refused(
        &laptop.run(&["--json", "license", "machines"]),
        "not_signed_in",
    );
    // Logging out twice is harmless.
    let out = laptop.run(&["--json", "logout"]);
    out.assert_success();
    assert_eq!(out.json(), json!({"signed_in": false}), "{out}");
}
