//! Accounts: organizations and their users, sign-in lockout rules, and the
//! access tokens (HS256 JWTs) that name a login session.

use serde::{Deserialize, Serialize};

use super::StorageError;

/// Why an account operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("pilot signup is closed")]
    SignupClosed,
    #[error("the pilot is full")]
    SignupFull,
    #[error("email or password is wrong")]
    InvalidCredentials,
    #[error("not signed in, or the session has ended")]
    Unauthorized,
    #[error("too many failed sign-ins")]
    Locked { until: i64 },
    #[error("internal: {0}")]
    Internal(String),
    #[error(transparent)]
    Storage(#[from] StorageError),
}

/// Failed sign-ins that lock an email.
pub const LOCKOUT_THRESHOLD: u32 = 5;
/// How long a lock lasts, and how long failures are remembered.
pub const LOCKOUT_SECONDS: i64 = 15 * 60;

/// A user with their organization.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: String,
    pub email: String,
    pub organization_id: String,
    pub organization_name: String,
    pub role: String,
}

/// The claims of an access token (HS256 JWT).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// Session id.
    pub sid: String,
    pub iat: i64,
    pub exp: i64,
}

/// Signs an access token.
pub fn encode_jwt(secret: &[u8], claims: &AccessClaims) -> Result<String, AccountError> {
    super::hs256::install();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .map_err(|e| AccountError::Internal(e.to_string()))
}

/// Checks an access token's signature and expiry at `now` (the library's own
/// clock is not used).
pub fn decode_jwt(secret: &[u8], token: &str, now: i64) -> Result<AccessClaims, AccountError> {
    super::hs256::install();
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    validation.validate_exp = false;
    validation.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<AccessClaims>(
        token,
        &jsonwebtoken::DecodingKey::from_secret(secret),
        &validation,
    )
    .map_err(|_| AccountError::Unauthorized)?;
    if data.claims.exp <= now {
        return Err(AccountError::Unauthorized);
    }
    Ok(data.claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_796_256_000;

    #[test]
    fn jwts_check_signature_and_expiry_against_the_given_time() {
        let secret = b"0123456789abcdef0123456789abcdef";
        let claims = AccessClaims {
            sub: "u".into(),
            sid: "s".into(),
            iat: NOW,
            exp: NOW + 60,
        };
        let t = encode_jwt(secret, &claims).unwrap();
        assert_eq!(decode_jwt(secret, &t, NOW).unwrap(), claims);
        assert!(decode_jwt(secret, &t, NOW + 60).is_err());
        assert!(decode_jwt(b"another secret another secret!!", &t, NOW).is_err());
        assert!(decode_jwt(secret, "not.a.jwt", NOW).is_err());
        let none_alg = format!("eyJhbGciOiJub25lIn0.{}.", t.split('.').nth(1).unwrap());
        assert!(decode_jwt(secret, &none_alg, NOW).is_err());
    }
}
