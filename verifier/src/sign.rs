//! Encoding and signing tokens (feature `sign`): the issuer's half, built on
//! the same claims encoding and header the verifier checks.

use core::fmt;

use coset::{CoseSign1, TaggedCborSerializable};
use ed25519_dalek::{Signer, SigningKey};

use crate::claims::LicenseClaims;
use crate::error::{KeyError, Malformed};
use crate::keyring::TrustedKey;
use crate::token::{EXTERNAL_AAD, MAX_TOKEN_LEN, protected_header_bytes};

/// Why a token could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SignError {
    /// A claim is out of the profile's bounds (e.g. a text over 255 bytes).
    InvalidClaims(Malformed),
    /// The signed token would exceed [`MAX_TOKEN_LEN`].
    TooLarge,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::InvalidClaims(m) => write!(f, "cannot sign these claims: {m}"),
            SignError::TooLarge => f.write_str("the signed token would be too large"),
        }
    }
}

impl std::error::Error for SignError {}

/// The issuer's current signing key with its key id.
pub struct TokenSigner {
    kid: String,
    key: SigningKey,
    protected: Vec<u8>,
}

impl fmt::Debug for TokenSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the secret key.
        f.debug_struct("TokenSigner")
            .field("kid", &self.kid)
            .finish_non_exhaustive()
    }
}

impl TokenSigner {
    /// Wraps a signing key; the kid must follow the key-ring rules, and the
    /// public half must be acceptable to a key ring.
    pub fn new(kid: &str, key: SigningKey) -> Result<Self, KeyError> {
        TrustedKey::new(kid, &key.verifying_key().to_bytes())?;
        let protected = protected_header_bytes(kid).map_err(|_| KeyError::InvalidKid)?;
        Ok(TokenSigner {
            kid: kid.to_owned(),
            key,
            protected,
        })
    }

    /// The key id put in every token.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The public key that verifies this signer's tokens.
    pub fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }

    /// Signs `claims` into a tagged COSE_Sign1. The same claims always give
    /// the same bytes (Ed25519 signatures are deterministic).
    pub fn sign(&self, claims: &LicenseClaims) -> Result<Vec<u8>, SignError> {
        let payload = claims.to_cbor().map_err(SignError::InvalidClaims)?;
        let protected = coset::ProtectedHeader {
            original_data: Some(self.protected.clone()),
            header: coset::HeaderBuilder::new()
                .algorithm(coset::iana::Algorithm::EdDSA)
                .key_id(self.kid.as_bytes().to_vec())
                .build(),
        };
        let sign1 = CoseSign1 {
            protected,
            unprotected: coset::Header::default(),
            payload: Some(payload),
            signature: Vec::new(),
        };
        let tbs = sign1.tbs_data(EXTERNAL_AAD);
        let sign1 = CoseSign1 {
            signature: self.key.sign(&tbs).to_bytes().to_vec(),
            ..sign1
        };
        let bytes = sign1
            .to_tagged_vec()
            .map_err(|_| SignError::InvalidClaims(Malformed::NotSign1))?;
        if bytes.len() > MAX_TOKEN_LEN {
            return Err(SignError::TooLarge);
        }
        Ok(bytes)
    }
}
