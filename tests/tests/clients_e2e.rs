//! What an integrator does, outside Rust, against the real issuer on each
//! backend:
//!
//! - The clients generated from `schemas/openapi.json` (Python:
//!   openapi-python-client; TypeScript: openapi-typescript + openapi-fetch)
//!   call every operation of the spec and run the license lifecycle
//!   (`tests/clients/python/test_lifecycle.py`,
//!   `tests/clients/ts/lifecycle.test.ts`).
//! - The token verification examples (`tests/python/verify_token.py` with
//!   python-cwt, `tests/clients/ts/verify-token.ts` with @auth0/cose)
//!   accept a token the issuer has just signed, with the JWK Set of
//!   `GET /api/v1/keys` alone, and refuse it once a byte is changed.
//!
//! `scripts/clients.sh` installs the pinned tools and generates the
//! clients (scripts/test.sh runs it). Without them the test says so and
//! passes, except under CI, where it fails.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coditect_tests::billing::BillingEnv;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{CommandOutput, decode_token, hardware_id, run_process};
use coditect_tests::{missing_tool, on_both_backends, repo_file};
use serde_json::json;

const PASSWORD: &str = "correct horse battery staple";
const SUITE_TIMEOUT: Duration = Duration::from_secs(300);

fn clients_dir() -> PathBuf {
    repo_file("tests/clients")
}

/// The tools `scripts/clients.sh` installs and the clients it generates;
/// `None` (after a notice, or a failure under CI) when something is missing.
fn tools(test: &str) -> Option<(PathBuf, PathBuf)> {
    let dir = clients_dir();
    let venv_python = dir.join(".venv/bin/python");
    let needed = [
        dir.join("node_modules/.bin/tsx"),
        venv_python.clone(),
        dir.join("generated/api.d.ts"),
        dir.join("generated/python/coditect_api/__init__.py"),
    ];
    if let Some(missing) = needed.iter().find(|p| !p.exists()) {
        missing_tool(
            test,
            &format!("{} does not exist", missing.display()),
            "run scripts/clients.sh (npm, python3 -m venv)",
        );
        return None;
    }
    Some((venv_python, dir.join("generated/python")))
}

fn run(mut cmd: Command, what: &str) -> CommandOutput {
    cmd.env("NO_COLOR", "1").env("PYTHONDONTWRITEBYTECODE", "1");
    let out = run_process(cmd, None, SUITE_TIMEOUT);
    eprintln!("--- {what}\n{}", out.all_output());
    out
}

/// A buyer of `plan` and the license key the issuer mailed for it.
fn buyer(env: &BillingEnv, email: &str, known_keys: &[String]) -> String {
    env.buy(email, "pilot-professional", "month");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let key = env.logged_key();
        if !known_keys.contains(&key) {
            return key;
        }
        assert!(Instant::now() < deadline, "no new license key was mailed");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn generated_clients_and_token_verifiers(backend: Backend) {
    let test = "generated_clients_and_token_verifiers";
    let Some((venv_python, python_path)) = tools(test) else {
        return;
    };
    let data = tempfile::tempdir().expect("temp dir");
    let Some(_db) = TestDatabase::create(backend, data.path()) else {
        return;
    };
    let env = BillingEnv::start(data.path(), &[]);
    let url = env.issuer.base_url().to_owned();
    let spec = repo_file("schemas/openapi.json");
    let document: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&spec).expect("read the spec"))
            .expect("the spec is JSON");
    let operations: usize = document["paths"]
        .as_object()
        .expect("paths")
        .values()
        .map(|item| item.as_object().map_or(0, serde_json::Map::len))
        .sum();

    let py_key = buyer(&env, "py-buyer@example.com", &[]);
    let ts_key = buyer(&env, "ts-buyer@example.com", std::slice::from_ref(&py_key));

    let suite_env = |cmd: &mut Command, email: &str, key: &str| {
        cmd.current_dir(clients_dir())
            .env("CODITECT_URL", &url)
            .env("SPEC", &spec)
            .env("BUYER_EMAIL", email)
            .env("BUYER_PASSWORD", PASSWORD)
            .env("LICENSE_KEY", key);
    };

    let mut py = Command::new(&venv_python);
    py.arg("python/test_lifecycle.py")
        .env("PYTHONPATH", &python_path);
    suite_env(&mut py, "py-buyer@example.com", &py_key);
    let out = run(py, "Python client suite");
    assert!(out.success(), "the Python client suite failed:\n{out}");
    assert!(
        out.stdout
            .contains(&format!("python client: {operations} operations called")),
        "{out}"
    );

    let mut ts = Command::new("node");
    ts.args(["--import", "tsx", "--test", "ts/lifecycle.test.ts"]);
    suite_env(&mut ts, "ts-buyer@example.com", &ts_key);
    let out = run(ts, "TypeScript client suite");
    assert!(out.success(), "the TypeScript client suite failed:\n{out}");
    assert!(
        out.stdout.contains(&format!(
            "typescript client: {operations} operations called"
        )),
        "{out}"
    );

    // A token the issuer signs now, and the JWK Set, as an integrator
    // would fetch them.
    let client = env.client();
    let granted = client
        .post_json(
            "/api/v1/licenses/activate",
            &json!({"license_key": py_key, "hardware_id": hardware_id("verifier-example")}),
        )
        .expect_status(201);
    let token = granted["token"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let jwks = client.get("/api/v1/keys").expect_status(200);
    let jwks_path = data.path().join("jwks.json");
    std::fs::write(&jwks_path, jwks.to_string()).expect("write the JWK Set");
    let mut bytes = decode_token(&token);
    // A byte of the claims (the payload is the third item, well inside).
    let at = bytes.len() / 2;
    bytes[at] ^= 0x01;
    let tampered = URL_SAFE_NO_PAD.encode(&bytes);

    // The examples' commands: `verify JWKS_FILE TOKEN`.
    let verifier = |name: &str, token: &str| {
        let mut cmd = if name.starts_with("Python") {
            let mut cmd = Command::new("python3");
            cmd.arg(repo_file("tests/python/verify_token.py"));
            cmd
        } else {
            let mut cmd = Command::new("node");
            cmd.current_dir(clients_dir())
                .args(["--import", "tsx", "ts/verify-token.ts"]);
            cmd
        };
        cmd.arg(&jwks_path).arg(token);
        cmd
    };
    let expected_hw = hardware_id("verifier-example");
    for name in ["Python (python-cwt)", "TypeScript (@auth0/cose)"] {
        let out = run(
            verifier(name, &token),
            &format!("{name} verifies the token"),
        );
        assert!(out.success(), "{name} refused a good token:\n{out}");
        assert!(
            out.stdout.contains(&expected_hw),
            "{name} did not print the token's hardware id:\n{out}"
        );
        let out = run(
            verifier(name, &tampered),
            &format!("{name} refuses a tampered token"),
        );
        assert!(!out.success(), "{name} accepted a tampered token:\n{out}");
        assert!(out.stderr.contains("refused"), "{out}");
    }
}

on_both_backends!(generated_clients_and_token_verifiers);
