//! The license token: round trip, exhaustive tampering, and one test per
//! rejection reason.

use ciborium::value::{Integer, Value};
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use verifier::{
    EXTERNAL_AAD, Entitlements, HardwareId, KeyRing, LicenseClaims, MAX_TOKEN_LEN, Malformed,
    ProjectLimit, RenewalState, TIME_SKEW, TokenSigner, VerifyError, authenticate, check_clock,
    renewal_state, verify,
};

const KID: &str = "test-key-1";
/// 2026-12-03T00:00:00Z.
const NOW: u64 = 1_796_256_000;
const HOUR: u64 = 3600;

fn signing_key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

fn signer() -> TokenSigner {
    TokenSigner::new(KID, signing_key()).unwrap()
}

fn ring() -> KeyRing {
    KeyRing::new()
        .with_key(KID, &signing_key().verifying_key().to_bytes())
        .unwrap()
}

fn machine() -> HardwareId {
    HardwareId::from_machine_id("0f5e3c1a9b7d4e2f8a6c0b1d3e5f7a9c")
}

fn claims() -> LicenseClaims {
    LicenseClaims {
        issuer: "coditect".into(),
        license_id: "5d1c7a52-3f7e-4a57-9a1e-2b0c8f6d4e31".into(),
        expires_at: NOW + 72 * HOUR,
        not_before: NOW,
        issued_at: NOW,
        token_id: [0x42; 16],
        tier: "pilot-professional".into(),
        entitlements: Entitlements {
            max_projects: ProjectLimit::Unlimited,
            ai_requests: 1000,
            max_devices: 3,
        },
        hardware_id: machine(),
        license_expires_at: NOW + 90 * 24 * HOUR,
        renew_after: NOW + 24 * HOUR,
        organization: "Acme Robotics Ltd".into(),
        email: "hal@acme-robotics.io".into(),
        devices_used: 1,
    }
}

fn token() -> Vec<u8> {
    signer().sign(&claims()).unwrap()
}

// ---------------------------------------------------------------------------
// Building tokens by hand, to produce each kind of bad token with a valid
// signature (so the test shows the profile check, not the signature, refuses it).

fn int(i: i64) -> Value {
    Value::Integer(Integer::from(i))
}

fn cbor(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(v, &mut out).unwrap();
    out
}

fn good_protected() -> Vec<u8> {
    cbor(&Value::Map(vec![
        (int(1), int(-8)),
        (int(4), Value::Bytes(KID.as_bytes().to_vec())),
    ]))
}

fn payload() -> Vec<u8> {
    let sign1: Value = ciborium::de::from_reader(token().as_slice()).unwrap();
    let Value::Tag(18, inner) = sign1 else {
        panic!()
    };
    let Value::Array(items) = *inner else {
        panic!()
    };
    items[2].as_bytes().unwrap().clone()
}

fn payload_value() -> Value {
    ciborium::de::from_reader(payload().as_slice()).unwrap()
}

struct Forge {
    protected: Vec<u8>,
    unprotected: Value,
    payload: Option<Vec<u8>>,
    aad: Vec<u8>,
    key: SigningKey,
    tag: u64,
}

impl Forge {
    fn new() -> Self {
        Forge {
            protected: good_protected(),
            unprotected: Value::Map(vec![]),
            payload: Some(payload()),
            aad: EXTERNAL_AAD.to_vec(),
            key: signing_key(),
            tag: 18,
        }
    }

    fn build(&self) -> Vec<u8> {
        let tbs = cbor(&Value::Array(vec![
            Value::Text("Signature1".into()),
            Value::Bytes(self.protected.clone()),
            Value::Bytes(self.aad.clone()),
            Value::Bytes(self.payload.clone().unwrap_or_default()),
        ]));
        let sig = self.key.sign(&tbs).to_bytes().to_vec();
        cbor(&Value::Tag(
            self.tag,
            Box::new(Value::Array(vec![
                Value::Bytes(self.protected.clone()),
                self.unprotected.clone(),
                self.payload.clone().map_or(Value::Null, Value::Bytes),
                Value::Bytes(sig),
            ])),
        ))
    }
}

fn check(token: &[u8]) -> Result<LicenseClaims, VerifyError> {
    verify(token, &ring(), NOW + HOUR, &machine())
}

fn malformed(m: Malformed) -> Result<LicenseClaims, VerifyError> {
    Err(VerifyError::Malformed(m))
}

// ---------------------------------------------------------------------------
// The good path.

#[test]
fn a_good_token_verifies_to_its_claims() {
    assert_eq!(check(&token()), Ok(claims()));
    let verified = authenticate(&token(), &ring()).unwrap();
    assert_eq!(verified.kid, KID);
}

#[test]
fn the_forge_reproduces_the_signer_exactly() {
    // Guards the hand-built tokens below: with nothing changed they are the
    // issuer's own bytes.
    assert_eq!(Forge::new().build(), token());
}

#[test]
fn encoding_is_deterministic() {
    assert_eq!(token(), token());
    let mut other = claims();
    other.devices_used = 2;
    assert_ne!(signer().sign(&other).unwrap(), token());
}

#[test]
fn typical_token_size_stays_small() {
    // 87 bytes of COSE framing and signature, 45 bytes of private-use claim
    // keys (each below -65536 costs 5 bytes), 36 of UUID license id, 32 of
    // hardware binding. A regression guard: growth here is a format change.
    let len = token().len();
    assert!(len <= 330, "typical token is {len} bytes");
}

#[test]
fn an_outer_cwt_tag_is_accepted() {
    let mut wrapped = vec![0xd8, 61];
    wrapped.extend(token());
    assert_eq!(check(&wrapped), Ok(claims()));
}

#[test]
fn limited_projects_round_trip() {
    let mut c = claims();
    c.entitlements.max_projects = ProjectLimit::Limited(3);
    let t = signer().sign(&c).unwrap();
    assert_eq!(check(&t), Ok(c));
}

// ---------------------------------------------------------------------------
// Tampering: every byte, every truncation, random input.

#[test]
fn every_single_byte_change_is_rejected() {
    let good = token();
    let ring = ring();
    for pos in 0..good.len() {
        for value in 0..=255u8 {
            if value == good[pos] {
                continue;
            }
            let mut bad = good.clone();
            bad[pos] = value;
            let result = verify(&bad, &ring, NOW + HOUR, &machine());
            assert!(
                result.is_err(),
                "byte {pos} set to {value:#04x} was accepted"
            );
        }
    }
}

#[test]
fn every_truncation_is_rejected() {
    let good = token();
    for len in 0..good.len() {
        assert!(check(&good[..len]).is_err(), "truncated to {len} accepted");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn random_bytes_never_verify_and_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        prop_assert!(check(&bytes).is_err());
    }

    #[test]
    fn random_claims_round_trip(
        issuer in "[a-z.:/]{0,40}",
        license_id in "[0-9a-f-]{0,36}",
        iat in 0u64..=u64::MAX / 4,
        lifetime in 1u64..=1_000_000,
        license_extra in 1u64..=100_000_000,
        token_id in any::<[u8; 16]>(),
        tier in "\\PC{0,30}",
        max_projects in proptest::option::of(any::<u32>()),
        ai_requests in any::<u32>(),
        max_devices in any::<u32>(),
        machine_id in "\\PC{1,40}",
        organization in "\\PC{0,60}",
        email in "[a-z0-9.+]{1,30}@[a-z]{1,20}\\.[a-z]{2,6}",
        devices_used in any::<u32>(),
    ) {
        let c = LicenseClaims {
            issuer,
            license_id,
            expires_at: iat + lifetime,
            not_before: iat,
            issued_at: iat,
            token_id,
            tier,
            entitlements: Entitlements {
                max_projects: max_projects.map_or(ProjectLimit::Unlimited, ProjectLimit::Limited),
                ai_requests,
                max_devices,
            },
            hardware_id: HardwareId::from_machine_id(&machine_id),
            license_expires_at: iat + lifetime + license_extra,
            renew_after: iat + lifetime / 3,
            organization,
            email,
            devices_used,
        };
        let t = signer().sign(&c).unwrap();
        let got = verify(&t, &ring(), iat, &c.hardware_id);
        prop_assert_eq!(got, Ok(c));
    }
}

// ---------------------------------------------------------------------------
// One test per rejection reason.

#[test]
fn alg_in_the_unprotected_header_is_rejected() {
    let mut f = Forge::new();
    f.unprotected = Value::Map(vec![(int(1), int(-8))]);
    assert_eq!(check(&f.build()), malformed(Malformed::UnprotectedHeader));
}

#[test]
fn kid_in_the_unprotected_header_is_rejected() {
    let mut f = Forge::new();
    f.unprotected = Value::Map(vec![(int(4), Value::Bytes(KID.as_bytes().to_vec()))]);
    assert_eq!(check(&f.build()), malformed(Malformed::UnprotectedHeader));
}

#[test]
fn alg_other_than_eddsa_is_rejected() {
    for alg in [-7, -35, -36, -37, 5, 0] {
        let mut f = Forge::new();
        f.protected = cbor(&Value::Map(vec![
            (int(1), int(alg)),
            (int(4), Value::Bytes(KID.as_bytes().to_vec())),
        ]));
        assert_eq!(
            check(&f.build()),
            Err(VerifyError::UnsupportedAlgorithm),
            "alg {alg}"
        );
    }
    let mut f = Forge::new();
    f.protected = cbor(&Value::Map(vec![(
        int(4),
        Value::Bytes(KID.as_bytes().to_vec()),
    )]));
    assert_eq!(
        check(&f.build()),
        Err(VerifyError::UnsupportedAlgorithm),
        "no alg"
    );
}

#[test]
fn extra_protected_header_fields_are_rejected() {
    let mut f = Forge::new();
    f.protected = cbor(&Value::Map(vec![
        (int(1), int(-8)),
        (int(3), int(0)),
        (int(4), Value::Bytes(KID.as_bytes().to_vec())),
    ]));
    assert_eq!(check(&f.build()), malformed(Malformed::ProtectedHeader));
    // Right fields, other order.
    f.protected = cbor(&Value::Map(vec![
        (int(4), Value::Bytes(KID.as_bytes().to_vec())),
        (int(1), int(-8)),
    ]));
    assert_eq!(check(&f.build()), malformed(Malformed::ProtectedHeader));
}

#[test]
fn detached_or_missing_payload_is_rejected() {
    let mut f = Forge::new();
    f.payload = None;
    assert_eq!(check(&f.build()), malformed(Malformed::DetachedPayload));

    // A three-element array: no payload slot at all.
    let Value::Tag(18, inner) = ciborium::de::from_reader(token().as_slice()).unwrap() else {
        panic!()
    };
    let Value::Array(mut items) = *inner else {
        panic!()
    };
    items.remove(2);
    let bad = cbor(&Value::Tag(18, Box::new(Value::Array(items))));
    assert_eq!(check(&bad), malformed(Malformed::NotSign1));
}

#[test]
fn trailing_bytes_are_rejected() {
    for tail in [&[0x00][..], &[0xa0], &token()[..]] {
        let mut bad = token();
        bad.extend_from_slice(tail);
        assert_eq!(check(&bad), malformed(Malformed::TrailingBytes));
    }
}

#[test]
fn duplicate_map_keys_are_rejected() {
    // In the claims, correctly signed.
    let Value::Map(mut entries) = payload_value() else {
        panic!()
    };
    let first = entries[0].clone();
    entries.insert(1, first);
    let mut f = Forge::new();
    f.payload = Some(cbor(&Value::Map(entries)));
    assert_eq!(check(&f.build()), malformed(Malformed::DuplicateMapKey));

    // In the protected header.
    let mut f = Forge::new();
    f.protected = cbor(&Value::Map(vec![
        (int(1), int(-8)),
        (int(1), int(-8)),
        (int(4), Value::Bytes(KID.as_bytes().to_vec())),
    ]));
    assert_eq!(check(&f.build()), malformed(Malformed::DuplicateMapKey));
}

#[test]
fn unknown_kid_is_rejected() {
    let other = TokenSigner::new("prod-2099", signing_key()).unwrap();
    let t = other.sign(&claims()).unwrap();
    assert_eq!(
        check(&t),
        Err(VerifyError::UnknownKey {
            kid: "prod-2099".into()
        })
    );
}

#[test]
fn other_external_aad_is_rejected() {
    for aad in [&b""[..], b"coditect-license-v2", b"coditect-license-v1\0"] {
        let mut f = Forge::new();
        f.aad = aad.to_vec();
        assert_eq!(check(&f.build()), Err(VerifyError::BadSignature));
    }
}

#[test]
fn mac0_and_encrypt0_tags_are_rejected() {
    for tag in [16u64, 17, 96, 97, 98, 61] {
        let mut f = Forge::new();
        f.tag = tag;
        assert_eq!(
            check(&f.build()),
            malformed(Malformed::WrongTag),
            "tag {tag}"
        );
    }
    // And an untagged array.
    let untagged = &token()[1..];
    assert_eq!(check(untagged), malformed(Malformed::WrongTag));
}

#[test]
fn token_signed_by_an_untrusted_key_is_rejected() {
    // Same kid, different key: a forger who knows the kid but not the key.
    let mut f = Forge::new();
    f.key = SigningKey::from_bytes(&[9u8; 32]);
    assert_eq!(check(&f.build()), Err(VerifyError::BadSignature));
    // The empty ring trusts nothing.
    assert_eq!(
        verify(&token(), &KeyRing::new(), NOW, &machine()),
        Err(VerifyError::UnknownKey { kid: KID.into() })
    );
}

#[test]
fn expired_token_is_rejected_with_since_when() {
    let exp = claims().expires_at;
    assert_eq!(
        verify(&token(), &ring(), exp, &machine()),
        Err(VerifyError::Expired { since: exp })
    );
    assert!(verify(&token(), &ring(), exp - 1, &machine()).is_ok());
}

#[test]
fn not_yet_valid_token_is_rejected() {
    let nbf = claims().not_before;
    assert_eq!(
        verify(&token(), &ring(), nbf - TIME_SKEW - 1, &machine()),
        Err(VerifyError::NotYetValid { valid_from: nbf })
    );
    // Within the skew it is fine.
    assert!(verify(&token(), &ring(), nbf - TIME_SKEW, &machine()).is_ok());
}

#[test]
fn token_for_another_machine_is_rejected() {
    let other = HardwareId::from_machine_id("another-machine");
    assert_eq!(
        verify(&token(), &ring(), NOW, &other),
        Err(VerifyError::HardwareMismatch)
    );
}

#[test]
fn expired_license_is_rejected_even_with_a_live_token() {
    let mut c = claims();
    c.license_expires_at = NOW + 10 * HOUR;
    let t = signer().sign(&c).unwrap();
    assert_eq!(
        verify(&t, &ring(), NOW + 10 * HOUR, &machine()),
        Err(VerifyError::LicenseExpired {
            since: NOW + 10 * HOUR
        })
    );
}

#[test]
fn clock_rollback_is_rejected() {
    let high_water = NOW + 48 * HOUR;
    assert_eq!(
        check_clock(NOW, high_water, 300),
        Err(VerifyError::ClockRolledBack {
            behind_by: 48 * HOUR
        })
    );
    assert_eq!(check_clock(high_water - 300, high_water, 300), Ok(()));
}

#[test]
fn oversized_token_is_rejected_before_parsing() {
    let mut big = token();
    big.resize(MAX_TOKEN_LEN + 1, 0);
    assert_eq!(check(&big), malformed(Malformed::TooLarge));
    // A long text claim makes the signer refuse, too.
    let mut c = claims();
    c.email = "x".repeat(256);
    assert!(signer().sign(&c).is_err());
}

#[test]
fn non_canonical_encodings_are_rejected() {
    // The devices_used claim (last in the map) re-encoded as a two-byte integer.
    let mut p = payload();
    let last = p.pop().unwrap();
    assert!(last < 24);
    p.extend([0x18, last]);
    let mut f = Forge::new();
    f.payload = Some(p);
    assert_eq!(check(&f.build()), malformed(Malformed::NonCanonical));

    // The whole token with an indefinite-length outer array.
    let good = token();
    assert_eq!(good[1], 0x84);
    let mut indefinite = vec![0xd2, 0x9f];
    indefinite.extend_from_slice(&good[2..]);
    indefinite.push(0xff);
    assert_eq!(check(&indefinite), malformed(Malformed::NonCanonical));
}

#[test]
fn claims_out_of_order_or_unknown_are_rejected() {
    let Value::Map(mut entries) = payload_value() else {
        panic!()
    };
    entries.swap(0, 1);
    let mut f = Forge::new();
    f.payload = Some(cbor(&Value::Map(entries)));
    assert_eq!(check(&f.build()), malformed(Malformed::Claim("iss")));

    let Value::Map(mut entries) = payload_value() else {
        panic!()
    };
    entries.push((int(-70000), Value::Bool(true)));
    let mut f = Forge::new();
    f.payload = Some(cbor(&Value::Map(entries)));
    assert_eq!(
        check(&f.build()),
        malformed(Malformed::Claim("unknown claim"))
    );

    let Value::Map(mut entries) = payload_value() else {
        panic!()
    };
    entries[2].1 = Value::Text("tomorrow".into());
    let mut f = Forge::new();
    f.payload = Some(cbor(&Value::Map(entries)));
    assert_eq!(check(&f.build()), malformed(Malformed::Claim("exp")));

    let Value::Map(mut entries) = payload_value() else {
        panic!()
    };
    entries[8].1 = Value::Bytes(vec![0; 31]);
    let mut f = Forge::new();
    f.payload = Some(cbor(&Value::Map(entries)));
    assert_eq!(check(&f.build()), malformed(Malformed::Claim("hwid")));
}

#[test]
fn malformed_kids_are_rejected() {
    for kid in [&b""[..], b"has space", b"\xff\xfe"] {
        let mut f = Forge::new();
        f.protected = cbor(&Value::Map(vec![
            (int(1), int(-8)),
            (int(4), Value::Bytes(kid.to_vec())),
        ]));
        assert_eq!(check(&f.build()), malformed(Malformed::ProtectedHeader));
    }
}

// ---------------------------------------------------------------------------
// Renewal state.

#[test]
fn renewal_state_follows_renew_after_and_exp() {
    let c = claims();
    assert_eq!(
        renewal_state(&c, NOW),
        RenewalState::Fresh {
            renew_after: NOW + 24 * HOUR
        }
    );
    assert_eq!(
        renewal_state(&c, NOW + 24 * HOUR),
        RenewalState::RenewalDue {
            expires_at: NOW + 72 * HOUR
        }
    );
    assert_eq!(
        renewal_state(&c, NOW + 72 * HOUR),
        RenewalState::Expired {
            since: NOW + 72 * HOUR
        }
    );
}

#[test]
fn renewal_state_never_outlives_the_license() {
    let mut c = claims();
    c.license_expires_at = NOW + 30 * HOUR;
    assert_eq!(
        renewal_state(&c, NOW + 25 * HOUR),
        RenewalState::RenewalDue {
            expires_at: NOW + 30 * HOUR
        }
    );
    assert_eq!(
        renewal_state(&c, NOW + 30 * HOUR),
        RenewalState::Expired {
            since: NOW + 30 * HOUR
        }
    );
}
