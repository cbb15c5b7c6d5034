//! Strict CBOR decoding and the COSE_Sign1 signature check.
//!
//! Structure (tags, arrays, header maps, the Sig_structure) comes from `coset`
//! on top of `ciborium`; this module adds what a license profile needs on top:
//! one encoding only (re-encoding must give back the input), no duplicate map
//! keys, no trailing bytes, only tag 18 (optionally inside CWT tag 61), EdDSA
//! with `verify_strict`.

use ciborium::value::Value;
use coset::{AsCborValue, CoseSign1, iana};
use ed25519_dalek::{Signature, VerifyingKey};

use crate::error::{Malformed, VerifyError};

const TAG_COSE_SIGN1: u64 = 18;
const TAG_CWT: u64 = 61;

/// Decodes exactly one CBOR item, refusing trailing bytes, duplicate map keys
/// and any encoding other than the deterministic one.
pub(crate) fn decode_strict(bytes: &[u8]) -> Result<Value, Malformed> {
    let mut rest = bytes;
    let value: Value = ciborium::de::from_reader(&mut rest).map_err(|_| Malformed::NotCbor)?;
    if !rest.is_empty() {
        return Err(Malformed::TrailingBytes);
    }
    if has_duplicate_keys(&value) {
        return Err(Malformed::DuplicateMapKey);
    }
    // Deterministic encoding: shortest integers and lengths, definite lengths.
    // ciborium writes exactly that, so anything else shows up as a difference.
    let mut again = Vec::with_capacity(bytes.len());
    ciborium::ser::into_writer(&value, &mut again).map_err(|_| Malformed::NotCbor)?;
    if again != bytes {
        return Err(Malformed::NonCanonical);
    }
    Ok(value)
}

fn has_duplicate_keys(value: &Value) -> bool {
    match value {
        Value::Map(entries) => {
            entries.iter().enumerate().any(|(i, (k, _))| {
                entries
                    .iter()
                    .skip(i.saturating_add(1))
                    .any(|(k2, _)| k == k2)
            }) || entries
                .iter()
                .any(|(k, v)| has_duplicate_keys(k) || has_duplicate_keys(v))
        }
        Value::Array(items) => items.iter().any(has_duplicate_keys),
        Value::Tag(_, inner) => has_duplicate_keys(inner),
        _ => false,
    }
}

/// A parsed, not yet verified COSE_Sign1 with an attached payload.
pub(crate) struct Sign1 {
    inner: CoseSign1,
    payload: Vec<u8>,
}

impl Sign1 {
    /// Parses the outer structure: strict CBOR, tag 18 (optionally within tag
    /// 61), four elements, attached payload.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Self, VerifyError> {
        let mut value = decode_strict(bytes)?;
        if let Value::Tag(TAG_CWT, inner) = value {
            value = *inner;
        }
        let Value::Tag(TAG_COSE_SIGN1, inner) = value else {
            return Err(Malformed::WrongTag.into());
        };
        let Value::Array(items) = *inner else {
            return Err(Malformed::NotSign1.into());
        };
        let [protected, unprotected, payload, signature] =
            <[Value; 4]>::try_from(items).map_err(|_| Malformed::NotSign1)?;
        let (Value::Bytes(protected_bytes), Value::Bytes(signature)) = (protected, signature)
        else {
            return Err(Malformed::NotSign1.into());
        };
        let payload = match payload {
            Value::Bytes(p) => p,
            Value::Null => return Err(Malformed::DetachedPayload.into()),
            _ => return Err(Malformed::NotSign1.into()),
        };
        let header_error = |e: coset::CoseError, otherwise: Malformed| match e {
            coset::CoseError::DuplicateMapKey => Malformed::DuplicateMapKey,
            _ => otherwise,
        };
        let protected_header = if protected_bytes.is_empty() {
            coset::Header::default()
        } else {
            coset::Header::from_cbor_value(decode_strict(&protected_bytes)?)
                .map_err(|e| header_error(e, Malformed::ProtectedHeader))?
        };
        let unprotected = coset::Header::from_cbor_value(unprotected)
            .map_err(|e| header_error(e, Malformed::UnprotectedHeader))?;
        let inner = CoseSign1 {
            protected: coset::ProtectedHeader {
                original_data: Some(protected_bytes),
                header: protected_header,
            },
            unprotected,
            payload: None,
            signature,
        };
        Ok(Sign1 { inner, payload })
    }

    /// The protected header's algorithm must be EdDSA.
    pub(crate) fn require_eddsa(&self) -> Result<(), VerifyError> {
        match &self.inner.protected.header.alg {
            Some(coset::Algorithm::Assigned(iana::Algorithm::EdDSA)) => Ok(()),
            _ => Err(VerifyError::UnsupportedAlgorithm),
        }
    }

    pub(crate) fn protected(&self) -> &coset::Header {
        &self.inner.protected.header
    }

    pub(crate) fn unprotected(&self) -> &coset::Header {
        &self.inner.unprotected
    }

    /// The protected header exactly as it was signed (a serialized map).
    pub(crate) fn protected_bytes(&self) -> &[u8] {
        self.inner
            .protected
            .original_data
            .as_deref()
            .unwrap_or_default()
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }

    /// Checks the signature over the Sig_structure ("Signature1", protected,
    /// external_aad, payload) with `verify_strict`.
    pub(crate) fn verify_signature(
        &self,
        key: &VerifyingKey,
        external_aad: &[u8],
    ) -> Result<(), VerifyError> {
        let tbs = coset::sig_structure_data(
            coset::SignatureContext::CoseSign1,
            self.inner.protected.clone(),
            None,
            external_aad,
            &self.payload,
        );
        let sig =
            Signature::from_slice(&self.inner.signature).map_err(|_| VerifyError::BadSignature)?;
        key.verify_strict(&tbs, &sig)
            .map_err(|_| VerifyError::BadSignature)
    }
}

/// The low-level COSE_Sign1 check, independent of the license profile: strict
/// CBOR, tag 18, EdDSA in the protected header, attached payload, and a
/// signature by `public_key` over the Sig_structure with `external_aad`.
/// Headers beyond `alg` are not judged here. Returns the payload.
pub fn verify_cose_sign1(
    bytes: &[u8],
    public_key: &[u8; 32],
    external_aad: &[u8],
) -> Result<Vec<u8>, VerifyError> {
    let key = VerifyingKey::from_bytes(public_key).map_err(|_| VerifyError::BadSignature)?;
    let sign1 = Sign1::parse(bytes)?;
    sign1.require_eddsa()?;
    sign1.verify_signature(&key, external_aad)?;
    Ok(sign1.payload)
}

/// A bare Ed25519 signature check with the same rules the token path uses
/// (`verify_strict`: canonical `S`, no small-order `A` or `R`). Used by the
/// public test vectors and as the baseline of the benchmark.
pub fn verify_ed25519(
    public_key: &[u8],
    message: &[u8],
    signature: &[u8],
) -> Result<(), VerifyError> {
    let pk = <[u8; 32]>::try_from(public_key).map_err(|_| VerifyError::BadSignature)?;
    let key = VerifyingKey::from_bytes(&pk).map_err(|_| VerifyError::BadSignature)?;
    let sig = Signature::from_slice(signature).map_err(|_| VerifyError::BadSignature)?;
    key.verify_strict(message, &sig)
        .map_err(|_| VerifyError::BadSignature)
}
