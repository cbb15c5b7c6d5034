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
    let mut ring = KeyRing::new();
    add_jwks(&mut ring, PRODUCTION_JWKS)
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

    #[test]
    fn built_in_keys_load() {
        key_ring().unwrap();
    }

    /// The build users get (no `dev-keys`) refuses tokens signed with the
    /// public development key. Run by `cargo test -p coditect-cli`.
    #[cfg(not(feature = "dev-keys"))]
    #[test]
    fn distribution_build_rejects_development_tokens() {
        let (token, _) = dev_token();
        let hw = verifier::HardwareId::from_machine_id("m");
        assert_eq!(
            verifier::verify(&token, &key_ring().unwrap(), 1_750_000_000, &hw),
            Err(verifier::VerifyError::UnknownKey {
                kid: DEVELOPMENT_KID.into()
            })
        );
        const { assert!(!TRUSTS_DEVELOPMENT_KEY) };
    }

    #[cfg(feature = "dev-keys")]
    #[test]
    fn development_build_accepts_development_tokens() {
        let (token, claims) = dev_token();
        let hw = verifier::HardwareId::from_machine_id("m");
        assert_eq!(
            verifier::verify(&token, &key_ring().unwrap(), 1_750_000_000, &hw),
            Ok(claims)
        );
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
