//! Cost of verifying a license token against a bare Ed25519 signature check.
//!
//! Run with `cargo bench -p coditect-verifier --features sign --bench verify`.
//!
//! Group `verify` holds the figures that matter:
//! - `verify/token`: `verifier::verify` of a typical token (all checks);
//! - `verify/bare_ed25519`: `VerifyingKey::verify_strict` of a message as long
//!   as the token, the floor no token format can go under;
//! - `verify/sign`: `TokenSigner::sign` of the same claims, for reference.
//!
//! The target is `verify/token` ≤ 1.2 × `verify/bare_ed25519`.
//!
//! Group `stages` splits `verify/token` to show where time beyond the
//! signature goes:
//! - `stages/parse_headers`: structure, header profile and key lookup only
//!   (`authenticate` with a ring that lacks the token's kid stops right there);
//! - `stages/cose_sign1`: `verify_cose_sign1`, i.e. parse + Sig_structure +
//!   signature, but no claims (it also decompresses the public key, which
//!   `verify` does not: the key ring holds it decompressed);
//! - `stages/ed25519_tbs`: `verify_strict` of the exact Sig_structure bytes;
//! - `stages/claims_cbor`: strict decoding of the claims payload as the
//!   verifier does it (ciborium decode, duplicate-key walk skipped, re-encode,
//!   compare).

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use verifier::ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use verifier::{
    EXTERNAL_AAD, Entitlements, HardwareId, KeyRing, LicenseClaims, ProjectLimit, TokenSigner,
    VerifyError,
};

const KID: &str = "prod-2026.1";
const SEED: [u8; 32] = [7; 32];
/// 2026-01-01T00:00:00Z.
const ISSUED_AT: u64 = 1_767_225_600;
const DAY: u64 = 86_400;
const MACHINE_ID: &str = "4c4c4544-0042-3510-8052-b4c04f4e4b31";

fn typical_claims() -> LicenseClaims {
    LicenseClaims {
        issuer: "coditect".to_owned(),
        license_id: "0b6f3c1e-8a4d-4f7b-9c2e-5d1a7e3f9b40".to_owned(),
        expires_at: ISSUED_AT + 30 * DAY,
        not_before: ISSUED_AT,
        issued_at: ISSUED_AT,
        token_id: [
            0x3d, 0x91, 0x5e, 0x02, 0xa7, 0x4c, 0x18, 0xf6, 0x6b, 0x2e, 0x90, 0xd4, 0x71, 0x0c,
            0xbe, 0x58,
        ],
        tier: "pilot-professional".to_owned(),
        entitlements: Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 1000,
            max_devices: 3,
        },
        hardware_id: HardwareId::from_machine_id(MACHINE_ID),
        license_expires_at: ISSUED_AT + 365 * DAY,
        renew_after: ISSUED_AT + 23 * DAY,
        organization: "Acme Robotics Europe".to_owned(),
        email: "jane.doe@acme-lab.io".to_owned(),
        devices_used: 1,
    }
}

/// The Sig_structure the verifier checks, built independently of the crate:
/// `["Signature1", protected, external_aad, payload]`.
fn sig_structure(token: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    use ciborium::value::Value;
    let value: Value = ciborium::de::from_reader(token).unwrap();
    let Value::Tag(18, inner) = value else {
        panic!("not a COSE_Sign1")
    };
    let Value::Array(items) = *inner else {
        panic!("not an array")
    };
    let [protected, _unprotected, payload, signature] = <[Value; 4]>::try_from(items).unwrap();
    let (Value::Bytes(protected), Value::Bytes(payload), Value::Bytes(signature)) =
        (protected, payload, signature)
    else {
        panic!("unexpected COSE_Sign1 layout")
    };
    let tbs = Value::Array(vec![
        Value::Text("Signature1".to_owned()),
        Value::Bytes(protected),
        Value::Bytes(EXTERNAL_AAD.to_vec()),
        Value::Bytes(payload.clone()),
    ]);
    let mut out = Vec::new();
    ciborium::ser::into_writer(&tbs, &mut out).unwrap();
    (out, payload, signature)
}

fn benches(c: &mut Criterion) {
    let key = SigningKey::from_bytes(&SEED);
    let public = key.verifying_key().to_bytes();
    let signer = TokenSigner::new(KID, key.clone()).unwrap();
    let ring = KeyRing::new().with_key(KID, &public).unwrap();
    let hw = HardwareId::from_machine_id(MACHINE_ID);
    let now = ISSUED_AT + 3600;
    let claims = typical_claims();
    let token = signer.sign(&claims).unwrap();
    assert_eq!(
        verifier::verify(&token, &ring, now, &hw).unwrap(),
        claims,
        "the benchmark token must verify"
    );

    // The baseline: a message as long as the token, signed by the same key.
    let message: Vec<u8> = (0..token.len()).map(|i| (i % 251) as u8).collect();
    let message_sig: Signature = key.sign(&message);
    let vk: VerifyingKey = key.verifying_key();
    vk.verify_strict(&message, &message_sig).unwrap();

    let (tbs, payload, token_sig) = sig_structure(&token);
    let token_sig = Signature::from_slice(&token_sig).unwrap();
    vk.verify_strict(&tbs, &token_sig).unwrap();
    let other_ring = KeyRing::new().with_key("other", &public).unwrap();
    assert!(matches!(
        verifier::authenticate(&token, &other_ring),
        Err(VerifyError::UnknownKey { .. })
    ));

    eprintln!(
        "token: {} bytes (claims payload {} bytes, Sig_structure {} bytes)",
        token.len(),
        payload.len(),
        tbs.len()
    );

    let mut group = c.benchmark_group("verify");
    group.bench_function("token", |b| {
        b.iter(|| verifier::verify(black_box(&token), black_box(&ring), now, black_box(&hw)))
    });
    group.bench_function("bare_ed25519", |b| {
        b.iter(|| black_box(&vk).verify_strict(black_box(&message), black_box(&message_sig)))
    });
    group.bench_function("sign", |b| b.iter(|| signer.sign(black_box(&claims))));
    group.finish();

    let mut group = c.benchmark_group("stages");
    group.bench_function("parse_headers", |b| {
        b.iter(|| verifier::authenticate(black_box(&token), black_box(&other_ring)))
    });
    group.bench_function("cose_sign1", |b| {
        b.iter(|| verifier::verify_cose_sign1(black_box(&token), black_box(&public), EXTERNAL_AAD))
    });
    group.bench_function("ed25519_tbs", |b| {
        b.iter(|| black_box(&vk).verify_strict(black_box(&tbs), black_box(&token_sig)))
    });
    group.bench_function("claims_cbor", |b| {
        b.iter(|| {
            let bytes = black_box(payload.as_slice());
            let mut rest = bytes;
            let value: ciborium::value::Value = ciborium::de::from_reader(&mut rest).unwrap();
            let mut again = Vec::with_capacity(bytes.len());
            ciborium::ser::into_writer(&value, &mut again).unwrap();
            assert_eq!(again, bytes);
            value
        })
    });
    group.finish();
}

criterion_group!(benches_group, benches);
criterion_main!(benches_group);
