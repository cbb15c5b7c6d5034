//! Offline verification of CODITECT license tokens.
//!
//! A license token is a COSE_Sign1 (RFC 9052, CBOR tag 18) signed with Ed25519
//! over a CWT claims set (RFC 8392). The profile, the claim keys and their order
//! are fixed by `schemas/license-token.cddl`; this crate is the one place that
//! decides whether a token is good.
//!
//! The crate is pure: bytes, trusted keys, the current time and this machine's
//! hardware id go in; verified claims or a precise [`VerifyError`] come out. It
//! reads no clock, no file and no network. Callers pass `now` as Unix seconds.
//!
//! ```
//! use verifier::{HardwareId, KeyRing, VerifyError, verify};
//!
//! let ring = KeyRing::new();
//! let hw = HardwareId::from_machine_id("4c4c4544-0042-3510-8052-b4c04f4e4b31");
//! // Not a token at all: rejected, never a panic.
//! assert!(matches!(verify(b"junk", &ring, 1_700_000_000, &hw), Err(VerifyError::Malformed(_))));
//! ```
//!
//! With the `sign` feature the crate also encodes and signs tokens
//! ([`TokenSigner`]), so the issuer signs with the same definition that
//! verifies.

#![forbid(unsafe_code)]
#![deny(missing_docs)]
#![deny(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::unreachable
)]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

mod claims;
mod clock;
mod cose;
mod error;
mod hardware;
mod keyring;
mod renewal;
#[cfg(feature = "sign")]
mod sign;
mod token;

pub use claims::{Entitlements, LicenseClaims, MAX_TEXT_LEN, ProjectLimit};
pub use clock::{DEFAULT_CLOCK_TOLERANCE, check_clock, next_high_water};
pub use cose::{verify_cose_sign1, verify_ed25519};
pub use error::{KeyError, Malformed, VerifyError};
pub use hardware::{HardwareId, HardwareIdError};
pub use keyring::{KeyRing, TrustedKey, is_valid_kid};
pub use renewal::{RenewalState, renewal_state};
#[cfg(feature = "sign")]
pub use sign::{SignError, TokenSigner};
pub use token::{EXTERNAL_AAD, MAX_TOKEN_LEN, TIME_SKEW, VerifiedToken, authenticate, verify};

/// Re-exported so callers can hold keys without depending on ed25519-dalek
/// directly.
pub use ed25519_dalek;
