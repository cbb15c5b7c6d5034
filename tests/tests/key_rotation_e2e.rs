//! A signing-key rotation without downtime, as `keys/README.md` describes
//! it, with the real binaries: the next key is published first (and ships
//! in a CLI release), then the issuer instances switch to it one by one.
//!
//! Two issuer instances share one PostgreSQL database mid-rollout: one
//! still signs with the old key (here the development key, which the
//! test's CLI build trusts), one with the new key; both publish both. A
//! current CLI (its compiled-in set: both keys, modelled here by the key
//! ring the next release would compile in from `/api/v1/keys`) accepts
//! every token either instance signs; tokens signed before the switch keep
//! verifying until they expire; a CLI that trusts only the old key is told
//! to update at renewal and keeps working with its stored token meanwhile.

use coditect_tests::cli::Cli;
use coditect_tests::database::{Backend, TestDatabase};
use coditect_tests::issuer::{
    IssuerServer, admin, create_license, decode_token, hardware_id, key_ring_from_jwks, unix_now,
};
use coditect_tests::{DEV_KID, dev_key_ring};
use serde_json::{Value, json};
use verifier::{KeyRing, VerifyError, verify};

const ACTIVATE: &str = "/api/v1/licenses/activate";
const VALIDATE: &str = "/api/v1/licenses/validate";
const NEXT_KID: &str = "coditect-next";

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_owned())
        .collect()
}

/// The kid a token was signed with (read with a ring that knows both).
fn kid_of(body: &Value, ring: &KeyRing) -> String {
    let token = decode_token(body["token"]["token"].as_str().unwrap());
    verifier::authenticate(&token, ring).unwrap().kid
}

fn check(body: &Value, ring: &KeyRing, hw: &str) -> Result<(), VerifyError> {
    let token = decode_token(body["token"]["token"].as_str().unwrap());
    verify(&token, ring, unix_now(), &hardware_id_of(hw)).map(|_| ())
}

fn hardware_id_of(hex: &str) -> verifier::HardwareId {
    verifier::HardwareId::from_hex(hex).unwrap()
}

#[test]
fn a_key_rotation_mid_rollout_never_gives_a_current_cli_a_token_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let Some(_db) = TestDatabase::create(Backend::Postgres, dir.path()) else {
        return;
    };
    // The next key, made on the operator's machine; its public JWK is
    // published (and committed to keys/trusted.jwks.json for the next CLI
    // release) before any instance signs with it.
    let next_pem = dir.path().join(format!("{NEXT_KID}.pem"));
    let made = admin(
        dir.path(),
        &[
            "keys",
            "generate",
            "--kid",
            NEXT_KID,
            "--out",
            next_pem.to_str().unwrap(),
            "--json",
        ],
    );
    made.assert_success();
    let next_jwk = made.json()["jwk"].clone();
    assert_eq!(next_jwk["kid"], NEXT_KID, "{made}");
    let old_jwks: Value = serde_json::from_str(&coditect_tests::read_repo_file(
        "keys/development/coditect-dev.jwks.json",
    ))
    .unwrap();
    let publish_next = dir.path().join("publish-next.jwks.json");
    std::fs::write(&publish_next, json!({"keys": [next_jwk]}).to_string()).unwrap();
    let publish_old = dir.path().join("publish-old.jwks.json");
    std::fs::write(&publish_old, old_jwks.to_string()).unwrap();

    // Instance A: not switched yet. Instance B: switched.
    let a = IssuerServer::start_with_env(
        dir.path(),
        &[("PUBLISHED_KEYS_FILE", publish_next.to_str().unwrap())],
    );
    let b = IssuerServer::start_with_env(
        dir.path(),
        &[
            ("SIGNING_KEY_FILE", next_pem.to_str().unwrap()),
            ("PUBLISHED_KEYS_FILE", publish_old.to_str().unwrap()),
        ],
    );
    let keys_a = a.get("/api/v1/keys").expect_status(200);
    let keys_b = b.get("/api/v1/keys").expect_status(200);
    assert_eq!(kids(&keys_a), [DEV_KID, NEXT_KID], "{keys_a}");
    assert_eq!(kids(&keys_b), [NEXT_KID, DEV_KID], "{keys_b}");
    // The next CLI release trusts what is published; the current one
    // (the test build of the CLI) only the old key.
    let current = key_ring_from_jwks(&keys_b);
    let old_only = dev_key_ring();

    let license = create_license(
        dir.path(),
        &[
            "--email",
            "rotation@example.com",
            "--tier",
            "pilot-professional",
        ],
    );
    let hw = hardware_id("rotating-machine");
    let body = json!({"license_key": license.key, "hardware_id": hw});
    let before = a.post_json(ACTIVATE, &body).expect_status(201);
    assert_eq!(kid_of(&before, &current), DEV_KID);
    check(&before, &old_only, &hw).unwrap();
    check(&before, &current, &hw).unwrap();

    // Renewals spread over both instances mid-rollout: every token is one
    // the current CLI accepts, whichever instance signed it.
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..12 {
        let server = if i % 2 == 0 { &a } else { &b };
        let renewed = server.post_json(VALIDATE, &body).expect_status(200);
        check(&renewed, &current, &hw)
            .unwrap_or_else(|e| panic!("renewal {i} refused by the current CLI: {e}"));
        seen.insert(kid_of(&renewed, &current));
    }
    assert_eq!(seen.len(), 2, "both keys signed: {seen:?}");

    // After the switch, the old key's tokens still verify until they
    // expire; the new key's tokens need the new release.
    let after = b.post_json(VALIDATE, &body).expect_status(200);
    assert_eq!(kid_of(&after, &current), NEXT_KID);
    check(&before, &old_only, &hw).unwrap();
    assert!(matches!(
        check(&after, &old_only, &hw),
        Err(VerifyError::UnknownKey { .. })
    ));

    // The CLI that trusts only the old key: activated on A, it is told to
    // update when it renews on B, and its stored license keeps working.
    let cli = Cli::new().machine("rotation-cli");
    cli.run(&["activate", &license.key, "--server", a.base_url()])
        .assert_success();
    let out = cli.run(&["--json", "license", "renew", "--server", b.base_url()]);
    assert_eq!(out.code, Some(1), "{out}");
    let err = &out.json()["error"];
    assert_eq!(err["code"], "update_required", "{out}");
    assert!(err["message"].as_str().unwrap().contains(NEXT_KID), "{out}");
    assert!(
        err["hint"].as_str().unwrap().contains("update coditect"),
        "{out}"
    );
    let out = cli.run(&["license", "renew", "--server", b.base_url()]);
    assert!(out.stderr.contains("update coditect"), "{out}");
    let out = cli.run(&["license", "status"]);
    out.assert_success();
    assert!(out.stdout.contains("Active"), "{out}");
}
