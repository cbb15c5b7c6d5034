//! Interoperability with independent Python implementations (any COSE
//! library must be able to verify a token with the published public key,
//! `docs/ARCHITECTURE.md`): `pycose` and `cwt` verify our tokens, a `pycose` token verifies
//! with `verifier::verify`, and Python's `hmac` gives the same hardware ids.
//!
//! The Python side lives in `tests/python/` (packages pinned in
//! `requirements.txt`). When `python3` or a package is missing the tests print
//! a notice and pass without checking anything, except under CI (the `CI`
//! environment variable is set), where they fail and say what to install.

use std::ffi::OsStr;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

use coditect_tests::{
    DEV_KID, FIXED_NOW, HOUR, dev_jwks_path, dev_key_ring, dev_private_pem_path,
    dev_public_pem_path, dev_signer, sample_claims,
};
use ed25519_dalek::SigningKey;
use serde_json::{Value, json};
use verifier::{Entitlements, HardwareId, LicenseClaims, ProjectLimit, TokenSigner};

const PYTHON: &str = "python3";
/// What the COSE interop scripts import.
const COSE_MODULES: &[&str] = &["cbor2", "pycose", "cwt"];

fn python_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("python")
}

fn in_ci() -> bool {
    coditect_tests::in_ci()
}

fn python_command() -> Command {
    let mut cmd = Command::new(PYTHON);
    // Keep the source tree clean of __pycache__.
    cmd.env("PYTHONDONTWRITEBYTECODE", "1");
    cmd.env("PYTHONIOENCODING", "utf-8");
    cmd
}

/// Whether `python3` runs and can import `modules`. If not: under CI the
/// test fails; elsewhere it prints a notice and the caller returns (skips).
fn python_ready(test: &str, modules: &[&str]) -> bool {
    let probe = if modules.is_empty() {
        "import hashlib, hmac, json".to_owned()
    } else {
        format!("import {}", modules.join(", "))
    };
    let problem = match python_command().arg("-c").arg(&probe).output() {
        Err(e) => format!("cannot run `{PYTHON}`: {e}"),
        Ok(out) if !out.status.success() => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            let reason = stderr.lines().rev().find(|l| !l.trim().is_empty());
            format!(
                "`{PYTHON} -c '{probe}'` failed: {}",
                reason.unwrap_or("(no message)").trim()
            )
        }
        Ok(_) => return true,
    };
    let help = "install Python 3 and `pip install -r tests/python/requirements.txt`";
    assert!(
        !in_ci(),
        "{test}: {problem}\n{help}. (CI is set, so this test fails instead of skipping.)"
    );
    // Written to the real stderr, past libtest's output capture, so that a
    // skip is visible in a normal `cargo test` run.
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: skipping {test}: {problem}\n        {help} to run it."
    );
    false
}

/// Runs `tests/python/<script>` with `args`; `Err` holds its output when it
/// exits non-zero.
fn run_script(script: &str, args: &[&OsStr]) -> Result<(), String> {
    let path = python_dir().join(script);
    let out = python_command()
        .arg(&path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {PYTHON} {}: {e}", path.display()));
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{script} exited with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Runs `verify_rust_token.py` on `token` with the published public key
/// (JWK Set and PEM); `Ok` holds the claims pycose and cwt read.
fn verify_in_python(dir: &Path, name: &str, token: &[u8]) -> Result<Value, String> {
    let token_path = dir.join(format!("{name}.cbor"));
    let out_path = dir.join(format!("{name}.json"));
    std::fs::write(&token_path, token).expect("write token");
    run_script(
        "verify_rust_token.py",
        &[
            token_path.as_os_str(),
            dev_jwks_path().as_os_str(),
            dev_public_pem_path().as_os_str(),
            out_path.as_os_str(),
        ],
    )?;
    Ok(read_json(&out_path))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

fn write_json(path: &Path, value: &Value) {
    std::fs::write(
        path,
        serde_json::to_vec_pretty(value).expect("JSON serialises"),
    )
    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
}

/// The claims in the JSON form the Python scripts read and write (names as
/// in `tests/python/coditect_profile.py`, bytes as lowercase hex, unlimited
/// projects as null).
fn claims_json(c: &LicenseClaims) -> Value {
    let max_projects = match c.entitlements.max_projects {
        ProjectLimit::Limited(n) => json!(n),
        ProjectLimit::Unlimited => Value::Null,
    };
    json!({
        "iss": c.issuer,
        "sub": c.license_id,
        "exp": c.expires_at,
        "nbf": c.not_before,
        "iat": c.issued_at,
        "cti": hex::encode(c.token_id),
        "tier": c.tier,
        "entitlements": {
            "max_projects": max_projects,
            "ai_requests": c.entitlements.ai_requests,
            "max_devices": c.entitlements.max_devices,
        },
        "hardware_id": c.hardware_id.to_hex(),
        "license_exp": c.license_expires_at,
        "renew_after": c.renew_after,
        "organization": c.organization,
        "email": c.email,
        "devices_used": c.devices_used,
    })
}

/// Unix time from the real clock. Only used to build tokens that python's
/// `cwt` (which checks `exp`/`nbf` against the real clock) accepts as
/// currently valid; the Rust verifier is always given a time derived from
/// the token itself.
fn real_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970")
        .as_secs()
}

/// Claims for tokens that are valid right now by the real clock.
fn currently_valid_claims() -> Vec<LicenseClaims> {
    let iat = real_now() - 60;
    let limited = sample_claims(
        iat,
        "4c4c4544-0042-3510-8052-b4c04f4e4b31",
        ProjectLimit::Limited(5),
    );
    let unlimited = LicenseClaims {
        license_id: "lic_01JA0B1C2D3E4F5G6H7J8K9M0N".to_owned(),
        tier: "pilot-enterprise".to_owned(),
        entitlements: Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 250_000,
            max_devices: 25,
        },
        organization: "Großhandel Müller & Söhne KG".to_owned(),
        email: "it-admin@mueller-soehne.example".to_owned(),
        devices_used: 17,
        token_id: [0x5a; 16],
        ..sample_claims(
            iat,
            "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
            ProjectLimit::Unlimited,
        )
    };
    vec![limited, unlimited]
}

#[test]
fn rust_token_verifies_with_pycose_and_cwt() {
    if !python_ready("rust_token_verifies_with_pycose_and_cwt", COSE_MODULES) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let signer = dev_signer();
    for (i, claims) in currently_valid_claims().into_iter().enumerate() {
        let token = signer.sign(&claims).expect("signs");
        // Our own verifier agrees, at a time taken from the token.
        assert_eq!(
            verifier::verify(
                &token,
                &dev_key_ring(),
                claims.issued_at + 60,
                &claims.hardware_id
            ),
            Ok(claims.clone())
        );

        let result = verify_in_python(dir.path(), &format!("rust-{i}"), &token)
            .unwrap_or_else(|e| panic!("python refused the Rust token {i}:\n{e}"));
        let expected = claims_json(&claims);
        for lib in ["pycose", "cwt"] {
            let got = &result[lib];
            // The claims a user would look at first, spelled out...
            assert_eq!(got["sub"], json!(claims.license_id), "{lib}: sub");
            assert_eq!(got["email"], json!(claims.email), "{lib}: email");
            assert_eq!(got["tier"], json!(claims.tier), "{lib}: tier");
            assert_eq!(
                got["hardware_id"],
                json!(claims.hardware_id.to_hex()),
                "{lib}: hardware id"
            );
            // ...and every claim.
            assert_eq!(*got, expected, "{lib} read different claims");
        }
        eprintln!("python verified token {i} with {}", result["versions"]);
    }
}

#[test]
fn python_refuses_a_token_signed_by_another_key() {
    // Control for the test above: the Python side really checks signatures.
    if !python_ready("python_refuses_a_token_signed_by_another_key", COSE_MODULES) {
        return;
    }
    let impostor =
        TokenSigner::new(DEV_KID, SigningKey::from_bytes(&[0x42; 32])).expect("a valid signer");
    let claims = currently_valid_claims().swap_remove(0);
    let token = impostor.sign(&claims).expect("signs");
    assert_eq!(
        verifier::verify(
            &token,
            &dev_key_ring(),
            claims.issued_at + 60,
            &claims.hardware_id
        ),
        Err(verifier::VerifyError::BadSignature)
    );

    let dir = tempfile::tempdir().expect("temp dir");
    let err = verify_in_python(dir.path(), "impostor", &token)
        .expect_err("python must refuse a token signed by another key");
    assert!(
        err.contains("does not verify") || err.contains("VerifyError"),
        "refused for an unexpected reason:\n{err}"
    );
    assert!(
        !dir.path().join("impostor.json").exists(),
        "no claims may be written for a refused token"
    );
}

#[test]
fn cwt_refuses_an_expired_token() {
    // Control: cwt's exp check runs (against the real clock, which is why the
    // tokens above are built around the real time).
    if !python_ready("cwt_refuses_an_expired_token", COSE_MODULES) {
        return;
    }
    let iat = real_now() - 4 * 24 * HOUR;
    let claims = sample_claims(iat, "machine-x", ProjectLimit::Limited(5));
    assert!(
        claims.expires_at < real_now() - HOUR,
        "the token is expired"
    );
    let token = dev_signer().sign(&claims).expect("signs");

    let dir = tempfile::tempdir().expect("temp dir");
    let err = verify_in_python(dir.path(), "expired", &token)
        .expect_err("cwt must refuse an expired token");
    assert!(
        err.contains("expired"),
        "refused for an unexpected reason:\n{err}"
    );
}

#[test]
fn python_token_verifies_with_rust() {
    if !python_ready("python_token_verifies_with_rust", &["cbor2", "pycose"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("temp dir");
    let ring = dev_key_ring();
    let signer = dev_signer();
    let mut cases = vec![
        sample_claims(
            FIXED_NOW,
            "4c4c4544-0042-3510-8052-b4c04f4e4b31",
            ProjectLimit::Limited(5),
        ),
        LicenseClaims {
            organization: "Großhandel Müller & Söhne KG".to_owned(),
            devices_used: 3,
            ..sample_claims(
                FIXED_NOW,
                "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
                ProjectLimit::Unlimited,
            )
        },
    ];
    // Integers that need every CBOR length: 1, 2, 4 and 8 bytes.
    cases.push(LicenseClaims {
        entitlements: Entitlements {
            max_projects: ProjectLimit::Limited(23),
            ai_requests: 24,
            max_devices: u32::MAX,
        },
        devices_used: 65_536,
        license_expires_at: u64::MAX,
        ..sample_claims(FIXED_NOW, "machine-3", ProjectLimit::Limited(23))
    });

    for (i, claims) in cases.into_iter().enumerate() {
        let claims_path = dir.path().join(format!("claims-{i}.json"));
        let token_path = dir.path().join(format!("python-{i}.cbor"));
        write_json(&claims_path, &claims_json(&claims));
        run_script(
            "sign_token.py",
            &[
                dev_private_pem_path().as_os_str(),
                OsStr::new(DEV_KID),
                claims_path.as_os_str(),
                token_path.as_os_str(),
            ],
        )
        .unwrap_or_else(|e| panic!("python could not sign token {i}:\n{e}"));
        let token = std::fs::read(&token_path).expect("python wrote the token");

        let now = FIXED_NOW + HOUR;
        let verified = verifier::verify(&token, &ring, now, &claims.hardware_id)
            .unwrap_or_else(|e| panic!("the python token {i} was refused: {e}"));
        assert_eq!(verified, claims, "claims of the python token {i}");
        assert_eq!(
            verifier::authenticate(&token, &ring)
                .expect("authentic")
                .kid,
            DEV_KID
        );
        // Deterministic encoding and deterministic Ed25519: an independent
        // implementation of the profile gives exactly the bytes we give.
        let ours = signer.sign(&claims).expect("signs");
        assert_eq!(
            hex::encode(&token),
            hex::encode(&ours),
            "python token {i} differs from the Rust token for the same claims"
        );
        // And it is still judged like any other token.
        let elsewhere = HardwareId::from_machine_id("some-other-machine");
        assert_eq!(
            verifier::verify(&token, &ring, now, &elsewhere),
            Err(verifier::VerifyError::HardwareMismatch)
        );
    }
}

#[test]
fn hardware_id_matches_python_hmac() {
    if !python_ready("hardware_id_matches_python_hmac", &[]) {
        return;
    }
    let machine_ids = [
        // SMBIOS UUID, systemd /etc/machine-id, macOS IOPlatformUUID,
        // Windows MachineGuid.
        "4c4c4544-0042-3510-8052-b4c04f4e4b31",
        "0b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e",
        "C02X1234-ABCD-5678-EF90-1234567890AB",
        "{8f2c0e2a-61d4-4b8e-9a3f-5c1d2e3f4a5b}",
        // Longer than the HMAC block, and non-ASCII.
        &"a".repeat(200),
        "machine-ü-测试",
    ];
    let dir = tempfile::tempdir().expect("temp dir");
    let in_path = dir.path().join("machine-ids.json");
    let out_path = dir.path().join("hardware-ids.json");
    write_json(&in_path, &json!(machine_ids));
    run_script(
        "hardware_id.py",
        &[in_path.as_os_str(), out_path.as_os_str()],
    )
    .unwrap_or_else(|e| panic!("python could not compute hardware ids:\n{e}"));
    let from_python = read_json(&out_path);
    let from_python = from_python.as_array().expect("a list");
    assert_eq!(from_python.len(), machine_ids.len());

    for (id, py) in machine_ids.iter().zip(from_python) {
        let ours = HardwareId::from_machine_id(id);
        assert_eq!(ours.to_hex().len(), 64);
        assert_eq!(json!(ours.to_hex()), *py, "hardware id of {id:?}");
        // White space around the id (e.g. /etc/machine-id's newline) is
        // ignored on our side: same id as python's HMAC of the bare id.
        let padded = format!("  {id}\n");
        assert_eq!(json!(HardwareId::from_machine_id(&padded).to_hex()), *py);
    }
    // The reference value of verifier/src/hardware.rs, as a fixed point.
    assert_eq!(
        from_python[0],
        json!("a5fa4ec0ad3ed8520b4194f1b1cbc8f916b2aacecb6b64e651b41f8fb5fb6da7")
    );
}
