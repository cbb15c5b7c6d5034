//! Fuzzes the token decoder and verifier.
//!
//! Every input goes, as is, to `verifier::authenticate` and `verifier::verify`
//! with a ring holding the fixture's key. Invariants:
//!
//! 1. Nothing panics (libFuzzer reports a panic as a crash).
//! 2. Whatever `authenticate` (and so `verify`) accepts is exactly what the
//!    issuer would produce: `TokenSigner::sign(&claims)` gives back the input
//!    byte for byte, or the input is that inside one CWT tag 61.
//! 3. `verify` is `authenticate` plus the documented time and machine rules:
//!    `verify` at the fixed time and `VerifiedToken::check` at the edges of
//!    the token's validity agree with an independent reference.
//!
//! The signature stands in the way of the claims decoder, so inputs that look
//! like a CBOR map are also signed by the target into a well-formed token (as
//! payload) and verified: the fuzzer then explores claims sets of its own
//! choosing. Such a token may only be refused for its payload, and if it is
//! accepted, invariants 2 and 3 hold for it too.

#![no_main]

use std::sync::LazyLock;

use coditect_verifier_fuzz::{CWT_TAG_HEAD, Fixture, KID, NOW, expected_check};
use libfuzzer_sys::fuzz_target;
use verifier::{LicenseClaims, MAX_TOKEN_LEN, Malformed, VerifyError};

static FIXTURE: LazyLock<Fixture> = LazyLock::new(Fixture::new);

fuzz_target!(|data: &[u8]| {
    let fx = &*FIXTURE;

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
});

/// Runs `authenticate` and `verify` on `token` and checks invariants 2 and 3.
fn check_token(fx: &Fixture, token: &[u8]) -> Result<LicenseClaims, VerifyError> {
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
