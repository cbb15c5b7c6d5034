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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use verifier::{KeyRing, ProjectLimit};

    use super::*;
    use crate::domain::input;
    use crate::domain::license::{Activation, License, LicenseStatus};

    fn grant_for(organization: &str, email: &str) -> Grant {
        Grant {
            license: License {
                id: "0b6a4d55-2f1e-4c36-9a77-1d2c3b4a5e6f".into(),
                key_hint: "JKMN".into(),
                organization_id: Some("org".into()),
                organization_name: Some(organization.into()),
                email: email.into(),
                tier: "pilot-professional".into(),
                status: LicenseStatus::Active,
                expires_at: 4_000_000_000,
                max_activations: u32::MAX,
                max_projects: ProjectLimit::Limited(u32::MAX),
                ai_requests: u32::MAX,
                created_at: 1_700_000_000,
                revoked_reason: None,
            },
            activation: Activation {
                id: "a".into(),
                license_id: "l".into(),
                hardware_id: "ab".repeat(32),
                machine_name: None,
                active: true,
                activated_at: 1_700_000_000,
                last_validated_at: 1_700_000_000,
                deactivated_at: None,
                offline_until: None,
            },
            devices_used: u32::MAX,
            already_active: false,
            recent_transfers: Vec::new(),
        }
    }

    fn signer() -> TokenSigner {
        let key = verifier::ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        TokenSigner::new("prop-test-key", key).unwrap()
    }

    /// The longest email the input rules accept (254 bytes).
    fn longest_email() -> String {
        format!(
            "{}@example.com",
            "a".repeat(input::MAX_EMAIL - "@example.com".len())
        )
    }

    /// Names up to twice the limit, of one- to four-byte characters.
    fn names() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z ]{0,300}",
            "[é ]{0,300}",
            "[a-zé€😀 ]{0,300}",
            any::<String>(),
            (0usize..300, prop::sample::select(vec!["x", "é", "€", "😀"]))
                .prop_map(|(n, c)| c.repeat(n)),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Whatever organization name the input rules accept can be
        /// signed into a token that verifies, also with the longest
        /// email and the largest numbers.
        #[test]
        fn every_accepted_organization_name_can_be_signed(name in names()) {
            if let Ok(accepted) = input::name("company_name", &name) {
                let email = input::email("email", &longest_email()).unwrap();
                let grant = grant_for(&accepted, &email);
                let signer = signer();
                let issued = issue_until(&signer, &grant, 1_700_000_000, 1_700_100_000, 1_700_050_000)
                    .map_err(|e| TestCaseError::fail(format!("{} bytes: {e}", accepted.len())))?;
                let mut ring = KeyRing::new();
                ring.insert(signer.kid(), &signer.public_key()).unwrap();
                let claims = verifier::verify(
                    &issued.bytes,
                    &ring,
                    1_700_000_100,
                    &issued.claims.hardware_id,
                ).map_err(|e| TestCaseError::fail(e.to_string()))?;
                prop_assert_eq!(claims.organization.as_str(), accepted.as_str());
            }
        }
    }

    #[test]
    fn the_longest_accepted_names_sign_and_one_byte_more_is_refused() {
        let email = longest_email();
        for c in ["x", "é", "€", "😀"] {
            let longest = c.repeat(input::MAX_NAME / c.len());
            let accepted = input::name("company_name", &longest).unwrap();
            issue_until(&signer(), &grant_for(&accepted, &email), 1, 2, 2).unwrap();
            let over = c.repeat(input::MAX_NAME / c.len() + 1);
            assert!(input::name("company_name", &over).is_err(), "{c}");
        }
    }
}
