//! Why a token or a key was refused: one variant per reason.

use core::fmt;

/// Why a token was refused.
///
/// Each reason the verifier can give has its own variant so that callers (and
/// tests) can act on it: a `Expired` token is renewed, a `HardwareMismatch`
/// one needs activating on this machine, a `BadSignature` one is forged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum VerifyError {
    /// The bytes are not a token of this profile; the detail says what is wrong.
    Malformed(Malformed),
    /// The protected header names an algorithm other than EdDSA (-8).
    UnsupportedAlgorithm,
    /// The token names a key (`kid`) that is not in the trusted key ring.
    UnknownKey {
        /// The key id the token names, lossily printed.
        kid: String,
    },
    /// The signature does not verify under the named trusted key.
    BadSignature,
    /// The token is not valid yet (`nbf` or `iat` in the future beyond the skew).
    NotYetValid {
        /// Unix time from which the token would be accepted.
        valid_from: u64,
    },
    /// The token's own lifetime (`exp`) has passed: it must be renewed online.
    Expired {
        /// Unix time at which the token expired.
        since: u64,
    },
    /// The token was issued for another machine.
    HardwareMismatch,
    /// The license itself has ended (not just this token).
    LicenseExpired {
        /// Unix time at which the license ended.
        since: u64,
    },
    /// The system clock is behind the last time this machine saw.
    ClockRolledBack {
        /// How many seconds `now` is behind the stored high-water mark.
        behind_by: u64,
    },
}

/// What is structurally wrong with a refused token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Malformed {
    /// Longer than [`crate::MAX_TOKEN_LEN`]; refused before parsing.
    TooLarge,
    /// Not a single well-formed CBOR item.
    NotCbor,
    /// Bytes follow the CBOR item.
    TrailingBytes,
    /// Valid CBOR but not in the one deterministic encoding (shortest integers,
    /// definite lengths) that the issuer produces.
    NonCanonical,
    /// A CBOR map holds the same key twice.
    DuplicateMapKey,
    /// Not tagged as COSE_Sign1 (tag 18), e.g. a COSE_Mac0 or COSE_Encrypt0.
    WrongTag,
    /// Tagged 18 but not a four-element COSE_Sign1 array of the right types.
    NotSign1,
    /// The protected header is not exactly `{1: -8, 4: kid}`.
    ProtectedHeader,
    /// The unprotected header is not empty (an `alg` or `kid` there is refused).
    UnprotectedHeader,
    /// The payload is missing (nil, i.e. detached).
    DetachedPayload,
    /// The payload is not a claims set of this profile; names the first claim
    /// found wrong.
    Claim(&'static str),
}

/// Why a public key was refused by the key ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// The key id is empty, longer than 64 bytes, or not `[A-Za-z0-9._-]`.
    InvalidKid,
    /// The 32 bytes are not a valid Ed25519 point encoding.
    InvalidKey,
    /// The key has small order: signatures under it prove nothing.
    WeakKey,
    /// The ring already holds a key with this id.
    DuplicateKid,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VerifyError::Malformed(m) => write!(f, "malformed license token: {m}"),
            VerifyError::UnsupportedAlgorithm => {
                f.write_str("license token uses an unsupported algorithm (only EdDSA)")
            }
            VerifyError::UnknownKey { kid } => {
                write!(f, "license token is signed by an unknown key \"{kid}\"")
            }
            VerifyError::BadSignature => f.write_str("license token signature is invalid"),
            VerifyError::NotYetValid { valid_from } => {
                write!(
                    f,
                    "license token is not valid before {valid_from} (Unix time)"
                )
            }
            VerifyError::Expired { since } => {
                write!(f, "license token expired at {since} (Unix time)")
            }
            VerifyError::HardwareMismatch => {
                f.write_str("license token was issued for a different machine")
            }
            VerifyError::LicenseExpired { since } => {
                write!(f, "license expired at {since} (Unix time)")
            }
            VerifyError::ClockRolledBack { behind_by } => write!(
                f,
                "system clock is {behind_by} s behind the last time this machine saw"
            ),
        }
    }
}

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Malformed::TooLarge => f.write_str("token is too large"),
            Malformed::NotCbor => f.write_str("not a CBOR item"),
            Malformed::TrailingBytes => f.write_str("bytes after the token"),
            Malformed::NonCanonical => f.write_str("non-deterministic CBOR encoding"),
            Malformed::DuplicateMapKey => f.write_str("duplicate map key"),
            Malformed::WrongTag => f.write_str("not a COSE_Sign1 (tag 18)"),
            Malformed::NotSign1 => f.write_str("not a COSE_Sign1 structure"),
            Malformed::ProtectedHeader => f.write_str("protected header is not {alg, kid}"),
            Malformed::UnprotectedHeader => f.write_str("unprotected header is not empty"),
            Malformed::DetachedPayload => f.write_str("payload is missing"),
            Malformed::Claim(name) => write!(f, "claim `{name}` is missing or invalid"),
        }
    }
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            KeyError::InvalidKid => "key id must be 1-64 characters of A-Z a-z 0-9 . _ -",
            KeyError::InvalidKey => "not a valid Ed25519 public key",
            KeyError::WeakKey => "Ed25519 public key has small order",
            KeyError::DuplicateKid => "a key with this id is already trusted",
        })
    }
}

impl std::error::Error for VerifyError {}
impl std::error::Error for Malformed {}
impl std::error::Error for KeyError {}

impl From<Malformed> for VerifyError {
    fn from(m: Malformed) -> Self {
        VerifyError::Malformed(m)
    }
}
