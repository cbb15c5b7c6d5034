//! The fixture shared by the `decode_verify` fuzz target and the seed
//! generator (`cargo run --example gen_seeds`): a signing key from a fixed
//! seed, its key ring, a machine, a time, and a few typical claims.
//!
//! Nothing here is a real key: the seed is public and only for fuzzing.

use ciborium::value::{Integer, Value};
use verifier::ed25519_dalek::{Signer, SigningKey};
use verifier::{
    EXTERNAL_AAD, Entitlements, HardwareId, KeyRing, LicenseClaims, MAX_TOKEN_LEN, Malformed,
    ProjectLimit, TokenSigner, VerifyError,
};

/// Seed of the fuzzing key (public, test only).
pub const SEED: [u8; 32] = *b"coditect-fuzz-test-key-seed-0001";
/// Key id of the fuzzing key.
pub const KID: &str = "fuzz-2026.1";
/// The machine the seed tokens are bound to.
pub const MACHINE_ID: &str = "4c4c4544-0042-3510-8052-b4c04f4e4b31";
/// 2026-01-01T00:00:00Z, when the seed tokens were "issued".
pub const ISSUED_AT: u64 = 1_767_225_600;
/// The time at which the target calls `verify`: one hour after issue.
pub const NOW: u64 = ISSUED_AT + 3600;
const DAY: u64 = 86_400;
/// CBOR head of tag 61 (CWT), the optional outer wrapper.
pub const CWT_TAG_HEAD: [u8; 2] = [0xd8, 0x3d];

/// The key, ring and machine every input is checked against.
pub struct Fixture {
    /// The signing key made from [`SEED`].
    pub key: SigningKey,
    /// A signer with that key under [`KID`].
    pub signer: TokenSigner,
    /// A ring holding only the public half under [`KID`].
    pub ring: KeyRing,
    /// The machine of [`MACHINE_ID`].
    pub hardware_id: HardwareId,
    /// The protected header `{1: -8, 4: KID}` as the token carries it.
    pub protected: Vec<u8>,
}

impl Fixture {
    /// Builds the fixture; panics only if the fixed key were refused.
    pub fn new() -> Self {
        let key = SigningKey::from_bytes(&SEED);
        let public = key.verifying_key().to_bytes();
        let signer = TokenSigner::new(KID, key.clone()).expect("fixed test key is valid");
        let ring = KeyRing::new()
            .with_key(KID, &public)
            .expect("fixed test key is valid");
        let protected = cbor(&Value::Map(vec![
            (int(1), int(-8)),
            (int(4), Value::Bytes(KID.as_bytes().to_vec())),
        ]));
        Fixture {
            key,
            signer,
            ring,
            hardware_id: HardwareId::from_machine_id(MACHINE_ID),
            protected,
        }
    }

    /// A COSE_Sign1 (tag 18) in the license profile around an arbitrary
    /// `payload`, signed with the fixture key over the Sig_structure. Built
    /// here with ciborium alone, independently of the crate's own encoder, so
    /// the fuzzer reaches the claims decoder with payloads of its choosing.
    pub fn sign_payload(&self, payload: &[u8]) -> Vec<u8> {
        let tbs = cbor(&Value::Array(vec![
            Value::Text("Signature1".to_owned()),
            Value::Bytes(self.protected.clone()),
            Value::Bytes(EXTERNAL_AAD.to_vec()),
            Value::Bytes(payload.to_vec()),
        ]));
        let signature = self.key.sign(&tbs).to_bytes();
        cbor(&Value::Tag(
            18,
            Box::new(Value::Array(vec![
                Value::Bytes(self.protected.clone()),
                Value::Map(Vec::new()),
                Value::Bytes(payload.to_vec()),
                Value::Bytes(signature.to_vec()),
            ])),
        ))
    }
}

impl Default for Fixture {
    fn default() -> Self {
        Self::new()
    }
}

fn int(v: i64) -> Value {
    Value::Integer(Integer::from(v))
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    ciborium::ser::into_writer(value, &mut out).expect("writing to a Vec cannot fail");
    out
}

/// The payload (claims set bytes) of a tagged COSE_Sign1, if it is one.
pub fn payload_of(token: &[u8]) -> Option<Vec<u8>> {
    let value: Value = ciborium::de::from_reader(token).ok()?;
    let Value::Tag(18, inner) = value else {
        return None;
    };
    let Value::Array(items) = *inner else {
        return None;
    };
    match items.into_iter().nth(2) {
        Some(Value::Bytes(payload)) => Some(payload),
        _ => None,
    }
}

/// What `verify` must answer for authentic `claims` at `now` on `hw`, written
/// from the documented rules and order (machine, not-yet-valid with
/// `TIME_SKEW`, license expiry, token expiry), independently of
/// `VerifiedToken::check`.
pub fn expected_check(
    claims: &LicenseClaims,
    now: u64,
    hw: &HardwareId,
) -> Result<(), VerifyError> {
    if claims.hardware_id != *hw {
        return Err(VerifyError::HardwareMismatch);
    }
    let valid_from = claims.not_before.max(claims.issued_at);
    if u128::from(valid_from) > u128::from(now) + u128::from(verifier::TIME_SKEW) {
        return Err(VerifyError::NotYetValid { valid_from });
    }
    if now >= claims.license_expires_at {
        return Err(VerifyError::LicenseExpired {
            since: claims.license_expires_at,
        });
    }
    if now >= claims.expires_at {
        return Err(VerifyError::Expired {
            since: claims.expires_at,
        });
    }
    Ok(())
}

/// A typical license: the one the benchmark also uses.
pub fn typical_claims() -> LicenseClaims {
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

/// Named claim sets for the seed corpus: typical, limited, extremes, and ones
/// that authenticate but fail `verify` at [`NOW`] for each reason.
pub fn seed_claims() -> Vec<(&'static str, LicenseClaims)> {
    let typical = typical_claims();
    let mut limited = typical.clone();
    limited.license_id = "7f3e2a10-5b6c-4d8e-9f01-23456789abcd".to_owned();
    limited.tier = "starter".to_owned();
    limited.entitlements = Entitlements {
        max_projects: ProjectLimit::Limited(5),
        ai_requests: 0,
        max_devices: 1,
    };
    limited.organization = "Ex".to_owned();
    limited.email = "a@b.c".to_owned();
    limited.not_before = ISSUED_AT - 60;

    let mut extreme = typical.clone();
    extreme.issuer = String::new();
    extreme.license_id = "x".repeat(255);
    extreme.tier = "ü".repeat(127);
    extreme.entitlements = Entitlements {
        max_projects: ProjectLimit::Limited(u32::MAX),
        ai_requests: u32::MAX,
        max_devices: u32::MAX,
    };
    extreme.expires_at = u64::MAX;
    extreme.license_expires_at = u64::MAX;
    extreme.renew_after = u64::MAX;
    extreme.token_id = [0xff; 16];
    extreme.organization = "O".repeat(23);
    extreme.email = "e".repeat(24);
    extreme.devices_used = u32::MAX;

    let mut other_machine = typical.clone();
    other_machine.hardware_id = HardwareId::from_machine_id("another-machine");
    let mut expired = typical.clone();
    expired.expires_at = NOW - 1;
    let mut license_ended = typical.clone();
    license_ended.license_expires_at = NOW;
    let mut future = typical.clone();
    future.issued_at = NOW + 301;
    future.not_before = NOW + 301;

    vec![
        ("typical", typical),
        ("limited", limited),
        ("extreme", extreme),
        ("other_machine", other_machine),
        ("expired", expired),
        ("license_ended", license_ended),
        ("not_yet_valid", future),
    ]
}

/// One input of the `decode_verify` target: every check of the target
/// (module documentation of `fuzz_targets/decode_verify.rs`); panics when
/// an invariant is broken.
pub fn check_input(fx: &Fixture, data: &[u8]) {
    // As is.
    let _ = check_token(fx, data);
    let _ = verifier::verify_cose_sign1(data, &fx.signer.public_key(), verifier::EXTERNAL_AAD);

    // As the payload of a token signed here.
    if matches!(data.first(), Some(0xa0..=0xbf)) {
        let token = fx.sign_payload(data);
        match check_token(fx, &token) {
            Ok(_) => {}
            Err(e) => assert!(
                is_payload_error(&e, token.len()),
                "a well-signed token was refused for {e:?}, not for its payload"
            ),
        }
    }
}

/// Runs `authenticate` and `verify` on `token` and checks invariants 2 and 3.
pub fn check_token(fx: &Fixture, token: &[u8]) -> Result<LicenseClaims, VerifyError> {
    let authenticated = verifier::authenticate(token, &fx.ring);
    let verified = verifier::verify(token, &fx.ring, NOW, &fx.hardware_id);

    let token_ok = match &authenticated {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(
                verified.as_ref().err(),
                Some(e),
                "verify must refuse what authenticate refuses, for the same reason"
            );
            return Err(e.clone());
        }
    };
    assert_eq!(token_ok.kid, KID);
    let claims = &token_ok.claims;

    // Invariant 2: one encoding only.
    let resigned = fx
        .signer
        .sign(claims)
        .unwrap_or_else(|e| panic!("accepted claims cannot be re-signed: {e}"));
    let inner = token.strip_prefix(&CWT_TAG_HEAD[..]).unwrap_or(token);
    assert!(
        resigned == inner,
        "accepted token is not the issuer's encoding of its claims\n input: {}\nresign: {}",
        hex(token),
        hex(&resigned)
    );

    // Invariant 3: verify = authenticate + the documented checks.
    assert_eq!(
        verified.as_ref().map_err(Clone::clone).map(|_| ()),
        expected_check(claims, NOW, &fx.hardware_id),
        "verify at NOW disagrees with the reference"
    );
    if let Ok(v) = &verified {
        assert_eq!(v, claims);
    }
    let valid_from = claims.not_before.max(claims.issued_at);
    for now in [
        0,
        valid_from.saturating_sub(verifier::TIME_SKEW + 1),
        valid_from.saturating_sub(verifier::TIME_SKEW),
        valid_from,
        claims.expires_at.saturating_sub(1),
        claims.expires_at,
        claims.license_expires_at.saturating_sub(1),
        claims.license_expires_at,
        u64::MAX,
    ] {
        for hw in [fx.hardware_id, claims.hardware_id] {
            // `verify` is `authenticate` then `check`; the signature was
            // checked above, so the time rules are judged on `check` alone.
            assert_eq!(
                token_ok.check(now, &hw),
                expected_check(claims, now, &hw),
                "check at {now} on {hw} disagrees with the reference"
            );
        }
    }
    Ok(claims.clone())
}

/// Errors a token built by `Fixture::sign_payload` may get: only about its
/// payload (or its size).
fn is_payload_error(e: &VerifyError, len: usize) -> bool {
    match e {
        VerifyError::Malformed(Malformed::TooLarge) => len > MAX_TOKEN_LEN,
        VerifyError::Malformed(
            Malformed::NotCbor
            | Malformed::TrailingBytes
            | Malformed::NonCanonical
            | Malformed::DuplicateMapKey
            | Malformed::Claim(_),
        ) => len <= MAX_TOKEN_LEN,
        _ => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
