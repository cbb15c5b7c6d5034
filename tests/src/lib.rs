//! Shared helpers for the end-to-end tests live here.
//!
//! Everything here works on the development key pair in
//! `keys/development/` (kid `coditect-dev`), whose private half is public:
//! tokens made with it are only ever trusted by test and development builds.

pub mod billing;
pub mod binaries;
pub mod browser;
pub mod cli;
pub mod database;
pub mod fake_github;
pub mod fake_stripe;
pub mod id_token_proxy;
pub mod issuer;
pub mod loopback_server;
pub mod oidc;
pub mod smtp;
pub mod tcp_proxy;
pub mod web_browser;

use std::path::{Path, PathBuf};

use ed25519_dalek::SigningKey;
use ed25519_dalek::pkcs8::DecodePrivateKey;
use verifier::{Entitlements, HardwareId, KeyRing, LicenseClaims, ProjectLimit, TokenSigner};

/// The key id of the development key pair.
pub const DEV_KID: &str = "coditect-dev";

/// A fixed "now" for tests that pass time to the verifier:
/// 2026-01-01T00:00:00Z.
pub const FIXED_NOW: u64 = 1_767_225_600;

/// One hour, one day, in seconds.
pub const HOUR: u64 = 3_600;
/// One day in seconds.
pub const DAY: u64 = 24 * HOUR;

/// Whether this run is CI's: `CI` set to anything but empty, `0` or
/// `false` (CI services set `CI=true` or `CI=1`). The one rule of every
/// test that needs a tool (PostgreSQL, Python packages, an SMTP listener, a
/// browser): under CI a missing tool is a failure, elsewhere a loud skip
/// ([`missing_tool`]).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false" | "FALSE" | "False"))
}

/// A tool `test` needs is missing (`problem`; `help` says how to get it):
/// under CI ([`in_ci`]) the test fails here; elsewhere a notice goes past
/// libtest's output capture and the caller skips the test (returns).
#[track_caller]
pub fn missing_tool(test: &str, problem: &str, help: &str) {
    assert!(
        !in_ci(),
        "{test}: {problem}\n{help}. (CI is set, so this test fails instead of skipping.)"
    );
    use std::io::Write as _;
    let _ = writeln!(
        std::io::stderr(),
        "NOTICE: skipping {test}: {problem}\n        {help} to run it."
    );
}

/// The workspace root (the parent of this package).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
        .to_path_buf()
}

/// A file of the workspace, by its path relative to the root.
pub fn repo_file(relative: &str) -> PathBuf {
    repo_root().join(relative)
}

/// Reads a file of the workspace as UTF-8, with a clear message on failure.
pub fn read_repo_file(relative: &str) -> String {
    let path = repo_file(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Path of the development private key (PKCS#8 PEM).
pub fn dev_private_pem_path() -> PathBuf {
    repo_file("keys/development/coditect-dev.private.pem")
}

/// Path of the development public key (SPKI PEM).
pub fn dev_public_pem_path() -> PathBuf {
    repo_file("keys/development/coditect-dev.public.pem")
}

/// Path of the development JWK Set (public key only).
pub fn dev_jwks_path() -> PathBuf {
    repo_file("keys/development/coditect-dev.jwks.json")
}

/// The development signing key, loaded from its PKCS#8 PEM file.
pub fn dev_signing_key() -> SigningKey {
    let pem = read_repo_file("keys/development/coditect-dev.private.pem");
    SigningKey::from_pkcs8_pem(&pem).expect("the development key is a PKCS#8 Ed25519 PEM")
}

/// A token signer with the development key and kid `coditect-dev`.
pub fn dev_signer() -> TokenSigner {
    TokenSigner::new(DEV_KID, dev_signing_key()).expect("the development key is a valid signer")
}

/// A key ring that trusts only the development key.
pub fn dev_key_ring() -> KeyRing {
    let public = dev_signing_key().verifying_key().to_bytes();
    KeyRing::new()
        .with_key(DEV_KID, &public)
        .expect("the development public key is acceptable to a key ring")
}

/// Realistic claims of a token issued at `iat` for the machine whose id is
/// `machine_id`: valid 72 h, renewal due after 24 h, license valid a year.
pub fn sample_claims(iat: u64, machine_id: &str, max_projects: ProjectLimit) -> LicenseClaims {
    LicenseClaims {
        issuer: "https://licenses.coditect.ai".to_owned(),
        license_id: "lic_01J9Z3QX8M4V7K2N5P6R8T0W1Y".to_owned(),
        expires_at: iat + 72 * HOUR,
        not_before: iat,
        issued_at: iat,
        token_id: *b"\x8f\x12\x04\xa7\x3c\xe9\x55\x01\xbe\x77\x60\x0d\x2a\x91\xc4\x3e",
        tier: "pilot-professional".to_owned(),
        entitlements: Entitlements {
            max_projects,
            ai_requests: 10_000,
            max_devices: 3,
        },
        hardware_id: HardwareId::from_machine_id(machine_id),
        license_expires_at: iat + 365 * DAY,
        renew_after: iat + DAY,
        organization: "Acme Robotics GmbH".to_owned(),
        email: "jane.doe@acme-robotics.example".to_owned(),
        devices_used: 1,
    }
}
