//! The keys this build trusts, compiled in from `keys/`. No variable, flag
//! or file adds a key at run time.
//!
//! The distribution build trusts only `keys/trusted.jwks.json` (production);
//! builds with the `dev-keys` feature also trust the development key, whose
//! private half is public, and say so.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use verifier::KeyRing;

use crate::error::{CliError, CliResult};

const PRODUCTION_JWKS: &str = include_str!("../../keys/trusted.jwks.json");
#[cfg(feature = "dev-keys")]
const DEVELOPMENT_JWKS: &str = include_str!("../../keys/development/coditect-dev.jwks.json");

/// Whether this is a development build that trusts the development key.
pub const TRUSTS_DEVELOPMENT_KEY: bool = cfg!(feature = "dev-keys");

/// The key id of the development key.
pub const DEVELOPMENT_KID: &str = "coditect-dev";

/// Adds the Ed25519 keys of a JWK Set to `ring`.
pub fn add_jwks(ring: &mut KeyRing, jwks: &str) -> Result<(), String> {
    let doc: serde_json::Value = serde_json::from_str(jwks).map_err(|e| e.to_string())?;
    let keys = doc["keys"].as_array().ok_or("no `keys` array")?;
    for key in keys {
        if key["kty"] != "OKP" || key["crv"] != "Ed25519" {
            return Err(format!("not an Ed25519 key: {key}"));
        }
        let kid = key["kid"].as_str().ok_or("key without kid")?;
        let x = URL_SAFE_NO_PAD
            .decode(key["x"].as_str().ok_or("key without x")?)
            .map_err(|e| e.to_string())?;
        let x: [u8; 32] = x.try_into().map_err(|_| "x is not 32 bytes")?;
        ring.insert(kid, &x).map_err(|e| format!("{kid}: {e}"))?;
    }
    Ok(())
}

/// The trusted key ring of this build.
pub fn key_ring() -> CliResult<KeyRing> {
    key_ring_with(PRODUCTION_JWKS)
}

/// The key ring this build makes from a production key set: `production`,
/// plus the development key in `dev-keys` builds. Only the compiled-in set
/// is fixed; the tests pass a set of their own.
fn key_ring_with(production: &str) -> CliResult<KeyRing> {
    let mut ring = KeyRing::new();
    add_jwks(&mut ring, production)
        .map_err(|e| CliError::unexpected("trust", format!("built-in keys: {e}")))?;
    #[cfg(feature = "dev-keys")]
    add_jwks(&mut ring, DEVELOPMENT_JWKS)
        .map_err(|e| CliError::unexpected("trust", format!("development key: {e}")))?;
    Ok(ring)
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::pkcs8::DecodePrivateKey;

    fn dev_token() -> (Vec<u8>, verifier::LicenseClaims) {
        let key = ed25519_dalek::SigningKey::from_pkcs8_pem(include_str!(
            "../../keys/development/coditect-dev.private.pem"
        ))
        .unwrap();
        let signer = verifier::TokenSigner::new(DEVELOPMENT_KID, key).unwrap();
        let claims = verifier::LicenseClaims {
            issuer: "coditect".into(),
            license_id: "l".into(),
            expires_at: 2_000_000_000,
            not_before: 1_700_000_000,
            issued_at: 1_700_000_000,
            token_id: [1; 16],
            tier: "pilot-starter".into(),
            entitlements: verifier::Entitlements {
                max_projects: verifier::ProjectLimit::Limited(3),
                ai_requests: 100,
                max_devices: 1,
            },
            hardware_id: verifier::HardwareId::from_machine_id("m"),
            license_expires_at: 2_000_000_000,
            renew_after: 1_800_000_000,
            organization: String::new(),
            email: "a@b.io".into(),
            devices_used: 1,
        };
        (signer.sign(&claims).unwrap(), claims)
    }

    /// A production-like key set made for the test: one Ed25519 key whose
    /// private half only this test holds.
    fn test_production_key() -> (verifier::TokenSigner, String) {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let signer = verifier::TokenSigner::new("coditect-test-prod", key).unwrap();
        let jwks = serde_json::json!({"keys": [{
            "kty": "OKP",
            "crv": "Ed25519",
            "kid": "coditect-test-prod",
            "x": URL_SAFE_NO_PAD.encode(signer.public_key()),
        }]})
        .to_string();
        (signer, jwks)
    }

    #[test]
    fn built_in_keys_load() {
        let ring = key_ring().unwrap();
        let kids: Vec<&str> = ring.keys().map(|k| k.kid()).collect();
        // Every key of the compiled-in set, plus the development key exactly
        // when this build trusts it.
        let doc: serde_json::Value = serde_json::from_str(PRODUCTION_JWKS).unwrap();
        let production = doc["keys"].as_array().unwrap().len();
        assert_eq!(
            kids.len(),
            production + usize::from(TRUSTS_DEVELOPMENT_KEY),
            "{kids:?}"
        );
        assert_eq!(
            kids.contains(&DEVELOPMENT_KID),
            TRUSTS_DEVELOPMENT_KEY,
            "{kids:?}"
        );
    }

    /// The distribution code path (no `dev-keys`) with a non-empty key set:
    /// it accepts tokens from the production key and refuses tokens signed
    /// with the public development key. Run by `cargo test -p coditect-cli`.
    #[cfg(not(feature = "dev-keys"))]
    #[test]
    fn distribution_build_accepts_production_tokens_and_rejects_development_tokens() {
        let (prod_signer, jwks) = test_production_key();
        let ring = key_ring_with(&jwks).unwrap();
        let (dev_token, claims) = dev_token();
        let hw = verifier::HardwareId::from_machine_id("m");
        let prod_token = prod_signer.sign(&claims).unwrap();
        assert_eq!(
            verifier::verify(&prod_token, &ring, 1_750_000_000, &hw),
            Ok(claims)
        );
        assert_eq!(
            verifier::verify(&dev_token, &ring, 1_750_000_000, &hw),
            Err(verifier::VerifyError::UnknownKey {
                kid: DEVELOPMENT_KID.into()
            })
        );
        // The compiled-in set of this build refuses it too.
        assert_eq!(
            verifier::verify(&dev_token, &key_ring().unwrap(), 1_750_000_000, &hw),
            Err(verifier::VerifyError::UnknownKey {
                kid: DEVELOPMENT_KID.into()
            })
        );
        const { assert!(!TRUSTS_DEVELOPMENT_KEY) };
    }

    /// Development builds trust both the production set and the development
    /// key. Run by `cargo test -p coditect-cli --features dev-keys`
    /// (scripts/test.sh).
    #[cfg(feature = "dev-keys")]
    #[test]
    fn development_build_accepts_development_tokens() {
        let (prod_signer, jwks) = test_production_key();
        let ring = key_ring_with(&jwks).unwrap();
        let (token, claims) = dev_token();
        let hw = verifier::HardwareId::from_machine_id("m");
        assert_eq!(
            verifier::verify(&token, &key_ring().unwrap(), 1_750_000_000, &hw),
            Ok(claims.clone())
        );
        assert_eq!(
            verifier::verify(&token, &ring, 1_750_000_000, &hw),
            Ok(claims.clone())
        );
        let prod_token = prod_signer.sign(&claims).unwrap();
        assert_eq!(
            verifier::verify(&prod_token, &ring, 1_750_000_000, &hw),
            Ok(claims)
        );
        const { assert!(TRUSTS_DEVELOPMENT_KEY) };
    }

    #[test]
    fn malformed_key_sets_are_refused() {
        let mut ring = KeyRing::new();
        assert!(add_jwks(&mut ring, "{}").is_err());
        assert!(add_jwks(&mut ring, r#"{"keys":[{"kty":"RSA"}]}"#).is_err());
        let weak = r#"{"keys":[{"kty":"OKP","crv":"Ed25519","kid":"w","x":"AQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}]}"#;
        assert!(
            add_jwks(&mut ring, weak)
                .unwrap_err()
                .contains("small order")
        );
    }
}
