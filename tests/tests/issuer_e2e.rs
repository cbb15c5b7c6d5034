//! End-to-end tests of the real `coditect-issuer` binary (issue 3): a server
//! on a free loopback port with its own temporary data directory, licenses
//! made with the admin commands in separate processes, activation and
//! renewal over HTTP, and every returned token checked with the `verifier`
//! crate against the published keys.
//!
//! Each server is killed when its guard drops, also when a test fails.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{
    Client, HttpResponse, IssuerServer, admin, admin_with_env, create_license, decode_token,
    hardware_id, issuer_command, key_ring_from_jwks, run_with_timeout, show_license, unix_now,
};
use coditect_tests::{DAY, HOUR, dev_jwks_path, dev_key_ring, read_repo_file};
use serde_json::{Value, json};
use tempfile::TempDir;
use verifier::{
    Entitlements, HardwareId, KeyRing, LicenseClaims, ProjectLimit, VerifyError, verify,
};

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";
const DEACTIVATE: &str = "/api/v1/licenses/deactivate";

fn data_dir() -> TempDir {
    tempfile::Builder::new()
        .prefix("coditect-issuer-e2e-")
        .tempdir()
        .expect("a temporary data directory")
}

fn activate_body(key: &str, hw: &str) -> Value {
    json!({ "license_key": key, "hardware_id": hw, "machine_name": "e2e machine" })
}

fn validate_body(key: &str, hw: &str) -> Value {
    json!({ "license_key": key, "hardware_id": hw, "client_version": "0.1.0-e2e" })
}

/// Verifies the token of an activate/validate response for `hw` at `now`
/// under every ring given; returns the claims.
fn verified_claims(body: &Value, rings: &[&KeyRing], hw: &str, now: u64) -> LicenseClaims {
    let token = decode_token(
        body["token"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {body}")),
    );
    let hw = HardwareId::from_hex(hw).expect("test hardware ids are 64 hex");
    let mut claims = None;
    for ring in rings {
        let c = verify(&token, ring, now, &hw)
            .unwrap_or_else(|e| panic!("the issued token does not verify: {e:?}"));
        if let Some(previous) = &claims {
            assert_eq!(previous, &c);
        }
        claims = Some(c);
    }
    claims.expect("at least one key ring")
}

fn active_hardware_ids(license: &Value) -> BTreeSet<String> {
    license["activations"]
        .as_array()
        .unwrap_or_else(|| panic!("no activations in {license}"))
        .iter()
        .filter(|a| a["status"] == "active")
        .map(|a| a["hardware_id"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// On SQLite, `PRAGMA integrity_check` is "ok" and `PRAGMA
/// foreign_key_check` finds nothing; on PostgreSQL (which enforces its
/// foreign keys itself), no activation lacks its license and every seat
/// count is within its license's limit.
fn assert_database_consistent(db: &TestDatabase, data_dir: &Path) {
    if db.backend() == Backend::Postgres {
        assert_eq!(
            db.count(
                "SELECT count(*) FROM activations a LEFT JOIN licenses l ON l.id = a.license_id
                 WHERE l.id IS NULL"
            ),
            0
        );
        assert_eq!(
            db.count(
                "SELECT count(*) FROM licenses l WHERE l.max_activations <
                     (SELECT count(*) FROM activations a
                      WHERE a.license_id = l.id AND a.status = 'active')"
            ),
            0
        );
        return;
    }
    let db = &data_dir.join("issuer.sqlite3");
    assert!(db.is_file(), "no database at {}", db.display());
    let conn = rusqlite::Connection::open(db).expect("open the issuer database");
    conn.busy_timeout(Duration::from_secs(10)).unwrap();
    let integrity: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(integrity, ["ok"], "integrity_check of {}", db.display());
    let violations = conn
        .prepare("PRAGMA foreign_key_check")
        .unwrap()
        .query_map([], |r| {
            Ok(format!(
                "{}:{:?}",
                r.get::<_, String>(0)?,
                r.get::<_, Option<i64>>(1)?
            ))
        })
        .unwrap()
        .collect::<Result<Vec<_>, _>>()
        .unwrap();
    assert!(
        violations.is_empty(),
        "foreign key violations: {violations:?}"
    );
}

/// Create a license, activate, verify the token with the served JWK Set
/// and the committed development JWK Set, renew, activate again, free the
/// seat; and the problem codes of the usual mistakes.
#[test]
fn activate_validate_deactivate_over_http_with_verified_tokens() {
    let dir = data_dir();
    let server = IssuerServer::start(dir.path());
    // The admin command runs as its own process while the server runs.
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "jane.doe@acme-robotics.example",
            "--tier",
            "pilot-professional",
            "--org",
            "Acme Robotics GmbH",
        ],
    );
    assert!(
        license.key.starts_with("CODITECT-PILOT-") && license.key.len() == 29,
        "{}",
        license.key
    );

    // The published keys: the server (on the development key) serves the
    // committed development JWK.
    let served = server.get("/api/v1/keys").expect_status(200);
    let committed: Value =
        serde_json::from_str(&read_repo_file("keys/development/coditect-dev.jwks.json"))
            .expect("the committed JWK Set is JSON");
    let dev_jwk = &committed["keys"][0];
    assert!(
        served["keys"]
            .as_array()
            .is_some_and(|keys| keys.contains(dev_jwk)),
        "GET /api/v1/keys {served} lacks the key of {}",
        dev_jwks_path().display()
    );
    let served_ring = key_ring_from_jwks(&served);
    let committed_ring = key_ring_from_jwks(&committed);
    let rings = [&served_ring, &committed_ring];

    // Activate.
    let hw = hardware_id("e2e-machine-0001");
    let before = unix_now();
    let resp = server.post_json(ACTIVATE, &activate_body(&license.key, &hw));
    let after = unix_now();
    let body = resp.expect_status(201);
    let activation_id = body["activation"]["id"]
        .as_str()
        .expect("activation id")
        .to_owned();
    assert_eq!(body["activation"]["hardware_id"], hw);
    assert_eq!(body["activation"]["status"], "active");
    assert_eq!(body["license"]["id"], license.id);
    assert_eq!(body["license"]["devices_used"], 1);
    let claims = verified_claims(&body, &rings, &hw, after);
    assert_eq!(claims.license_id, license.id);
    assert_eq!(claims.tier, "pilot-professional");
    assert_eq!(claims.email, "jane.doe@acme-robotics.example");
    assert_eq!(claims.organization, "Acme Robotics GmbH");
    assert_eq!(
        claims.entitlements,
        Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 1000,
            max_devices: 3,
        }
    );
    assert_eq!(claims.hardware_id.to_hex(), hw);
    assert_eq!(claims.devices_used, 1);
    assert!(
        (before..=after).contains(&claims.issued_at),
        "iat {} not within the request ({before}..={after})",
        claims.issued_at
    );
    assert_eq!(claims.not_before, claims.issued_at);
    assert_eq!(claims.expires_at - claims.issued_at, 72 * HOUR);
    assert_eq!(claims.renew_after - claims.issued_at, 24 * HOUR);
    // Default license: one year from creation.
    let year_end = claims.issued_at + 365 * DAY;
    assert!(
        claims.license_expires_at.abs_diff(year_end) <= 120,
        "license expiry {} vs {year_end}",
        claims.license_expires_at
    );
    // Bound to this machine: another machine's id is refused.
    let other_machine = HardwareId::from_machine_id("e2e-someone-else");
    let token = decode_token(body["token"]["token"].as_str().unwrap());
    assert_eq!(
        verify(&token, &served_ring, after, &other_machine),
        Err(VerifyError::HardwareMismatch)
    );

    // Validate: a fresh token for the same machine.
    let renewed = server
        .post_json(VALIDATE, &validate_body(&license.key, &hw))
        .expect_status(200);
    let renewed_claims = verified_claims(&renewed, &rings, &hw, unix_now());
    assert_ne!(renewed_claims.token_id, claims.token_id, "a new cti");
    assert_eq!(renewed_claims.license_id, license.id);
    assert!(renewed_claims.issued_at >= claims.issued_at);
    assert_eq!(
        renewed_claims.expires_at - renewed_claims.issued_at,
        72 * HOUR
    );
    assert_eq!(renewed["activation"]["id"], activation_id.as_str());

    // The same machine again: 200, the same activation, no second seat.
    let again = server
        .post_json(ACTIVATE, &activate_body(&license.key, &hw))
        .expect_status(200);
    assert_eq!(again["activation"]["id"], activation_id.as_str());
    assert_eq!(again["license"]["devices_used"], 1);
    let again_claims = verified_claims(&again, &rings, &hw, unix_now());
    assert_eq!(again_claims.devices_used, 1);

    // Deactivate: the seat is free and the machine can no longer renew.
    let freed = server
        .post_json(
            DEACTIVATE,
            &json!({ "license_key": license.key, "hardware_id": hw }),
        )
        .expect_status(200);
    assert_eq!(freed["activation"]["id"], activation_id.as_str());
    assert_eq!(freed["activation"]["status"], "deactivated");
    assert_eq!(freed["license"]["devices_used"], 0);
    server
        .post_json(VALIDATE, &validate_body(&license.key, &hw))
        .expect_problem(403, "not_activated");
    assert!(active_hardware_ids(&show_license(dir.path(), &license.id)).is_empty());

    // Mistakes and their codes.
    let unknown = "CODITECT-PILOT-AAAA-BBBB-CCCC";
    server
        .post_json(ACTIVATE, &activate_body(unknown, &hw))
        .expect_problem(404, "license_not_found");
    server
        .post_json(VALIDATE, &validate_body(unknown, &hw))
        .expect_problem(404, "license_not_found");
    for bad_hw in [
        "not-a-hardware-id",
        &hw[..63],
        &"g".repeat(64),
        &"a".repeat(65),
    ] {
        let p = server
            .post_json(ACTIVATE, &activate_body(&license.key, bad_hw))
            .expect_problem(422, "invalid_field");
        assert_eq!(p["field"], "hardware_id", "{bad_hw}: {p}");
        let p = server
            .post_json(VALIDATE, &validate_body(&license.key, bad_hw))
            .expect_problem(422, "invalid_field");
        assert_eq!(p["field"], "hardware_id", "{bad_hw}: {p}");
    }
    let p = server
        .post_json(ACTIVATE, &activate_body("not a key", &hw))
        .expect_problem(422, "invalid_field");
    assert_eq!(p["field"], "license_key", "{p}");
    for path in [ACTIVATE, VALIDATE, DEACTIVATE] {
        server
            .post_raw(path, "application/json", "{\"license_key\": ")
            .expect_problem(400, "invalid_request");
    }

    // Revocation: the machine is active again, then the license is revoked
    // by the admin command; renewal and activation are refused.
    server
        .post_json(ACTIVATE, &activate_body(&license.key, &hw))
        .expect_status(201);
    server
        .post_json(VALIDATE, &validate_body(&license.key, &hw))
        .expect_status(200);
    admin(dir.path(), &["license", "revoke", &license.id]).assert_success();
    server
        .post_json(VALIDATE, &validate_body(&license.key, &hw))
        .expect_problem(403, "license_revoked");
    server
        .post_json(
            ACTIVATE,
            &activate_body(&license.key, &hardware_id("e2e-new")),
        )
        .expect_problem(403, "license_revoked");
    assert_eq!(show_license(dir.path(), &license.id)["status"], "revoked");
}

// The invariant tests run on SQLite and on PostgreSQL.
coditect_tests::on_both_backends!(
    fifty_simultaneous_activations_on_a_three_device_license_give_exactly_three,
    acknowledged_activations_survive_a_kill_9_mid_load,
    sigterm_under_load_keeps_every_acknowledged_activation_and_its_audit_row,
);

/// The issue's concurrency test: 50 simultaneous activations of distinct
/// machines on a 3-device license give exactly 3 successes and 47
/// `too_many_activations`.
fn fifty_simultaneous_activations_on_a_three_device_license_give_exactly_three(backend: Backend) {
    const MACHINES: usize = 50;
    let dir = data_dir();
    let Some(_db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "race@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "3",
        ],
    );
    let barrier = Arc::new(Barrier::new(MACHINES));
    let threads: Vec<_> = (0..MACHINES)
        .map(|i| {
            let client = server.client();
            let barrier = Arc::clone(&barrier);
            let key = license.key.clone();
            std::thread::spawn(move || {
                let hw = hardware_id(&format!("race-machine-{i:02}"));
                let body = activate_body(&key, &hw);
                barrier.wait();
                let resp = client.try_post_json(ACTIVATE, &body);
                (hw, resp.map_err(|e| e.to_string()))
            })
        })
        .collect();
    let results: Vec<(String, Result<HttpResponse, String>)> = threads
        .into_iter()
        .map(|t| t.join().expect("an activation thread panicked"))
        .collect();

    let mut winners = BTreeSet::new();
    let mut refused = 0;
    for (hw, result) in &results {
        let resp = result
            .as_ref()
            .unwrap_or_else(|e| panic!("transport error for {hw}: {e}\n{}", server.log()));
        assert!(
            resp.status < 500,
            "{}: {}\n{}",
            resp.status,
            resp.body,
            server.log()
        );
        match resp.status {
            201 => {
                let body = resp.json();
                assert_eq!(body["activation"]["hardware_id"], hw.as_str());
                winners.insert(hw.clone());
            }
            _ => {
                resp.expect_problem(403, "too_many_activations");
                refused += 1;
            }
        }
    }
    assert_eq!(winners.len(), 3, "exactly three activations succeed");
    assert_eq!(refused, MACHINES - 3);

    let shown = show_license(dir.path(), &license.id);
    assert_eq!(shown["devices_used"], 3, "{shown}");
    assert_eq!(shown["max_activations"], 3, "{shown}");
    assert_eq!(active_hardware_ids(&shown), winners);
    assert_eq!(
        shown["activations"].as_array().map(Vec::len),
        Some(3),
        "no refused machine left a row: {shown}"
    );
}

/// What the load threads of the restart test saw.
#[derive(Default)]
struct LoadRecord {
    /// Machines whose activation got a 2xx.
    activated: Vec<String>,
    /// Responses that were neither a success nor a transport failure.
    unexpected: Vec<String>,
}

/// Restart safety: kill -9 in the middle of a load of activations and
/// validations; every acknowledged activation survives, the seat limit
/// holds and the database's own checks pass.
fn acknowledged_activations_survive_a_kill_9_mid_load(backend: Backend) {
    const THREADS: usize = 4;
    const KILL_AFTER: usize = 100;
    const MAX_DEVICES: u64 = 1000;
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let mut server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "load@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            &MAX_DEVICES.to_string(),
        ],
    );

    let record = Arc::new(Mutex::new(LoadRecord::default()));
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let give_up = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let client: Client = server.client();
            let key = license.key.clone();
            let record = Arc::clone(&record);
            let acknowledged = Arc::clone(&acknowledged);
            let give_up = Arc::clone(&give_up);
            std::thread::spawn(move || {
                let mut mine: Vec<String> = Vec::new();
                for i in 0.. {
                    if give_up.load(Ordering::Relaxed) {
                        return false;
                    }
                    // Alternate: activate a new machine, renew an earlier one.
                    let (path, body, hw) = if i % 2 == 0 || mine.is_empty() {
                        let hw = hardware_id(&format!("load-{t}-{i}"));
                        (ACTIVATE, activate_body(&key, &hw), Some(hw))
                    } else {
                        let hw = &mine[(i / 2) % mine.len()];
                        (VALIDATE, validate_body(&key, hw), None)
                    };
                    let resp = match client.try_post_json(path, &body) {
                        Ok(resp) => resp,
                        // The server is gone: the load was cut mid-way.
                        Err(_) => return true,
                    };
                    let mut record = record.lock().unwrap();
                    match (resp.status, hw) {
                        (200 | 201, Some(hw)) => {
                            record.activated.push(hw.clone());
                            mine.push(hw);
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                        }
                        (200, None) => {}
                        (status, _) => record
                            .unexpected
                            .push(format!("{path}: {status} {}", resp.body)),
                    }
                }
                false
            })
        })
        .collect();

    let deadline = Instant::now() + Duration::from_secs(30);
    while acknowledged.load(Ordering::SeqCst) < KILL_AFTER {
        if Instant::now() > deadline || threads.iter().all(|t| t.is_finished()) {
            give_up.store(true, Ordering::Relaxed);
            panic!(
                "the load did not reach {KILL_AFTER} activations (got {})\n{}",
                acknowledged.load(Ordering::SeqCst),
                server.log()
            );
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    server.kill();
    let cut_mid_load: Vec<bool> = threads
        .into_iter()
        .map(|t| t.join().expect("a load thread panicked"))
        .collect();
    assert!(
        cut_mid_load.iter().all(|&cut| cut),
        "every load thread was still sending when the server died"
    );
    let record = std::mem::take(&mut *record.lock().unwrap());
    assert!(
        record.unexpected.is_empty(),
        "unexpected responses during the load: {:?}",
        record.unexpected
    );
    assert!(record.activated.len() >= KILL_AFTER);

    // The database as the killed process left it.
    assert_database_consistent(&db, dir.path());

    let server = IssuerServer::start(dir.path());
    let ring = dev_key_ring();
    for hw in &record.activated {
        let body = server
            .post_json(VALIDATE, &validate_body(&license.key, hw))
            .expect_status(200);
        verified_claims(&body, &[&ring], hw, unix_now());
    }
    let shown = show_license(dir.path(), &license.id);
    let active = active_hardware_ids(&shown);
    let acknowledged: BTreeSet<String> = record.activated.iter().cloned().collect();
    assert!(
        acknowledged.is_subset(&active),
        "lost activations: {:?}",
        acknowledged.difference(&active).collect::<Vec<_>>()
    );
    let devices_used = shown["devices_used"].as_u64().expect("devices_used");
    assert_eq!(devices_used, active.len() as u64);
    assert!(devices_used <= MAX_DEVICES);
    assert_eq!(
        db.count("SELECT count(*) FROM activations WHERE status = 'active'"),
        i64::try_from(devices_used).unwrap()
    );
    // At most one in-flight activation per thread may have committed
    // without its answer arriving.
    assert!(
        active.len() <= acknowledged.len() + THREADS,
        "{} active, {} acknowledged",
        active.len(),
        acknowledged.len()
    );
    assert_database_consistent(&db, dir.path());
    eprintln!(
        "kill -9 after {} acknowledged activations; {} active after the restart",
        acknowledged.len(),
        active.len()
    );
}

/// TOKEN_LIFETIME / TOKEN_RENEW_AFTER shape the tokens; the verifier
/// refuses a token at its `exp` (time passed as a parameter: no sleeping).
#[test]
fn short_token_lifetime_is_honoured_and_enforced_by_the_verifier() {
    let dir = data_dir();
    let server = IssuerServer::start_with_env(
        dir.path(),
        &[("TOKEN_LIFETIME", "10s"), ("TOKEN_RENEW_AFTER", "5s")],
    );
    let license = create_license(
        dir.path(),
        &["--email", "short@example.com", "--tier", "pilot-starter"],
    );
    let hw = hardware_id("e2e-short-lived");
    let ring = dev_key_ring();
    for (path, body, status) in [
        (ACTIVATE, activate_body(&license.key, &hw), 201),
        (VALIDATE, validate_body(&license.key, &hw), 200),
    ] {
        let resp = server.post_json(path, &body).expect_status(status);
        let claims = verified_claims(&resp, &[&ring], &hw, unix_now());
        assert_eq!(claims.expires_at - claims.issued_at, 10, "{path}");
        assert_eq!(claims.renew_after - claims.issued_at, 5, "{path}");
        let token = decode_token(resp["token"]["token"].as_str().unwrap());
        let machine = HardwareId::from_hex(&hw).unwrap();
        assert!(verify(&token, &ring, claims.issued_at, &machine).is_ok());
        assert!(verify(&token, &ring, claims.expires_at - 1, &machine).is_ok());
        assert_eq!(
            verify(&token, &ring, claims.expires_at, &machine),
            Err(VerifyError::Expired {
                since: claims.expires_at
            }),
            "{path}"
        );
    }
}

fn write_request(dir: &Path, name: &str, content: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).expect("write the request file");
    path
}

/// Offline activation: request file in, verified token file out, and the
/// activation takes a seat like an online one. Bad request files are
/// refused with the file named and no token written.
#[test]
fn offline_activation_issues_a_verifiable_token_and_takes_a_seat() {
    let dir = data_dir();
    let files = data_dir();
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "airgap@example.com",
            "--tier",
            "pilot-starter",
            "--max-devices",
            "1",
            "--expires",
            "90days",
        ],
    );
    let hw = hardware_id("e2e-air-gapped");
    let request = write_request(
        files.path(),
        "request.json",
        &json!({
            "format": "coditect-activation-request-v1",
            "license_key": license.key,
            "hardware_id": hw,
            "machine_name": "vault",
            "created_at": "2026-01-01T00:00:00Z",
        })
        .to_string(),
    );
    let out = files.path().join("token.json");
    let before = unix_now();
    let done = admin(
        dir.path(),
        &[
            "license",
            "issue-offline",
            "--request",
            request.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ],
    );
    done.assert_success();
    let file: Value = serde_json::from_str(&std::fs::read_to_string(&out).expect("token file"))
        .expect("the token file is JSON");
    assert_eq!(file["format"], "coditect-license-token-v1", "{file}");
    assert_eq!(file["license_id"], license.id, "{file}");
    let token = decode_token(file["token"].as_str().expect("token in the file"));
    let machine = HardwareId::from_hex(&hw).unwrap();
    let claims = verify(&token, &dev_key_ring(), unix_now(), &machine)
        .unwrap_or_else(|e| panic!("the offline token does not verify: {e:?}"));
    assert_eq!(claims.license_id, license.id);
    assert_eq!(claims.hardware_id, machine);
    assert_eq!(claims.tier, "pilot-starter");
    assert_eq!(claims.devices_used, 1);
    assert!(claims.issued_at >= before);
    // 90 days, and good until the license ends (it cannot renew).
    assert!(
        claims.license_expires_at.abs_diff(before + 90 * DAY) <= 120,
        "{claims:?}"
    );
    assert_eq!(claims.expires_at, claims.license_expires_at);
    assert!(
        verify(
            &token,
            &dev_key_ring(),
            unix_now(),
            &HardwareId::from_machine_id("x")
        )
        .is_err()
    );

    // It took the only seat.
    let server = IssuerServer::start(dir.path());
    server
        .post_json(
            ACTIVATE,
            &activate_body(&license.key, &hardware_id("e2e-second-machine")),
        )
        .expect_problem(403, "too_many_activations");
    let same = server
        .post_json(ACTIVATE, &activate_body(&license.key, &hw))
        .expect_status(200);
    assert_eq!(same["license"]["devices_used"], 1);
    drop(server);

    // Bad request files: exit 1, the file named, nothing written.
    let bad_files = [
        ("not-json.json", "this is not json".to_owned()),
        (
            "wrong-format.json",
            json!({
                "format": "coditect-activation-request-v9",
                "license_key": license.key,
                "hardware_id": hw,
            })
            .to_string(),
        ),
        (
            "bad-hardware.json",
            json!({
                "format": "coditect-activation-request-v1",
                "license_key": license.key,
                "hardware_id": "0123-not-hex",
            })
            .to_string(),
        ),
    ];
    for (name, content) in bad_files {
        let request = write_request(files.path(), name, &content);
        let out = files.path().join(format!("{name}.token"));
        let refused = admin(
            dir.path(),
            &[
                "license",
                "issue-offline",
                "--request",
                request.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ],
        );
        assert_eq!(refused.code, Some(1), "{name}:\n{refused}");
        assert!(
            refused.stderr.contains(request.to_str().unwrap()),
            "{name}: the message names the file:\n{refused}"
        );
        assert!(!out.exists(), "{name}: no token file is written");
    }
    assert_eq!(show_license(dir.path(), &license.id)["devices_used"], 1);
}

/// Admin commands refuse bad input with exit code 1 and a message that
/// helps; key files are private and never overwritten; a database from a
/// newer build is refused.
#[test]
fn admin_commands_refuse_bad_input_and_protect_files() {
    let dir = data_dir();

    let unknown = admin(
        dir.path(),
        &[
            "license",
            "create",
            "--email",
            "a@example.com",
            "--tier",
            "enterprise",
        ],
    );
    assert_eq!(unknown.code, Some(1), "{unknown}");
    for tier in ["pilot-starter", "pilot-professional"] {
        assert!(unknown.stderr.contains(tier), "lists {tier}:\n{unknown}");
    }
    let past = admin(
        dir.path(),
        &[
            "license",
            "create",
            "--email",
            "a@example.com",
            "--tier",
            "pilot-starter",
            "--expires",
            "2020-01-01",
        ],
    );
    assert_eq!(past.code, Some(1), "{past}");
    assert!(past.stderr.contains("--expires"), "{past}");
    let listed = admin(dir.path(), &["license", "list", "--json"]);
    listed.assert_success();
    assert_eq!(
        listed.json(),
        json!([]),
        "a refused create leaves no license"
    );

    // keys generate: a 0600 PKCS#8 PEM whose public half is printed.
    let key_file = dir.path().join("k1.pem");
    let key_path = key_file.to_str().unwrap();
    let generated = admin(
        dir.path(),
        &[
            "keys", "generate", "--out", key_path, "--kid", "k1", "--json",
        ],
    );
    generated.assert_success();
    let printed = generated.json();
    assert_eq!(printed["kid"], "k1", "{generated}");
    assert_eq!(printed["jwk"]["kid"], "k1", "{generated}");
    let pem = std::fs::read_to_string(&key_file).expect("the key file");
    use ed25519_dalek::pkcs8::DecodePrivateKey;
    let key = ed25519_dalek::SigningKey::from_pkcs8_pem(&pem).expect("a PKCS#8 Ed25519 PEM");
    let ring = key_ring_from_jwks(&json!({ "keys": [printed["jwk"]] }));
    assert_eq!(
        ring.get(b"k1").map(|k| k.public_key_bytes()),
        Some(key.verifying_key().to_bytes()),
        "the printed JWK is the file's public key"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    }
    assert!(
        !generated.stderr.contains(pem.lines().nth(1).unwrap_or("-")),
        "the private key is not logged"
    );
    let again = admin(
        dir.path(),
        &["keys", "generate", "--out", key_path, "--kid", "k1"],
    );
    assert_eq!(again.code, Some(1), "{again}");
    assert!(again.stderr.contains(key_path), "{again}");
    assert_eq!(
        std::fs::read_to_string(&key_file).unwrap(),
        pem,
        "the existing key is untouched"
    );

    // migrate, then a database from the future.
    let migrated = admin(dir.path(), &["migrate"]);
    migrated.assert_success();
    let db = dir.path().join("issuer.sqlite3");
    rusqlite::Connection::open(&db)
        .unwrap()
        .pragma_update(None, "user_version", 999)
        .unwrap();
    let newer = admin(dir.path(), &["migrate"]);
    assert_eq!(newer.code, Some(1), "{newer}");
    assert!(newer.stderr.contains("newer than this build"), "{newer}");
    let version: u32 = rusqlite::Connection::open(&db)
        .unwrap()
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .unwrap();
    assert_eq!(version, 999, "a newer database is left alone");
}

/// Production mode refuses to start without real secrets, saying which
/// variable is missing, and never prints the secret.
#[test]
fn production_refuses_missing_secrets_and_the_development_key() {
    let dir = data_dir();
    let secret = "e2e-jwt-secret-7c1f0a9e5d3b4c2a8f6e0d1c9b7a5e3f".to_owned();
    let dev_key = coditect_tests::dev_private_pem_path();
    let dev_key = dev_key.to_str().unwrap();
    let prod_key = dir.path().join("prod-e2e.pem");
    admin(
        dir.path(),
        &["keys", "generate", "--out", prod_key.to_str().unwrap()],
    )
    .assert_success();
    assert!(prod_key.is_file(), "keys generate wrote no key");
    let prod_key = prod_key.to_str().unwrap();
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "JWT_SECRET"),
        (&[("JWT_SECRET", &secret)], "SIGNING_KEY_FILE"),
        (
            &[("JWT_SECRET", &secret), ("SIGNING_KEY_FILE", dev_key)],
            "development",
        ),
        (
            &[("JWT_SECRET", &secret), ("SIGNING_KEY_FILE", prod_key)],
            "STRIPE_WEBHOOK_SECRET",
        ),
    ];
    for (env, expected) in cases {
        let mut cmd = issuer_command(dir.path(), env);
        cmd.env("CODITECT_ENV", "production")
            .args(["serve", "--bind", "127.0.0.1:0"]);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        assert!(!out.success(), "started in production with {env:?}:\n{out}");
        assert_eq!(out.code, Some(1), "{out}");
        assert!(out.stderr.contains(expected), "names {expected}:\n{out}");
        assert!(!out.stderr.contains("listening on"), "{out}");
        assert!(
            !out.all_output().contains(&secret),
            "the JWT secret was printed:\n{out}"
        );
    }
    // The same refusal from an admin command that loads the configuration.
    let out = admin_with_env(
        dir.path(),
        &["license", "list"],
        &[("CODITECT_ENV", "production"), ("JWT_SECRET", &secret)],
    );
    assert_eq!(out.code, Some(1), "{out}");
    assert!(!out.all_output().contains(&secret), "{out}");
}

/// The issuer fails closed: reachable from outside (`PORT` set, as on Cloud
/// Run, or a non-loopback `--bind`) without `CODITECT_ENV` it refuses to
/// start, names the variable, and creates no database; said explicitly,
/// development still starts there. Production refuses rate limits as high
/// as the tests' `1000000/sec`.
#[test]
fn an_unconfigured_issuer_reachable_from_outside_refuses_to_start() {
    let dir = data_dir();
    let port = coditect_tests::smtp::free_port().to_string();
    type Start<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
    let outside: [Start<'_>; 2] = [
        (&[("PORT", &port)], &["serve"]),
        (&[], &["serve", "--bind", "0.0.0.0:0"]),
    ];
    for (env, args) in outside {
        let mut cmd = issuer_command(dir.path(), env);
        cmd.args(args);
        let out = run_with_timeout(cmd, Duration::from_secs(10));
        assert_eq!(
            out.code,
            Some(1),
            "started unconfigured with {env:?} {args:?}:\n{out}"
        );
        assert!(
            out.stderr.contains("CODITECT_ENV is not set")
                && out.stderr.contains("set CODITECT_ENV=production"),
            "{out}"
        );
        assert!(!out.stderr.contains("listening on"), "{out}");
        assert!(!out.all_output().contains("DEVELOPMENT key"), "{out}");
        assert!(
            !dir.path().join("issuer.sqlite3").exists(),
            "a refused start created the database"
        );
        assert!(!dir.path().join("jwt-secret").exists(), "{out}");
    }
    // Development said explicitly starts on PORT (the load scripts' way).
    let server = IssuerServer::start_with_args(
        dir.path(),
        &["serve"],
        &[("PORT", &port), ("CODITECT_ENV", "development")],
    );
    assert_eq!(server.get("/readyz").status, 200);
    drop(server);

    // Production with a limit that disables the protection.
    let prod_key = dir.path().join("prod-ceiling.pem");
    admin(
        dir.path(),
        &["keys", "generate", "--out", prod_key.to_str().unwrap()],
    )
    .assert_success();
    let production = [
        ("CODITECT_ENV", "production"),
        ("JWT_SECRET", "production-test-jwt-secret-0123456789abcdef"),
        ("SIGNING_KEY_FILE", prod_key.to_str().unwrap()),
        ("STRIPE_SECRET_KEY", "sk_test_ceiling"),
        ("STRIPE_WEBHOOK_SECRET", "whsec_ceiling"),
        ("STRIPE_PRICE_STARTER_MONTHLY", "price_sm"),
        ("STRIPE_PRICE_STARTER_ANNUAL", "price_sa"),
        ("STRIPE_PRICE_PRO_MONTHLY", "price_pm"),
        ("STRIPE_PRICE_PRO_ANNUAL", "price_pa"),
        ("SMTP_URL", "smtp://127.0.0.1:1"),
        (
            "LICENSE_KEY_PEPPER",
            "production-test-pepper-0123456789abcdef",
        ),
        ("RATE_LIMIT_LOGIN", "1000000/sec"),
    ];
    let mut cmd = issuer_command(dir.path(), &production);
    cmd.args(["serve", "--bind", "127.0.0.1:0"]);
    let out = run_with_timeout(cmd, Duration::from_secs(10));
    assert_eq!(out.code, Some(1), "{out}");
    assert!(out.stderr.contains("RATE_LIMIT_LOGIN"), "{out}");
    assert!(out.stderr.contains("disables the protection"), "{out}");
    assert!(!out.stderr.contains("listening on"), "{out}");
}

/// A platform stop (SIGTERM, as Cloud Run sends) in the middle of a load:
/// the issuer stops taking requests, finishes those in flight, writes its
/// audit queue and exits 0 within Cloud Run's 10 s; every activation it
/// acknowledged is in the database with its audit row.
fn sigterm_under_load_keeps_every_acknowledged_activation_and_its_audit_row(backend: Backend) {
    const THREADS: usize = 4;
    const STOP_AFTER: usize = 60;
    let dir = data_dir();
    let Some(db) = TestDatabase::create(backend, dir.path()) else {
        return;
    };
    let mut server = IssuerServer::start(dir.path());
    let license = create_license(
        dir.path(),
        &[
            "--email",
            "sigterm@example.com",
            "--tier",
            "pilot-professional",
            "--max-devices",
            "100000",
        ],
    );
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let unexpected: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let client = server.client();
            let key = license.key.clone();
            let acknowledged = Arc::clone(&acknowledged);
            let unexpected = Arc::clone(&unexpected);
            std::thread::spawn(move || {
                for i in 0..100_000 {
                    let hw = hardware_id(&format!("sigterm-{t}-{i}"));
                    match client.try_post_json(ACTIVATE, &activate_body(&key, &hw)) {
                        Ok(resp) if resp.status == 201 => {
                            let id = resp.json()["activation"]["id"]
                                .as_str()
                                .unwrap_or_default()
                                .to_owned();
                            acknowledged.lock().unwrap().push(id);
                        }
                        // Refused while stopping, or the listener is gone.
                        Ok(resp) if resp.status == 503 => return,
                        Err(_) => return,
                        Ok(resp) => {
                            unexpected
                                .lock()
                                .unwrap()
                                .push(format!("{}: {}", resp.status, resp.body));
                            return;
                        }
                    }
                }
            })
        })
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    while acknowledged.lock().unwrap().len() < STOP_AFTER {
        assert!(
            Instant::now() < deadline,
            "the load did not start\n{}",
            server.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let log = server.log_handle();
    let stopped = server.terminate(Duration::from_secs(10));
    for t in threads {
        t.join().expect("a load thread panicked");
    }
    let (status, took) = stopped
        .unwrap_or_else(|| panic!("the issuer did not exit within 10 s of SIGTERM\n{}", log()));
    assert!(status.success(), "exit status {status:?}\n{}", log());
    assert!(log().contains("stopped"), "{}", log());
    let unexpected = unexpected.lock().unwrap().clone();
    assert!(unexpected.is_empty(), "{unexpected:?}");
    let acknowledged = acknowledged.lock().unwrap().clone();
    let active: BTreeSet<String> = db
        .rows("SELECT id FROM activations WHERE status = 'active'")
        .iter()
        .map(|r| r["id"].as_str().unwrap_or_default().to_owned())
        .collect();
    let audited: BTreeSet<String> = db
        .rows("SELECT subject_id FROM audit_log WHERE event = 'activate' AND outcome = 'ok'")
        .iter()
        .map(|r| r["subject_id"].as_str().unwrap_or_default().to_owned())
        .collect();
    for id in &acknowledged {
        assert!(
            active.contains(id),
            "acknowledged activation {id} is missing"
        );
        assert!(
            audited.contains(id),
            "acknowledged activation {id} has no audit row"
        );
    }
    eprintln!(
        "SIGTERM after {} acknowledged activations; exited 0 in {took:?}",
        acknowledged.len()
    );
}
