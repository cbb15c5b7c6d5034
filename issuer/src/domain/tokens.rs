//! Turning a grant (license + activated machine) into a signed license token.

use std::time::Duration;

use verifier::{HardwareId, LicenseClaims, TokenSigner};

use super::license::Grant;

/// The issuer claim of every token.
pub const ISSUER: &str = "coditect";

/// How long tokens live and when they should be renewed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenPolicy {
    pub lifetime: Duration,
    pub renew_after: Duration,
}

/// Why no token could be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("stored hardware id is not 64 hex characters")]
    BadHardwareId,
    #[error("the clock is before 1970")]
    Clock,
    #[error("cannot sign: {0}")]
    Sign(#[from] verifier::SignError),
    #[error("random generator failed: {0}")]
    Random(String),
}

/// A signed token with the claims it carries.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    pub bytes: Vec<u8>,
    pub claims: LicenseClaims,
}

/// Signs a token for `grant` at `now`. It expires after the policy's
/// lifetime but never after the license; renewal is due after the policy's
/// renew-after, or at once when the license ends sooner.
pub fn issue(
    signer: &TokenSigner,
    grant: &Grant,
    policy: TokenPolicy,
    now: i64,
) -> Result<IssuedToken, IssueError> {
    let now = u64::try_from(now).map_err(|_| IssueError::Clock)?;
    let license_end = u64::try_from(grant.license.expires_at).unwrap_or(0);
    let expires_at = now
        .saturating_add(policy.lifetime.as_secs())
        .min(license_end);
    let renew_after = now
        .saturating_add(policy.renew_after.as_secs())
        .min(expires_at);
    issue_until(signer, grant, now, expires_at, renew_after)
}

/// Signs a token with explicit validity (offline activation uses a long one).
pub fn issue_until(
    signer: &TokenSigner,
    grant: &Grant,
    now: u64,
    expires_at: u64,
    renew_after: u64,
) -> Result<IssuedToken, IssueError> {
    let mut token_id = [0u8; 16];
    getrandom::fill(&mut token_id).map_err(|e| IssueError::Random(e.to_string()))?;
    let license = &grant.license;
    let claims = LicenseClaims {
        issuer: ISSUER.into(),
        license_id: license.id.clone(),
        expires_at,
        not_before: now,
        issued_at: now,
        token_id,
        tier: license.tier.clone(),
        entitlements: license.entitlements(),
        hardware_id: HardwareId::from_hex(&grant.activation.hardware_id)
            .map_err(|_| IssueError::BadHardwareId)?,
        license_expires_at: u64::try_from(license.expires_at).unwrap_or(0),
        renew_after,
        organization: license.organization_name.clone().unwrap_or_default(),
        email: license.email.clone(),
        devices_used: grant.devices_used,
    };
    let bytes = signer.sign(&claims)?;
    Ok(IssuedToken { bytes, claims })
}
