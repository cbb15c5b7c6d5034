//! Where a token stands in its lifetime: fresh until renew-after,
//! then due for renewal until it expires.

use crate::claims::LicenseClaims;

/// The renewal state of a token at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewalState {
    /// Good offline; no need to contact the issuer before `renew_after`.
    Fresh {
        /// When renewal becomes due.
        renew_after: u64,
    },
    /// Still good, but the CLI should renew now (failure to reach the issuer
    /// is not an error yet).
    RenewalDue {
        /// When the token stops being accepted.
        expires_at: u64,
    },
    /// No longer accepted offline: the CLI must go online.
    Expired {
        /// When it stopped being accepted.
        since: u64,
    },
}

/// The renewal state of `claims` at `now`. The end is the earlier of the
/// token's `exp` and the license's own expiry.
pub fn renewal_state(claims: &LicenseClaims, now: u64) -> RenewalState {
    let end = claims.expires_at.min(claims.license_expires_at);
    if now >= end {
        RenewalState::Expired { since: end }
    } else if now >= claims.renew_after {
        RenewalState::RenewalDue { expires_at: end }
    } else {
        RenewalState::Fresh {
            renew_after: claims.renew_after,
        }
    }
}
