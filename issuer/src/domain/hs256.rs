//! HS256, the one JSON Web Token algorithm the issuer uses (access tokens,
//! [`super::account`]), as `jsonwebtoken`'s crypto provider.
//!
//! `jsonwebtoken`'s own `rust_crypto` provider compiles in every algorithm
//! it knows, RSA included (the `rsa` crate, RUSTSEC-2023-0071); this one
//! is HMAC-SHA256 from the `hmac` and `sha2` crates the issuer uses anyway,
//! and refuses any other algorithm, so a token that names another one is
//! refused like a bad signature.

use std::sync::Once;

use hmac::{Hmac, KeyInit, Mac};
use jsonwebtoken::crypto::{CryptoProvider, JwkUtils, JwtSigner, JwtVerifier};
use jsonwebtoken::errors::{Error, ErrorKind};
use jsonwebtoken::signature::{Signer, Verifier};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey};
use sha2::Sha256;

static PROVIDER: CryptoProvider = CryptoProvider {
    signer_factory: signer,
    verifier_factory: verifier,
    jwk_utils: JwkUtils::new_unimplemented(),
};

/// Makes HS256 `jsonwebtoken`'s provider for this process; every use of
/// `jsonwebtoken` calls this first (it is cheap after the first time).
pub fn install() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err only if a provider is installed already, which is then ours.
        let _ = PROVIDER.install_default();
    });
}

struct Hs256(Hmac<Sha256>);

impl Hs256 {
    fn new(algorithm: &Algorithm, secret: Result<&[u8], Error>) -> Result<Self, Error> {
        if *algorithm != Algorithm::HS256 {
            return Err(ErrorKind::InvalidAlgorithm.into());
        }
        <Hmac<Sha256> as KeyInit>::new_from_slice(secret?)
            .map(Hs256)
            .map_err(|_| ErrorKind::InvalidKeyFormat.into())
    }
}

fn signer(algorithm: &Algorithm, key: &EncodingKey) -> Result<Box<dyn JwtSigner>, Error> {
    Ok(Box::new(Hs256::new(algorithm, key.try_get_hmac_secret())?))
}

fn verifier(algorithm: &Algorithm, key: &DecodingKey) -> Result<Box<dyn JwtVerifier>, Error> {
    Ok(Box::new(Hs256::new(algorithm, key.try_get_hmac_secret())?))
}

impl Signer<Vec<u8>> for Hs256 {
    fn try_sign(&self, msg: &[u8]) -> Result<Vec<u8>, jsonwebtoken::signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        Ok(mac.finalize().into_bytes().to_vec())
    }
}

impl Verifier<Vec<u8>> for Hs256 {
    fn verify(
        &self,
        msg: &[u8],
        signature: &Vec<u8>,
    ) -> Result<(), jsonwebtoken::signature::Error> {
        let mut mac = self.0.clone();
        mac.update(msg);
        // Constant time.
        mac.verify_slice(signature)
            .map_err(|_| jsonwebtoken::signature::Error::new())
    }
}

impl JwtSigner for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

impl JwtVerifier for Hs256 {
    fn algorithm(&self) -> Algorithm {
        Algorithm::HS256
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of RFC 7519's tooling (jwt.io): a token made elsewhere.
    const MESSAGE: &str = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ";
    const SIGNATURE: &str = "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
    const SECRET: &[u8] = b"your-256-bit-secret";

    #[test]
    fn signs_and_verifies_hs256_as_everyone_else_does() {
        install();
        let key = EncodingKey::from_secret(SECRET);
        let signed = jsonwebtoken::crypto::sign(MESSAGE.as_bytes(), &key, Algorithm::HS256);
        assert_eq!(signed.unwrap(), SIGNATURE);
        let key = DecodingKey::from_secret(SECRET);
        let ok =
            jsonwebtoken::crypto::verify(SIGNATURE, MESSAGE.as_bytes(), &key, Algorithm::HS256);
        assert!(ok.unwrap());
        let wrong = DecodingKey::from_secret(b"another secret");
        let ok =
            jsonwebtoken::crypto::verify(SIGNATURE, MESSAGE.as_bytes(), &wrong, Algorithm::HS256);
        assert!(!ok.unwrap());
    }

    #[test]
    fn every_other_algorithm_is_refused() {
        install();
        for algorithm in [
            Algorithm::HS384,
            Algorithm::HS512,
            Algorithm::RS256,
            Algorithm::ES256,
        ] {
            let key = DecodingKey::from_secret(SECRET);
            let verified =
                jsonwebtoken::crypto::verify(SIGNATURE, MESSAGE.as_bytes(), &key, algorithm);
            assert!(verified.is_err(), "{algorithm:?}");
        }
    }
}
