//! The license-token profile on top of COSE_Sign1: header rules, key lookup,
//! claims and their time and machine checks.

use ciborium::value::{Integer, Value};
use coset::iana;

use crate::claims::LicenseClaims;
use crate::cose::{Sign1, decode_strict};
use crate::error::{Malformed, VerifyError};
use crate::hardware::HardwareId;
use crate::keyring::{KeyRing, is_valid_kid_bytes};

/// `external_aad` of every license token: a signature made by the issuer's key
/// for any other purpose can never pass as a license token.
pub const EXTERNAL_AAD: &[u8] = b"coditect-license-v1";

/// Tokens longer than this are refused before any parsing.
pub const MAX_TOKEN_LEN: usize = 2048;

/// Allowed clock difference, in seconds, between issuer and machine for `nbf`
/// and `iat` (Keygen uses the same 5 minutes).
pub const TIME_SKEW: u64 = 300;

/// A token whose signature checked out under a trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The id of the key that signed it.
    pub kid: String,
    /// Its claims.
    pub claims: LicenseClaims,
}

/// The protected header of every license token, `{1: -8, 4: kid}`, in its
/// one encoding.
pub(crate) fn protected_header_bytes(kid: &str) -> Result<Vec<u8>, Malformed> {
    let header = Value::Map(vec![
        (
            Value::Integer(Integer::from(iana::HeaderParameter::Alg as i64)),
            Value::Integer(Integer::from(iana::Algorithm::EdDSA as i64)),
        ),
        (
            Value::Integer(Integer::from(iana::HeaderParameter::Kid as i64)),
            Value::Bytes(kid.as_bytes().to_vec()),
        ),
    ]);
    let mut out = Vec::with_capacity(kid.len().saturating_add(8));
    ciborium::ser::into_writer(&header, &mut out).map_err(|_| Malformed::ProtectedHeader)?;
    Ok(out)
}

/// Checks structure, header profile and signature against the trusted `keys`,
/// without judging time or machine. Use it to show what an expired token said;
/// use [`verify`] to decide whether a token is good now.
pub fn authenticate(token: &[u8], keys: &KeyRing) -> Result<VerifiedToken, VerifyError> {
    if token.len() > MAX_TOKEN_LEN {
        return Err(Malformed::TooLarge.into());
    }
    let sign1 = Sign1::parse(token)?;
    if !sign1.unprotected().is_empty() {
        return Err(Malformed::UnprotectedHeader.into());
    }
    sign1.require_eddsa()?;
    let kid_bytes = sign1.protected().key_id.as_slice();
    let kid = match core::str::from_utf8(kid_bytes) {
        Ok(kid) if is_valid_kid_bytes(kid_bytes) => kid,
        _ => return Err(Malformed::ProtectedHeader.into()),
    };
    if sign1.protected_bytes() != protected_header_bytes(kid)?.as_slice() {
        return Err(Malformed::ProtectedHeader.into());
    }
    let key = keys.get(kid_bytes).ok_or_else(|| VerifyError::UnknownKey {
        kid: kid.to_owned(),
    })?;
    sign1.verify_signature(key.verifying_key(), EXTERNAL_AAD)?;
    let claims = LicenseClaims::from_value(decode_strict(sign1.payload())?)?;
    Ok(VerifiedToken {
        kid: kid.to_owned(),
        claims,
    })
}

impl VerifiedToken {
    /// Judges an authentic token at time `now` on the machine `hardware_id`.
    pub fn check(&self, now: u64, hardware_id: &HardwareId) -> Result<(), VerifyError> {
        let c = &self.claims;
        if !c.hardware_id.ct_eq(hardware_id) {
            return Err(VerifyError::HardwareMismatch);
        }
        let valid_from = c.not_before.max(c.issued_at);
        if valid_from > now.saturating_add(TIME_SKEW) {
            return Err(VerifyError::NotYetValid { valid_from });
        }
        if now >= c.license_expires_at {
            return Err(VerifyError::LicenseExpired {
                since: c.license_expires_at,
            });
        }
        if now >= c.expires_at {
            return Err(VerifyError::Expired {
                since: c.expires_at,
            });
        }
        Ok(())
    }
}

/// Decides whether `token` is a good license for this machine at `now`
/// (Unix seconds): trusted signature, this profile, within its validity,
/// bound to `hardware_id`, license not ended.
///
/// Rejection order: structure, algorithm, key, signature, claims, machine,
/// not-yet-valid, license expiry, token expiry.
pub fn verify(
    token: &[u8],
    keys: &KeyRing,
    now: u64,
    hardware_id: &HardwareId,
) -> Result<LicenseClaims, VerifyError> {
    let verified = authenticate(token, keys)?;
    verified.check(now, hardware_id)?;
    Ok(verified.claims)
}
